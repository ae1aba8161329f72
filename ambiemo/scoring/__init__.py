"""Scores: predictions joined with the ground truth, one row per utterance × cell.

``score_predictions`` turns prediction tables (``ambiemo.inference.predictions``) and a manifest
(``ambiemo.data.manifest``) into the **scores** table, long format, one row per
dataset × model × strategy × budget × utterance:

    dataset, model, strategy, budget, utt_id      the keys
    speaker, n_raters, entropy_bits, ambiguity,   from the manifest; ``ambiguity_rank`` orders
      ambiguity_rank, majority, majority_tie        the bins (0 = least ambiguous)
    params_b, log10_params                        model capacity (params ``models.<key>.params_b``)
    parsed_ok, n_candidates, model_calls,         from the predictions (compute per utterance)
      verifier_calls, prompt_tokens, gen_tokens, wall_s
    pred_label                                    the predicted label; "" for a parse failure
    majority_used                                 the true label under the tie policy; "" if excluded
    js, bc, kl, tv, brier, r2_utt                 distributional metrics (``ambiemo.scoring.metrics``)
    pred_entropy_bits, confidence                 of the model's distribution / predicted label
    correct                                       1/0 against ``majority_used``; NaN if excluded
    plausible                                     1/0: the predicted label got at least one vote
    oracle_js, oracle_bc, oracle_correct,         the best stored candidate by JS (see below)
      oracle_n_parsed, pass_at_n
    true_<L>, p_<L>                               human and model distributions, per label L

A parse failure (``parsed_ok`` False) keeps the fallback distribution the predictions carry
(params ``parsing.on_failure``) for the distributional metrics, but has no predicted label, so
it counts as wrong for the hard-label ones; ``summarise`` reports the failure rate beside every
number.

**Oracle readout.** Each prediction row's candidates, with their parsed distributions, are in
the candidates table beside the predictions (``ambiemo.inference.candidates``; ``score_predictions`` reads
it through ``Predictions.candidates`` or takes it as ``candidates=``). ``oracle_js`` is the JS
distance of the candidate closest to the human distribution, a ceiling no selection rule that
cannot see the labels reaches; ``oracle_bc`` and ``oracle_correct`` describe that same candidate,
``pass_at_n`` says whether any candidate's top label is the majority label, and
``oracle_n_parsed`` how many candidates parsed.

``summarise`` reduces scores to one row per dataset × model × strategy × budget (× ambiguity
bin, with ``ambiguity == "all"`` for the whole set): every metric of ``ambiemo.scoring.metrics.METRICS``,
the parse-failure rate, the counts behind the hard-label metrics, the oracle and the compute
spent per utterance.


``score_run(params)`` scores exactly the active run's cells with the reference predictors and
human ceilings beside them (``ambiemo.scoring.run``); summaries and statistics are written with
``write_result`` (parquet with provenance, CSV beside it); ``ambiemo.scoring.stages`` holds the
aggregate stage (``aggregate_run``; not imported here, since it needs ``ambiemo.stats``), and
``ambiemo.stats.stage`` the stats stage.

Modules: ``schema``, ``scores``, ``summaries``, ``gains`` (the gain over the baseline), ``run``,
``results`` (and ``stages``, the aggregate stage). Their functions, and the schema names callers outside
the package need, are importable from here; the table's column lists stay in ``schema``."""

from __future__ import annotations

from ambiemo.scoring.gains import gain_over_baseline
from ambiemo.scoring.results import params_subset, read_result, write_result
from ambiemo.scoring.run import ScoreRun, run_cells, score_run, unanswered_table
from ambiemo.scoring.schema import (
    KEYS,
    ScoringError,
    labels_of,
    levels,
    params_of,
    read_predictions,
    read_scores,
    scoring_params,
    write_scores,
)
from ambiemo.scoring.scores import candidate_distributions, score_predictions
from ambiemo.scoring.summaries import (
    at_largest_budget,
    compute_matched,
    compute_table,
    conventions,
    group_metrics,
    metrics_json,
    overall,
    reliability,
    summarise,
)

__all__ = [
    "KEYS",
    "ScoreRun",
    "ScoringError",
    "at_largest_budget",
    "candidate_distributions",
    "compute_matched",
    "compute_table",
    "conventions",
    "gain_over_baseline",
    "group_metrics",
    "labels_of",
    "levels",
    "metrics_json",
    "overall",
    "params_of",
    "params_subset",
    "read_predictions",
    "read_result",
    "read_scores",
    "reliability",
    "run_cells",
    "score_predictions",
    "score_run",
    "scoring_params",
    "summarise",
    "unanswered_table",
    "write_result",
    "write_scores",
]
