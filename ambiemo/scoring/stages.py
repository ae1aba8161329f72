"""The aggregate stage as a function: read the scores, write every summary table of the layout.

``aggregate_run(params)`` writes ``summary/{summary, by_ambiguity, ci, compute, compute_matched,
conventions, unanswered}.parquet`` (CSV beside each) and ``summary/metrics.json``. Each table is
written with ``write_result``: its provenance holds the params sections it depends on, the scores
file and its hash. It returns the tables by name, for the notebook to show. Reference rows
(``model == "reference"``) are in every summary, CI and by-bin table.

The stats stage lives in ``ambiemo.stats.stage`` (``stats_run``); its names are offered here too,
for code written before it moved.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ambiemo.core.layout import Layout
from ambiemo.scoring.references import CEILING_METRICS
from ambiemo.scoring.results import params_subset, write_result
from ambiemo.scoring.run import empty_cells_note, unanswered_table
from ambiemo.scoring.schema import read_scores, scoring_params
from ambiemo.scoring.summaries import (
    compute_matched,
    compute_table,
    conventions,
    is_ceiling,
    metrics_json,
    summarise,
)
from ambiemo.stats.stage import POWER_DEFAULTS, stats_params_with_power, stats_run  # noqa: F401  (moved)


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
    note = empty_cells_note(tables["unanswered"])
    if note:  # a cell the run expected and got nothing for: no summary row, said here and in unanswered
        warnings.warn(f"aggregate: {note}", UserWarning, stacklevel=2)
    inputs = [layout.scores]
    for name, table in tables.items():
        sections = ("scoring", "models", "strategies") if name.startswith("compute") else ("scoring",)
        extra = {"ceilings": meta.get("ceilings", {})} if name in ("summary", "by_ambiguity", "ci") else {}
        write_result(table, layout.summary(name), name, params_subset(params, *sections), inputs, **extra)
    layout.metrics_json.write_text(json.dumps(metrics_json(tables["summary"]), indent=2, sort_keys=True) + "\n")
    return tables


def _baseline(params: Mapping[str, Any]) -> str:
    from ambiemo.stats import stats_params

    return stats_params(params)["baseline"]
