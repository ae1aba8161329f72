"""The stats stage as a function: read the scores, write every statistics table of the layout.

``stats_run(params)`` writes ``stats/{paired, gains, mixed_model, gee_correctness, power, annotators,
paired_calibrated}.parquet``
(CSV beside each), each with ``write_result``: its provenance holds the params sections it
depends on, the scores file and its hash. It returns the tables by name, for the notebook to show.

The paired tests, the gains table (``ambiemo.stats.gains``: the intervals figure 3 draws), the
power table and the regression models compare strategies with a model's baseline and leave the
reference rows (``model == "reference"``) out. ``paired_calibrated`` repeats the paired test on JS
after each answer is recalibrated (``ambiemo.scoring.calibration``: is a gain only a flatter answer?);
``annotators`` redraws the raters of each corpus (``ambiemo.stats.annotators``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from ambiemo.core.blas import one_blas_thread
from ambiemo.core.layout import Layout
from ambiemo.core.workers import call, ordered_map, worker_count
from ambiemo.scoring.gains import without_references
from ambiemo.scoring.results import params_subset, write_result
from ambiemo.scoring.run import empty_cells_note, unanswered_table
from ambiemo.scoring.schema import apply_to_chunk, chunk_keys, chunk_rows, rows_at_one_budget, scores_meta
from ambiemo.stats.bootstrap import stats_params
from ambiemo.stats.gains import gain_table


def stats_params_with_power(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``stats`` with the schema's defaults, the power keys included (``ambiemo.core.params.Stats``)."""
    return stats_params(params)


def stats_chunk(
    scores: pd.DataFrame, params: Mapping[str, Any], calibration_folds: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """The paired, calibrated paired, gains and power tables of one chunk of the scores (a dataset ×
    model, or the whole table), before Holm's correction. ``calibration_folds``: the aggregate
    stage's fits of these scores (``fitted_calibration``), applied instead of fitted again."""
    from ambiemo.scoring.calibration import calibrated_scores, calibration_table
    from ambiemo.stats.paired import paired_comparisons
    from ambiemo.stats.power import power_table

    st = stats_params_with_power(params)
    scores = scores.copy(deep=False)
    scores.attrs = {}  # pandas deep-copies attrs on every operation: per cell, that dominated
    models = without_references(scores)
    if models.empty:
        return {}
    method = "temperature+prior"  # the calibration the paired test on calibrated JS uses
    cal = calibration_table(models, params, ceiling={}, methods=[method], folds_table=calibration_folds)
    calibrated = calibrated_scores(models, cal.calibrated, method)
    return {
        "paired": paired_comparisons(models, params),
        "paired_calibrated": paired_comparisons(calibrated, params, metrics=["js"]),
        "gains": gain_table(models, params),
        "power": power_table(
            models,
            st["paired_metrics"],
            baseline=st["baseline"],
            gains=st["power_gains"],
            power=float(st["power"]),
            alpha=float(st["alpha"]),
        ),
    }


def stats_tables(chunks: Iterable[pd.DataFrame], params: Mapping[str, Any], models_frame: pd.DataFrame) -> dict:
    """Every table of the stats stage (module docstring): the paired, gains and power tables from
    the scores one dataset × model at a time (``chunks``), the regression models from
    ``models_frame`` (the columns they fit, every row)."""
    tables = combine_chunks([stats_chunk(c, params) for c in chunks], params)
    return {**tables, **regression_tables(models_frame, params)}


def combine_chunks(parts: list[dict], params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The chunks' tables (``stats_chunk``) stacked in the chunks' order, Holm's correction applied
    to the stacked rows (a family may span chunks)."""
    from ambiemo.stats.paired import holm_families

    def stacked(name: str) -> list[pd.DataFrame]:
        return [p[name] for p in parts if name in p]

    paired, calibrated = (
        pd.concat([p for p in stacked(k) if len(p)] or [pd.DataFrame()]) for k in ("paired", "paired_calibrated")
    )
    return {
        "paired": holm_families(paired.reset_index(drop=True), params),
        "gains": _stack(stacked("gains")),
        "power": _stack(stacked("power")),
        "paired_calibrated": holm_families(calibrated.reset_index(drop=True), params),
    }


def regression_tables(
    models_frame: pd.DataFrame, params: Mapping[str, Any], left_out: Mapping[str, Any] | None = None
) -> dict[str, pd.DataFrame]:
    """The interaction models on every row's regression columns; they leave the reference rows out
    themselves and say so in their note (with those a reader left out before, ``left_out``)."""
    from ambiemo.stats.regression import correctness_model, interaction_model

    return {
        "mixed_model": interaction_model(models_frame, params, left_out=left_out),
        "gee_correctness": correctness_model(models_frame, params, left_out=left_out),
    }


def _stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    full = [p for p in parts if len(p)]
    return pd.concat(full or parts[:1], ignore_index=True) if parts else pd.DataFrame()


TABLES = ("paired", "gains", "mixed_model", "gee_correctness", "power", "paired_calibrated", "annotators")
# The score columns the regression models read (``ambiemo.stats.regression.model_frame``).
REGRESSION_COLUMNS = ("dataset", "model", "strategy", "budget", "utt_id", "speaker", "params_b", "entropy_bits")


@one_blas_thread
def stats_run(params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The stats stage (module docstring): the scores one dataset × model at a time, and the
    regression models on the rows and columns they fit, in several processes where the scores are
    large (``ambiemo.core.workers``)."""
    layout = Layout.from_params(params)
    meta = scores_meta(layout.scores)
    note = empty_cells_note(unanswered_table(meta))
    if note:  # a cell the run expected and got nothing for: no comparison row, said here
        warnings.warn(f"stats: {note}", UserWarning, stacklevel=2)
    chunk = functools.partial(stats_chunk, params=params, calibration_folds=fitted_calibration(layout, params))
    sizes = chunk_rows(layout.scores)
    keys = list(sizes)
    # In several processes (ambiemo.core.workers) the regression models (the longest job, on every
    # row) and the annotator curves go first, so that the chunks run beside them: at the study's
    # size this order took 608 s where the smallest chunks first and the annotator curves last took
    # 783 s (docs/scale.md).
    jobs = [
        functools.partial(_regression, layout.scores, params),
        functools.partial(_annotators, layout, params),
        *(functools.partial(apply_to_chunk, chunk, layout.scores, None, key) for key in keys),
    ]
    regression, annotators, *parts = ordered_map(call, jobs, worker_count(sum(sizes.values()), len(jobs)))
    tables = {**combine_chunks(parts, params), **regression, "annotators": annotators}
    tables = {k: tables[k] for k in TABLES}
    for name, table in tables.items():
        write_result(table, layout.stats(name), name, params_subset(params, "stats", "scoring"), [layout.scores])
    return tables


def _regression(path: Any, params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """``regression_tables`` of the scores at ``path``, reading only the rows and columns they fit
    (``ambiemo.stats.regression.regression_rows``)."""
    from ambiemo.stats.regression import regression_rows

    st = stats_params(params)
    columns = list(dict.fromkeys([*REGRESSION_COLUMNS, st["mixed_model_metric"], "correct"]))
    frame, left_out = regression_rows(path, columns, params)
    return regression_tables(frame, params, left_out)


def fitted_calibration(layout: Layout, params: Mapping[str, Any]) -> pd.DataFrame | None:
    """The aggregate stage's ``calibration_folds`` where they were fitted on these very scores (the
    SHA-256 it recorded) with these settings (``seed`` and ``scoring``), else None (and the stats
    stage fits them itself, to the same numbers: the fits are a function of both alone)."""
    import json

    from ambiemo.scoring.results import file_hashes, read_result

    path = layout.summary("calibration_folds")
    if not path.exists():
        return None
    table, meta = read_result(path, "calibration_folds")
    same_scores = (
        meta.get("input_hashes", {}).get(str(layout.scores)) == file_hashes([layout.scores])[str(layout.scores)]
    )
    recorded = meta.get("provenance", {}).get("params", {})
    wanted = json.loads(json.dumps(params_subset(params, "scoring"), default=str))
    return table if same_scores and recorded == wanted else None


def _annotators(layout: Layout, params: Mapping[str, Any]) -> pd.DataFrame:
    """The annotator-count table, one corpus of the scores at a time (``annotators_table``), each
    read as the columns it uses of the rows it compares (every model's strategies at their largest
    budget: ``rows_at_one_budget``), not every column of every row of the corpus."""
    from ambiemo.stats.annotators import annotators_table

    labels = scores_meta(layout.scores)["label_set"]["labels"]
    columns = ["dataset", "model", "strategy", "budget", "utt_id", *(f"p_{x}" for x in labels)]
    datasets = sorted(dict.fromkeys(d for d, _ in chunk_keys(layout.scores)))
    parts = [
        annotators_table(rows_at_one_budget(layout.scores, columns, "max", dataset=d)[0], params, layout, [d])
        for d in datasets
    ]
    return _stack(parts)
