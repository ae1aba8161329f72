"""The aggregate stage as a function: read the scores, write every summary table of the layout.

``aggregate_run(params)`` writes ``summary/{summary, by_ambiguity, ci, compute, compute_matched,
conventions, calibration, calibration_folds, unanswered}.parquet`` (CSV beside each) and
``summary/metrics.json``. Each table is written with ``write_result``: its provenance holds the
params sections it depends on, the scores file and its hash. It returns the tables by name, for the
notebook to show. Reference rows
(``model == "reference"``) are in every summary, CI and by-bin table.

The calibration yardstick (``ambiemo.scoring.calibration``) is fitted per cell, so it is reduced
chunk by chunk like the rest; the human ceiling it measures the gap to comes from the reference rows.
``calibration_folds`` keeps each fold's fit, which the stats stage applies instead of fitting again.
The stats stage lives in ``ambiemo.stats.stage``.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from ambiemo.core.blas import one_blas_thread
from ambiemo.core.layout import SUMMARY_TABLES, Layout
from ambiemo.scoring.references import CEILING_METRICS
from ambiemo.scoring.results import params_subset, write_result
from ambiemo.scoring.run import empty_cells_note, unanswered_table
from ambiemo.scoring.schema import ALL, map_score_chunks, scores_meta, scoring_params
from ambiemo.scoring.summaries import (
    compute_matched,
    compute_table,
    conventions,
    is_ceiling,
    metrics_json,
    summarise,
)


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


CHUNK_TABLES = ("summary", "by_ambiguity", "ci", "compute", "conventions", "calibration", "calibration_folds")


def aggregate_chunk(scores: pd.DataFrame, params: Mapping[str, Any], ceiling: dict | None = None) -> dict:
    """The per-cell tables (``CHUNK_TABLES``) of one chunk of the scores (a dataset × model, or the
    whole table). ``ceiling``: the human ceilings (``calibration.ceilings`` of the reference rows),
    where the chunk does not carry them."""
    from ambiemo.scoring.calibration import calibration_table

    scores = scores.copy(deep=False)
    scores.attrs = {}  # pandas deep-copies attrs on every operation: per cell, that dominated
    by_bin = summarise(scores, params=params)
    calibration = calibration_table(scores, params, ceiling)
    return {
        "summary": by_bin[by_bin["ambiguity"] == ALL].reset_index(drop=True),  # the "all" rows
        "by_ambiguity": by_bin,
        "ci": ci_table(scores, params),
        "compute": compute_table(scores, params=params),
        "conventions": conventions(scores),
        "calibration": calibration.table,
        "calibration_folds": calibration.folds,
    }


def aggregate_tables(
    chunks: Iterable[pd.DataFrame], params: Mapping[str, Any], ceiling: dict | None = None
) -> dict[str, pd.DataFrame]:
    """The summary tables of the scores given one dataset × model at a time (or whole): every table
    is a reduction per cell, so the chunks' tables stacked are the whole table's."""
    return combine_chunks([aggregate_chunk(c, params, ceiling) for c in chunks], params)


def combine_chunks(parts: list[dict], params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The chunks' tables (``aggregate_chunk``) stacked in the chunks' order, and the tables made
    from the stacked ones."""
    tables = {k: _stack([p[k] for p in parts]) for k in CHUNK_TABLES}
    tables["ci"] = (
        tables["ci"]
        .sort_values(["dataset", "model", "strategy", "budget", "ambiguity_rank"], kind="stable")
        .reset_index(drop=True)
    )
    sp = scoring_params(params)
    tables["compute_matched"] = compute_matched(tables["compute"], sp["compute_multiples"], _baseline(params))
    return {k: tables[k] for k in SUMMARY_TABLES if k in tables}  # the layout's order


@one_blas_thread
def aggregate_run(params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The aggregate stage (module docstring), one dataset × model of the scores at a time, in
    several processes where the scores are large (``ambiemo.core.workers``)."""
    layout = Layout.from_params(params)
    meta = scores_meta(layout.scores)
    chunk = functools.partial(aggregate_chunk, params=params, ceiling=reference_ceilings(layout.scores))
    tables = combine_chunks(map_score_chunks(chunk, layout.scores), params)
    tables["unanswered"] = unanswered_table(meta)
    note = empty_cells_note(tables["unanswered"])
    if note:  # a cell the run expected and got nothing for: no summary row, said here and in unanswered
        warnings.warn(f"aggregate: {note}", UserWarning, stacklevel=2)
    inputs = [layout.scores]
    for name, table in tables.items():
        sections = ("scoring", "models", "strategies") if name.startswith("compute") else ("scoring",)
        extra = {"ceilings": meta.get("ceilings", {})} if name in ("summary", "by_ambiguity", "ci") else {}
        write_result(table, layout.summary(name), name, params_subset(params, *sections), inputs, **extra)
    headline = metrics_json(tables["summary"], baseline=_baseline(params))
    layout.metrics_json.write_text(json.dumps(headline, indent=2, sort_keys=True) + "\n")
    return tables


def reference_ceilings(path) -> dict:  # noqa: ANN001 (a path or file the parquet reader takes)
    """The human ceilings (``calibration.ceilings``) from the scores' reference rows alone."""
    import pyarrow.parquet as pq

    from ambiemo.scoring.calibration import ceilings

    columns = [c for c in ("dataset", "model", "strategy", "ambiguity", "js") if c in pq.read_schema(path).names]
    return ceilings(pq.read_table(path, columns=columns, filters=[("model", "==", "reference")]).to_pandas())


def _baseline(params: Mapping[str, Any]) -> str:
    from ambiemo.stats import stats_params

    return stats_params(params)["baseline"]


def _stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The chunks' tables one under the other (empty ones left out, so that they do not decide a dtype)."""
    full = [p for p in parts if len(p)]
    return pd.concat(full or parts[:1], ignore_index=True) if parts else pd.DataFrame()
