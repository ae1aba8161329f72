"""Uncertainty and inference on per-utterance scores (``ambiemo.scoring``).

Three questions, three tools:

- **How sure is each number?** ``bootstrap_ci``: percentile intervals from a bootstrap that
  resamples *speakers* (a speaker's utterances move together, since they are not independent);
  utterances whose speaker is unknown are resampled one by one, and the table says which unit
  was used (``cluster_unit``). Every metric is recomputed on each resample, including the
  set-level ones (R², ECE, F1, UAR, entropy Spearman), through weighted forms that equal the
  metric on the resampled rows exactly (tests check this against ``ambiemo.scoring.metrics``).
- **Does a strategy beat the baseline?** ``paired_comparisons``: per dataset × model ×
  strategy × budget, the per-utterance differences from the baseline (same utterances), with
  a sign-flip permutation test that flips whole speakers (``p_permutation``, which decides
  ``significant``; the unclustered test and the Wilcoxon signed-rank test beside it for
  comparison), Holm's correction within a family (params ``stats.holm_family``), the
  matched-pairs rank-biserial correlation, Cohen's d_z and the mean difference with a
  speaker-clustered bootstrap interval. Reference rows (``model == "reference"``) are left out.
- **How do capacity, test-time scaling and ambiguity interact?** ``interaction_model``: a linear
  mixed model (statsmodels ``MixedLM``) of per-utterance JS distance on log10 capacity ×
  strategy × vote entropy, with random intercepts for utterance (and speaker where it is
  identifiable); ``correctness_model``: a GEE (binomial, exchangeable within utterance) for
  correctness against the majority label with the same fixed effects. Both carry family fixed
  effects with one within-family capacity slope where some family has two capacities (params
  ``stats.family_term``; ``regression``'s docstring says why and when it falls back). Capacity is
  centred within families (or at its mean without the family term) and entropy at its mean, so
  main effects are read at the average capacity and ambiguity; the strategy reference level is
  the baseline.

Every function takes the scores and the params mapping first (``f(scores, params, ...)``),
reads its defaults from params (``scoring`` for resamples and CI level, ``stats`` for the rest,
``seed``), and returns a tidy table. Cases where a model cannot be estimated as asked (one
model, one strategy, no ambiguity variation, too few rows) drop the terms that are not
identifiable, or return a one-row table, and say so in a ``note`` column instead of raising.


Modules: ``bootstrap``, ``paired``, ``regression``; their public names are exported here."""

from __future__ import annotations

from ambiemo.scoring.gains import HIGHER_IS_BETTER
from ambiemo.stats.bootstrap import (
    MEAN_COLUMNS,
    SET_METRICS,
    bootstrap_ci,
    cluster_counts,
    clusters,
    resample_weights,
    stats_params,
    weighted_metrics,
)
from ambiemo.stats.families import families
from ambiemo.stats.paired import PAIRED_COLUMNS, holm, paired_comparisons, rank_biserial
from ambiemo.stats.regression import TABLE_COLUMNS, correctness_model, interaction_model, model_frame

__all__ = [
    "HIGHER_IS_BETTER",
    "MEAN_COLUMNS",
    "PAIRED_COLUMNS",
    "SET_METRICS",
    "TABLE_COLUMNS",
    "bootstrap_ci",
    "cluster_counts",
    "clusters",
    "correctness_model",
    "families",
    "holm",
    "interaction_model",
    "model_frame",
    "paired_comparisons",
    "rank_biserial",
    "resample_weights",
    "stats_params",
    "weighted_metrics",
]
