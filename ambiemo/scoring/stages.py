"""The aggregate and stats stages as functions: read the scores, write every table of the layout.

``aggregate_run(params)`` writes ``summary/{summary, by_ambiguity, ci, compute, compute_matched,
conventions, unanswered}.parquet`` (CSV beside each) and ``summary/metrics.json``;
``stats_run(params)`` writes ``stats/{paired, mixed_model, gee_correctness, power}.parquet``.
Each table is written with ``write_result``: its provenance holds the params sections it depends
on, the scores file and its hash. Both return the tables by name, for the notebooks to show.

Reference rows (``model == "reference"``) are in every summary, CI and by-bin table; the paired
tests, the power table and the regression models compare strategies with a model's baseline and
leave them out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ambiemo.core.layout import Layout
from ambiemo.scoring.references import CEILING_METRICS
from ambiemo.scoring.results import params_subset, write_result
from ambiemo.scoring.run import unanswered_table
from ambiemo.scoring.schema import read_scores, scoring_params
from ambiemo.scoring.summaries import (
    compute_matched,
    compute_table,
    conventions,
    is_ceiling,
    metrics_json,
    summarise,
)

# Defaults of the stats keys this module reads (params ``stats``), stated once.


def ci_table(scores: pd.DataFrame, params: Mapping[str, Any] | None) -> pd.DataFrame:
    """Speaker-clustered bootstrap CIs per cell × metric, whole set and per ambiguity bin; the
    human ceilings only for the metrics they define (js, bc, tv, brier)."""
    from ambiemo.stats import bootstrap_ci

    ceiling = is_ceiling(scores)
    parts = [bootstrap_ci(scores[~ceiling], params, per_bin=True)]
    if ceiling.any():
        parts.append(bootstrap_ci(scores[ceiling], params, per_bin=True, metrics=list(CEILING_METRICS)))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["dataset", "model", "strategy", "budget", "ambiguity_rank"], kind="stable").reset_index(
        drop=True
    )


def aggregate_run(params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The aggregate stage (module docstring)."""
    layout = Layout.from_params(params)
    scores, meta = read_scores(layout.scores)
    sp = scoring_params(params)
    tables = {
        "summary": summarise(scores, params=params, per_bin=False),
        "by_ambiguity": summarise(scores, params=params),
        "ci": ci_table(scores, params),
        "compute": compute_table(scores, params=params),
    }
    tables["compute_matched"] = compute_matched(tables["compute"], sp["compute_multiples"], _baseline(params))
    tables["conventions"] = conventions(scores)
    tables["unanswered"] = unanswered_table(meta)
    inputs = [layout.scores]
    for name, table in tables.items():
        sections = ("scoring", "models", "strategies") if name.startswith("compute") else ("scoring",)
        extra = {"ceilings": meta.get("ceilings", {})} if name in ("summary", "by_ambiguity", "ci") else {}
        write_result(table, layout.summary(name), name, params_subset(params, *sections), inputs, **extra)
    headline = metrics_json(tables["summary"], baseline=_baseline(params))
    layout.metrics_json.write_text(json.dumps(headline, indent=2, sort_keys=True) + "\n")
    return tables


def stats_params_with_power(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``stats`` over the defaults, the power keys included."""
    from ambiemo.stats import stats_params

    return stats_params(params)


def stats_run(params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The stats stage (module docstring)."""
    from ambiemo.stats import correctness_model, interaction_model, paired_comparisons
    from ambiemo.stats.permutation import without_references
    from ambiemo.stats.power import power_table

    layout = Layout.from_params(params)
    scores, _ = read_scores(layout.scores)
    st = stats_params_with_power(params)
    models = without_references(scores)
    tables = {
        "paired": paired_comparisons(models, params),
        # the regression models leave the reference rows out themselves and say so in their note
        "mixed_model": interaction_model(scores, params),
        "gee_correctness": correctness_model(scores, params),
        "power": power_table(
            models,
            st["paired_metrics"],
            baseline=st["baseline"],
            gains=st["power_gains"],
            power=float(st["power"]),
            alpha=float(st["alpha"]),
        ),
    }
    for name, table in tables.items():
        write_result(table, layout.stats(name), name, params_subset(params, "stats", "scoring"), [layout.scores])
    return tables


def _baseline(params: Mapping[str, Any]) -> str:
    from ambiemo.stats import stats_params

    return stats_params(params)["baseline"]
