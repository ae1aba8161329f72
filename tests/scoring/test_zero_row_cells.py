"""A predictions table with zero rows is a cell: every utterance missing in ``unanswered``, counted
in the scores' cells, named by the stages that expected it; the power and compute-matched tables
still hold the other cells."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synthetic import LABELS, PARAMS, candidates_table, manifest_df, predictions_df  # noqa: E402

from ambiemo import scoring  # noqa: E402
from ambiemo.core.layout import Layout  # noqa: E402
from ambiemo.data import manifest as mm  # noqa: E402
from ambiemo.data.labels import LabelSet  # noqa: E402
from ambiemo.inference.predictions import write_predictions  # noqa: E402

BINS = {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]}
CELLS = [("large", "baseline"), ("large", "w-bon"), ("small", "baseline"), ("small", "w-bon")]
EMPTY = ("large", "w-bon")
N = 16


@pytest.fixture
def run_params(tmp_path):
    params = copy.deepcopy(PARAMS)
    params.update(paths={"results": str(tmp_path / "results")}, seed=0)
    params["run"] = {"datasets": ["demo"], "models": ["large", "small"], "strategies": ["baseline", "w-bon"]}
    params["scoring"]["compute_multiples"] = [1, 2]
    layout = Layout.from_params(params)
    man = manifest_df(n=N, n_speakers=4)
    mm.write_manifest(man, layout.manifest("demo"), label_set=LabelSet("four", LABELS), ambiguity=BINS, exclusions={})
    for i, (model, strategy) in enumerate(CELLS):
        df = predictions_df(man, model, strategy, budget=2 if strategy == "w-bon" else 1, seed=i, fail_rate=0.0)
        if (model, strategy) == EMPTY:
            df = df.iloc[:0]  # the run wrote nothing
        prov = {"model": model, "strategy": {"name": strategy, "budgets": [2]}}
        path = layout.predictions("demo", model, strategy)
        write_predictions(df, path, labels=LABELS, label_set="four", provenance=prov, candidates=candidates_table(df))
    return params, layout


def test_a_zero_row_cell_is_listed_counted_and_named(run_params, tmp_path, monkeypatch):
    params, layout = run_params
    run = scoring.score_run(params)
    row = run.unanswered.set_index(["model", "table"]).loc[EMPTY]
    assert (row["n_rows"], row["n_missing"], row["n_utterances"], row["budget"]) == (0, N, N, 2)
    models = run.scores[run.scores["model"] != "reference"]
    n_reference = run.scores[run.scores["model"] == "reference"].groupby(list(scoring.KEYS)).ngroups
    assert models.groupby(list(scoring.KEYS)).ngroups == 3  # the empty cell has no score row ...
    assert run.n_cells == 4 + n_reference  # ... but it is a cell
    from ambiemo.cli import app

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("ambiemo.core.config.load_params", lambda path: copy.deepcopy(params))
    res = CliRunner().invoke(app, ["score", "--params", str(tmp_path / "params.yaml")])
    assert res.exit_code == 0, res.output
    assert f"{4 + n_reference} cells" in res.output
    assert "demo/large/w-bon@2 (16 of 16 missing)" in res.output


def test_stages_say_so_and_their_tables_keep_the_other_cells(run_params):
    from ambiemo.scoring.stages import aggregate_run
    from ambiemo.stats.stage import stats_run

    params, layout = run_params
    scoring.score_run(params).write(params)
    with pytest.warns(UserWarning, match=r"aggregate: 1 cell\(s\).*demo/large/w-bon@2"):
        tables = aggregate_run(params)
    unanswered = tables["unanswered"].set_index(["model", "table"])
    assert unanswered.loc[EMPTY, "n_missing"] == N
    matched = tables["compute_matched"]
    assert set(matched["model"]) == {"large", "small"} and set(matched[matched["model"] == "small"]["strategy"]) == {
        "baseline",
        "w-bon",
    }
    with pytest.warns(UserWarning, match=r"stats: 1 cell\(s\).*demo/large/w-bon@2"):
        stats = stats_run(params)
    power = stats["power"]
    assert len(power) > 0 and set(power["model"]) == {"small"}  # large has no strategy left to compare
    assert set(stats["gains"]["model"]) == {"small"}


def test_figure_three_draws_the_stats_tables_intervals(run_params):
    """The figures notebook reads stats/gains.parquet and draws its intervals, computing nothing."""
    import matplotlib

    matplotlib.use("Agg")
    from ambiemo.report import figures_scaling as scaling
    from ambiemo.report.latex import read_result
    from ambiemo.stats.stage import stats_run

    params, layout = run_params
    scoring.score_run(params).write(params)
    with pytest.warns(UserWarning):
        stats_run(params)
    gains = read_result(layout.stats_dir, "gains")
    gains = gains[gains["metric"] == "js"]
    fig = scaling.interaction(gains, families=scaling.model_families(params, ["small", "large"]))
    bars = [c for ax in fig.axes for c in ax.collections]  # error bars of the plotted gains
    assert len(gains) and bars
    segments = [seg for c in bars for seg in c.get_segments()]
    drawn = sorted((round(s[0][1], 12), round(s[1][1], 12)) for s in segments)
    expected = gains[gains["budget"] == gains["budget"].max()]
    pairs = zip(expected["ci_low"], expected["ci_high"], strict=True)
    assert drawn == sorted((round(lo, 12), round(hi, 12)) for lo, hi in pairs)
