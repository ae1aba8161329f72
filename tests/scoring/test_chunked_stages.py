"""The aggregate and stats stages read the scores one dataset × model at a time: their tables must
be those of the whole table, number for number, whatever the parquet's row groups."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import synthetic as S  # noqa: E402

from ambiemo.scoring.schema import read_scores, score_chunks, write_scores  # noqa: E402
from ambiemo.scoring.scores import score_predictions  # noqa: E402
from ambiemo.scoring.stages import aggregate_tables  # noqa: E402
from ambiemo.stats.stage import stats_tables  # noqa: E402

PARAMS = copy.deepcopy(S.PARAMS)
PARAMS["seed"] = 5
PARAMS["stats"]["holm_family"] = ["dataset"]  # a Holm family spanning the models (and the chunks)
PARAMS["models"]["mid"] = {"params_b": 2.0}


@pytest.fixture(scope="module")
def scores_path(tmp_path_factory) -> Path:
    frames = []
    for d, dataset in enumerate(("alpha", "beta")):
        man = S.manifest_df(n=30, n_speakers=5, seed=d, dataset=dataset)
        cells = S.cells(man, strategies=("baseline", "bon"), models=("small", "mid", "large"), budgets={"bon": [2, 3]})
        frames.append(score_predictions(man, [c.drop(columns="candidate_records") for c in cells], PARAMS))
    scores = pd.concat(frames, ignore_index=True)
    scores.attrs = frames[0].attrs
    path = tmp_path_factory.mktemp("scores") / "scores.parquet"
    write_scores(scores, path, PARAMS)
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=37)  # many row groups, cut across the cells
    return path


def test_chunks_are_the_cells_of_the_table(scores_path):
    whole, _ = read_scores(scores_path)
    chunks = list(score_chunks(scores_path))
    assert [(c["dataset"].iloc[0], c["model"].iloc[0]) for c in chunks] == sorted(
        set(zip(whole["dataset"], whole["model"], strict=True))
    )
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)


def test_aggregate_by_chunks_equals_aggregate_of_the_whole(scores_path):
    whole, _ = read_scores(scores_path)
    by_chunk = aggregate_tables(score_chunks(scores_path), PARAMS)
    at_once = aggregate_tables([whole], PARAMS)
    for name, table in at_once.items():
        pd.testing.assert_frame_equal(by_chunk[name], table, obj=name)


def test_stats_by_chunks_equal_stats_of_the_whole(scores_path):
    whole, _ = read_scores(scores_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_chunk = stats_tables(score_chunks(scores_path), PARAMS, whole)
        at_once = stats_tables([whole], PARAMS, whole)
    assert by_chunk["paired"]["family"].str.startswith(("alpha/", "beta/")).all()
    assert by_chunk["paired"]["family"].nunique() == 2 * 3  # dataset × metric, every model in one family
    for name, table in at_once.items():
        pd.testing.assert_frame_equal(by_chunk[name], table, obj=name)


def _results_params(scores_path: Path, results: Path) -> dict:
    """PARAMS with the results folder at ``results``, holding a copy of the scores table there."""
    from ambiemo.core.layout import Layout

    params = {**copy.deepcopy(PARAMS), "paths": {"results": str(results)}}
    layout = Layout.from_params(params)
    layout.scores.parent.mkdir(parents=True, exist_ok=True)
    layout.scores.write_bytes(scores_path.read_bytes())
    return params


def test_stages_in_two_processes_write_what_one_process_writes(scores_path, tmp_path, monkeypatch):
    from ambiemo.scoring.stages import aggregate_run
    from ambiemo.stats.stage import stats_run

    runs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("AMBIEMO_WORKERS", workers)
        params = _results_params(scores_path, tmp_path / workers)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[workers] = {**aggregate_run(params), **stats_run(params)}
        runs[workers]["warnings"] = sorted({str(w.message) for w in caught})
    assert runs["1"]["warnings"] == runs["2"]["warnings"]  # a chunk's warnings come back from its process
    for name, table in runs["1"].items():
        if name != "warnings":
            pd.testing.assert_frame_equal(runs["2"][name], table, obj=name)


def test_workers_setting_is_checked(monkeypatch):
    from ambiemo.core.workers import PARALLEL_MIN_ROWS, worker_count

    monkeypatch.delenv("AMBIEMO_WORKERS", raising=False)
    assert worker_count(PARALLEL_MIN_ROWS - 1, 10) == 1  # small tables: one process
    assert 1 <= worker_count(PARALLEL_MIN_ROWS, 10) <= 10
    monkeypatch.setenv("AMBIEMO_WORKERS", "3")
    assert worker_count(10, 2) == 2  # never more than the chunks
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("AMBIEMO_WORKERS", bad)
        with pytest.raises(ValueError, match="AMBIEMO_WORKERS"):
            worker_count(10, 2)


def test_stats_apply_the_aggregate_stages_calibration_fits_only_to_the_scores_they_fit(scores_path, tmp_path):
    from ambiemo.core.layout import Layout
    from ambiemo.scoring.stages import aggregate_run
    from ambiemo.stats.stage import fitted_calibration, stats_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = stats_run(_results_params(scores_path, tmp_path / "alone"))  # no aggregate stage: fitted here
        params = _results_params(scores_path, tmp_path / "after")
        aggregate_run(params)
        layout = Layout.from_params(params)
        assert fitted_calibration(layout, params) is not None
        after = stats_run(params)
    for name, table in fresh.items():
        pd.testing.assert_frame_equal(after[name], table, obj=name)
    assert fitted_calibration(layout, {**params, "seed": 6}) is None  # other settings: fitted again
    layout.scores.write_bytes(layout.scores.read_bytes())  # the same bytes: still these scores
    assert fitted_calibration(layout, params) is not None
    table = pq.read_table(layout.scores)
    pq.write_table(table.slice(0, table.num_rows - 1), layout.scores)  # other scores: fitted again
    assert fitted_calibration(layout, params) is None


def test_regression_rows_read_by_row_group_fit_what_the_whole_table_fits(scores_path, tmp_path):
    """The stats stage reads only the rows the interaction models fit, row group by row group (37
    rows each here, cut across the cells): the tables, notes and counts of rows left out included,
    are those of the models given the whole table."""
    from ambiemo.stats.regression import regression_rows
    from ambiemo.stats.stage import REGRESSION_COLUMNS, _regression, regression_tables

    whole, _ = read_scores(scores_path)
    refs = whole[whole["strategy"] == "baseline"].assign(model="reference", strategy="uniform", params_b=np.nan)
    whole = pd.concat([whole, refs], ignore_index=True).sort_values(["dataset", "model"], kind="stable")
    whole.attrs = refs.attrs
    scores_path = tmp_path / "with_references.parquet"
    write_scores(whole.reset_index(drop=True), scores_path, PARAMS)
    pq.write_table(pq.read_table(scores_path), scores_path, row_group_size=37)
    whole, _ = read_scores(scores_path)
    frame, left_out = regression_rows(scores_path, [*REGRESSION_COLUMNS, "js", "correct"], PARAMS)
    assert left_out["reference"] == int((whole["model"] == "reference").sum()) > 0
    assert left_out["other_budgets"] == int(((whole["strategy"] == "bon") & (whole["budget"] == 2)).sum()) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        at_once = regression_tables(whole, PARAMS)
        by_groups = _regression(scores_path, PARAMS)
    for name, table in at_once.items():
        assert "rows of reference predictors" in table["note"].iloc[0]
        assert "one budget per strategy (max)" in table["note"].iloc[0]
        pd.testing.assert_frame_equal(by_groups[name], table, obj=name)
