"""``score_run``: exactly the run's cells, the references beside them, and what was not answered."""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.spatial.distance import jensenshannon
from synthetic import LABELS, PARAMS, candidates_table, manifest_df, predictions_df
from typer.testing import CliRunner

from ambiemo import scoring
from ambiemo.core.layout import Layout
from ambiemo.data import manifest as mm
from ambiemo.data.labels import LabelSet
from ambiemo.inference.predictions import write_predictions
from ambiemo.scoring.stages import ci_table

BINS = {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]}
PROV = {"model": "test"}


def _layout(tmp_path, manifest, cells, datasets=("demo",), skipped=(), failures=None, limit=None):
    """A results folder holding ``manifest`` for each dataset and each (model, strategy) cell (of the
    first ``limit`` utterances, as `run.limit` makes the infer stage answer)."""
    params = copy.deepcopy(PARAMS)
    params["paths"] = {"results": str(tmp_path / "results")}
    params["seed"] = 0
    models = sorted({m for m, _ in cells})
    strategies = sorted({s for _, s in cells})
    params["run"] = {"datasets": list(datasets), "models": models, "strategies": strategies}
    layout = Layout.from_params(params)
    for dataset in datasets:
        man = manifest.assign(dataset=dataset)
        mm.write_manifest(
            man, layout.manifest(dataset), label_set=LabelSet("four", LABELS), ambiguity=BINS, exclusions={}
        )
        for i, (model, strategy) in enumerate(cells):
            df = predictions_df(man if limit is None else man.head(limit), model, strategy, seed=i, fail_rate=0.0)
            meta = {}
            if (model, strategy) in skipped:
                meta["skipped"] = f"{model} cannot run {strategy}"
                df = df.iloc[:0]
            for utt in (failures or {}).get((model, strategy), []):
                meta.setdefault("model_failures", {})[utt] = "timeout"
                df.loc[df["utt_id"] == utt, "parsed_ok"] = False
                df.loc[df["utt_id"] == utt, "pred_label"] = ""
            write_predictions(
                df,
                layout.predictions(dataset, model, strategy),
                labels=LABELS,
                label_set="four",
                provenance=PROV,
                candidates=candidates_table(df),  # beside each predictions table, as the infer stage writes it
                **meta,
            )
    return params, layout


def test_layout_paths_are_named_once():
    layout = Layout.from_params({"paths": {"results": "out"}, "figures": {"folder": "figs"}})
    assert layout.manifest("crema-d").as_posix() == "out/prepared/crema-d/manifest.parquet"
    assert layout.ratings("crema-d").as_posix() == "out/prepared/crema-d/ratings.parquet"
    assert layout.predictions("demo", "m", "w-bon").as_posix() == "out/predictions/demo/m/w-bon.parquet"
    assert layout.candidates("demo", "m", "w-bon").as_posix() == "out/predictions/demo/m/w-bon.candidates.parquet"
    assert layout.scores.as_posix() == "out/scores/scores.parquet"
    assert layout.summary("compute_matched").as_posix() == "out/summary/compute_matched.parquet"
    assert layout.stats("power").as_posix() == "out/stats/power.parquet"
    assert layout.notebooks.as_posix() == "out/notebooks" and layout.figures.as_posix() == "figs"
    with pytest.raises(KeyError, match="not a table"):
        layout.summary("powr")
    assert Layout.from_params({}).scores.as_posix() == "results/scores/scores.parquet"


def test_score_run_and_the_cli_score_the_same_cells(tmp_path, monkeypatch):
    manifest = manifest_df(n=12, n_speakers=4)
    cells = [("large", "baseline"), ("small", "baseline"), ("small", "w-bon"), ("large", "w-bon")]
    params, layout = _layout(tmp_path, manifest, cells, skipped=[("large", "w-bon")])
    # a stale table of another run in the same folder must not leak in
    stale = predictions_df(manifest, "small", "cot")
    write_predictions(
        stale, layout.predictions("demo", "small", "cot"), labels=LABELS, label_set="four", provenance=PROV
    )
    run = scoring.score_run(params)
    got = run.scores[run.scores["model"] != "reference"].groupby(["model", "strategy"]).ngroups
    assert got == 3 and "cot" not in set(run.scores["strategy"])
    assert run.skipped.to_dict("records") == [
        {"dataset": "demo", "model": "large", "strategy": "w-bon", "reason": "large cannot run w-bon"}
    ]
    # the command, given only the params, writes what score_run returns
    from ambiemo.cli import app

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("ambiemo.core.config.load_params", lambda path: copy.deepcopy(params))
    res = CliRunner().invoke(app, ["score", "--params", str(tmp_path / "params.yaml")])
    assert res.exit_code == 0, res.output
    written, meta = scoring.read_scores(layout.scores)
    pd.testing.assert_frame_equal(written, run.scores, check_like=False, check_dtype=True)
    assert meta["skipped"] == run.skipped.to_dict("records")
    assert "1 cell(s) skipped" in res.output


def test_missing_predictions_name_the_cell(tmp_path):
    params, layout = _layout(tmp_path, manifest_df(n=6, n_speakers=3), [("small", "baseline")])
    params["run"]["strategies"].append("cot")
    with pytest.raises(FileNotFoundError, match="demo/small/cot.parquet.*strategy cot"):
        scoring.score_run(params)


def test_references_are_scored_with_cis_hand_computed_uniform_js(tmp_path):
    # three utterances of two speakers; votes over (neutral, happy, angry, sad)
    votes = np.array([[4, 0, 0, 0], [2, 2, 0, 0], [1, 1, 1, 1]], dtype=float)
    man = manifest_df(n=3, n_speakers=2)
    for j, x in enumerate(LABELS):
        man[f"votes_{x}"] = votes[:, j]
        man[f"p_{x}"] = votes[:, j] / votes.sum(axis=1)
    p = votes / votes.sum(axis=1, keepdims=True)
    man["n_raters"] = 4
    man["entropy_bits"] = [0.0, 1.0, 2.0]
    man["ambiguity"] = ["clear", "low", "high"]
    man["majority"], man["majority_tie"] = ["neutral", "", ""], [False, True, True]
    man["max_share"], man["n_distinct"] = p.max(axis=1), (votes > 0).sum(axis=1)
    params, _ = _layout(tmp_path, man, [("small", "baseline")])
    run = scoring.score_run(params)
    scores = run.scores
    uni = scores[(scores["model"] == "reference") & (scores["strategy"] == "uniform")].set_index("utt_id")
    # by hand: JS distance (natural log) of each vote distribution against (1/4, 1/4, 1/4, 1/4)
    m1 = np.array([5 / 8, 1 / 8, 1 / 8, 1 / 8])
    js1 = math.sqrt(0.5 * math.log(1 / m1[0]) + 0.5 * (0.25 * math.log(0.25 / m1[0]) + 3 * 0.25 * math.log(2)))
    m2 = np.array([3 / 8, 3 / 8, 1 / 8, 1 / 8])
    js2 = math.sqrt(
        0.5 * 2 * 0.5 * math.log(0.5 / m2[0]) + 0.5 * (2 * 0.25 * math.log(0.25 / m2[0]) + 2 * 0.25 * math.log(2))
    )
    np.testing.assert_allclose(uni.loc[man["utt_id"], "js"], [js1, js2, 0.0], atol=1e-12)
    np.testing.assert_allclose(uni["js"].iloc[:2], [jensenshannon(p[i], np.full(4, 0.25)) for i in range(2)])
    # the human ceiling from counts (no ratings.parquet): utterance 1 is unanimous, so LOO is 0
    loo = scores[scores["strategy"] == "human-loo-counts"].set_index("utt_id")
    assert loo.loc["u000", "js"] == pytest.approx(0.0)
    assert loo["ambiguity"].tolist() == ["clear", "low", "high"] and loo["speaker"].tolist() == ["s0", "s1", "s0"]
    assert run.ceilings["demo"]["source"].startswith("counts")
    # summaries and CIs treat references like a model; ceilings define only js, bc, tv, brier
    summary = scoring.summarise(scores, params=params)
    row = summary[(summary["strategy"] == "uniform") & (summary["ambiguity"] == "all")].iloc[0]
    assert row["js"] == pytest.approx(np.mean([js1, js2, 0.0]))
    ceil = summary[(summary["strategy"] == "human-loo-counts") & (summary["ambiguity"] == "all")].iloc[0]
    assert np.isfinite(ceil[["js", "bc", "tv", "brier"]].astype(float)).all()
    assert ceil[["kl", "accuracy", "ece", "r2", "uar"]].isna().all()
    ci = ci_table(scores, params)
    uci = ci[(ci["strategy"] == "uniform") & (ci["metric"] == "js") & (ci["ambiguity"] == "all")].iloc[0]
    assert uci["estimate"] == pytest.approx(row["js"]) and uci["ci_low"] <= uci["estimate"] <= uci["ci_high"]
    assert uci["n_clusters"] == 2
    # the reference rows change no column's type for the models' rows
    alone = scoring.score_run(params, references=False).scores
    assert (alone.dtypes == scores[alone.columns].dtypes).all()
    assert set(ci.loc[ci["strategy"] == "human-loo-counts", "metric"]) == {"js", "bc", "tv", "brier"}
    # the by-bin breakdown has the references in each bin
    assert set(summary.loc[summary["strategy"] == "human-loo-counts", "ambiguity"]) == {"all", "clear", "low", "high"}
    # binned by entropy, the ceilings follow the same bins as the model
    params["scoring"]["ambiguity_from"] = "entropy"
    by_entropy = scoring.score_run(params).scores
    bins = by_entropy.groupby("strategy")["ambiguity"].apply(lambda s: tuple(s.sort_values()))
    assert bins["human-loo-counts"] == bins["baseline"] == ("0.000", "1.000", "2.000")


def test_references_answer_the_utterances_the_cells_answer(tmp_path):
    # run.limit = 5 of 12: the yardsticks must be scored on the same five utterances as the models
    man = manifest_df(n=12, n_speakers=3)
    params, _ = _layout(tmp_path, man, [("small", "baseline")], limit=5)
    scores = scoring.score_run(params).scores
    first = set(man["utt_id"].head(5))
    for strategy, rows in scores.groupby("strategy"):
        assert set(rows["utt_id"]) == first, strategy
    uni = scores[scores["strategy"] == "uniform"].set_index("utt_id").loc[man["utt_id"].head(5)]
    p = man[[f"p_{x}" for x in LABELS]].to_numpy()[:5]
    np.testing.assert_allclose(uni["js"], [jensenshannon(q, np.full(4, 0.25)) for q in p], atol=1e-12)
    # the label prior leaves each speaker out of the five, not of the whole manifest
    prior = scores[scores["strategy"] == "label-prior"].set_index("utt_id")
    five = man.head(5)
    for _, row in five.iterrows():
        rest = five[five["speaker"] != row["speaker"]][[f"p_{x}" for x in LABELS]].mean().to_numpy()
        assert prior.loc[row["utt_id"], "js"] == pytest.approx(
            jensenshannon(row[[f"p_{x}" for x in LABELS]].to_numpy(float), rest), abs=1e-12
        )


def test_unanswered_counts_survive_concatenating_cells(tmp_path):
    manifest = manifest_df(n=5, n_speakers=5)
    cells = [("small", "baseline"), ("small", "w-bon")]
    params, layout = _layout(tmp_path, manifest, cells, failures={("small", "w-bon"): ["u001", "u003"]})
    run = scoring.score_run(params)
    run.write(params)
    _, meta = scoring.read_scores(layout.scores)
    table = scoring.unanswered_table(meta).set_index("strategy")
    assert table.loc["w-bon", "n_model_failures"] == 2 and table.loc["w-bon", "n_utterances"] == 5
    assert table.loc["baseline", "n_model_failures"] == 0
    assert (table["n_missing"] == 0).all() and (table["n_parse_failures"] == 0).all()
    pd.testing.assert_frame_equal(scoring.unanswered_table(meta), run.unanswered, check_dtype=False)
    # the scores themselves: the two failed utterances did not parse, the rest did
    failed = run.scores[(run.scores["strategy"] == "w-bon") & ~run.scores["parsed_ok"]]
    assert sorted(failed["utt_id"]) == ["u001", "u003"]


def test_result_tables_round_trip_keep_dtypes_and_provenance(tmp_path):
    df = pd.DataFrame(
        {
            "dataset": ["demo", "demo"],
            "budget": np.array([1, 5], dtype="int64"),
            "n": pd.array([3, None], dtype="Int64"),
            "js": [0.25, np.nan],
            "significant": [True, False],
        }
    )
    src = tmp_path / "scores.parquet"
    src.write_bytes(b"scores")
    path = scoring.write_result(
        df, tmp_path / "summary.parquet", "summary", {"seed": 3, "scoring": {"ci_level": 0.9}}, [src]
    )
    back, meta = scoring.read_result(path, "summary")
    pd.testing.assert_frame_equal(back, df)
    assert meta["provenance"]["params"] == {"seed": 3, "scoring": {"ci_level": 0.9}}
    assert meta["provenance"]["seed"] == 3 and "ambiemo_version" in meta["provenance"]
    assert meta["input_hashes"] == {str(src): hashlib.sha256(b"scores").hexdigest()}
    assert pd.read_csv(path.with_suffix(".csv")).shape == df.shape
    with pytest.raises(ValueError, match="not 'ci'"):
        scoring.read_result(path, "ci")


def test_compute_matched_picks_the_budget_closest_to_each_multiple():
    compute = pd.DataFrame(
        {
            "dataset": "demo",
            "model": "m",
            "strategy": ["baseline", "bon", "bon", "bon", "sc", "sc"],
            "budget": [1, 2, 4, 8, 3, 5],
            "tokens_total": [100.0, 190.0, 420.0, 790.0, np.nan, 300.0],
            "flops_est": [1.0, 2.0, 4.0, 8.0, np.nan, 3.0],
        }
    )
    table = scoring.compute_matched(compute, multiples=[1, 2, 4, 8])
    bon = table[table["strategy"] == "bon"].set_index("multiple")["budget"].to_dict()
    # targets 100, 200, 400, 800: |190-100| < |420-100| -> 2; 190 -> 2; 420 -> 4; 790 -> 8
    assert bon == {1.0: 2, 2.0: 2, 4.0: 4, 8.0: 8}
    sc = table[table["strategy"] == "sc"]
    assert set(sc["budget"]) == {5}  # the budget of unknown tokens is never picked
    assert table.loc[(table["strategy"] == "bon") & (table["multiple"] == 4.0), "ratio"].item() == pytest.approx(4.2)


def test_ceilings_come_from_the_ratings_table_where_there_is_one(tmp_path):
    # two utterances, four raters each; by hand (scipy JS, natural log):
    # u000 raters vote n, n, n, h -> LOO: three raters see (2n, 1h)/3, one sees (3n)/3
    man = manifest_df(n=2, n_speakers=2)
    votes = np.array([[3, 1, 0, 0], [2, 2, 0, 0]], dtype=float)
    for j, x in enumerate(LABELS):
        man[f"votes_{x}"] = votes[:, j]
        man[f"p_{x}"] = votes[:, j] / 4
    man["n_raters"], man["entropy_bits"] = 4, [0.811, 1.0]
    man["ambiguity"], man["majority"], man["majority_tie"] = ["low", "low"], ["neutral", ""], [False, True]
    man["max_share"], man["n_distinct"] = [0.75, 0.5], [2, 2]
    params, layout = _layout(tmp_path, man, [("small", "baseline")])
    from ambiemo.data.ratings import write_ratings

    rows = [("u000", f"r{i}", lab) for i, lab in enumerate(["neutral", "neutral", "neutral", "happy"])]
    rows += [("u001", f"r{i}", lab) for i, lab in enumerate(["neutral", "neutral", "happy", "happy"])]
    ratings = pd.DataFrame(rows, columns=["utt_id", "rater", "label"])
    ratings = ratings.assign(category=ratings["label"], weight=1.0, kind="primary", self_eval=False)
    write_ratings(ratings, layout.ratings("demo"))
    run = scoring.score_run(params)
    assert run.ceilings["demo"]["source"].startswith("ratings")
    got = run.scores[run.scores["model"] == "reference"]
    assert set(got["strategy"]) == {"uniform", "label-prior", "hard-oracle", "human-loo", "human-split-half"}
    loo = got[got["strategy"] == "human-loo"].set_index("utt_id")["js"]
    e = np.eye(4)
    expected0 = np.mean([jensenshannon(np.array([2, 1, 0, 0]) / 3, e[0])] * 3 + [jensenshannon(e[0], e[1])])
    expected1 = np.mean(
        [jensenshannon(np.array([1, 2, 0, 0]) / 3, e[0])] * 2 + [jensenshannon(np.array([2, 1, 0, 0]) / 3, e[1])] * 2
    )
    np.testing.assert_allclose(loo.loc[["u000", "u001"]], [expected0, expected1], atol=1e-12)
    assert str(layout.ratings("demo")) in run.inputs


def test_tokens_total_and_flops_by_hand():
    scores = pd.DataFrame(
        {
            "model": ["small", "small", "reference"],
            "prompt_tokens": [100.0, np.nan, 0.0],
            "gen_tokens": [10.0, 5.0, 0.0],
            "verifier_calls": [2, 0, 0],
            "verifier_prompt_tokens": [50.0, np.nan, 0.0],
            "verifier_gen_tokens": [4.0, 0.0, 0.0],
        }
    )
    params = {"models": {"small": {"params_b": 7.0, "params_active_b": 0.5}, "judge": {"params_b": 2.0}}}
    params["strategies"] = {"verifier": {"model": "judge"}}
    got = scoring.summaries.tokens_and_flops(scores, params)
    # row 0: 110 model + 54 verifier tokens; FLOPs 2 * 0.5e9 * 110 + 2 * 2e9 * 54
    assert got.loc[0, "tokens_total"] == 164 and got.loc[0, "flops_est"] == pytest.approx(
        2 * 0.5e9 * 110 + 2 * 2e9 * 54
    )
    # row 1: the model's prompt tokens are unknown, so the total is unknown (not 5)
    assert np.isnan(got.loc[1, "tokens_total"]) and np.isnan(got.loc[1, "flops_est"])
    assert got.loc[2, "tokens_total"] == 0


def test_references_change_no_number_of_the_models(tmp_path):
    """The aggregate tables' model rows equal what the per-table functions give on the models'
    scores alone: adding the reference rows perturbs no bootstrap, order or value."""
    from ambiemo.scoring.stages import aggregate_run
    from ambiemo.stats import bootstrap_ci

    manifest = manifest_df(n=16, n_speakers=4)
    params, layout = _layout(
        tmp_path, manifest, [("small", "baseline"), ("small", "w-bon"), ("large", "baseline"), ("large", "w-bon")]
    )
    run = scoring.score_run(params)
    run.write(params)
    tables = aggregate_run(params)
    alone = scoring.score_run(params, references=False).scores

    def models(df):
        return df[df["model"] != "reference"].reset_index(drop=True)

    pd.testing.assert_frame_equal(models(tables["summary"]), scoring.summarise(alone, params=params, per_bin=False))
    pd.testing.assert_frame_equal(models(tables["by_ambiguity"]), scoring.summarise(alone, params=params))
    pd.testing.assert_frame_equal(models(tables["ci"]), bootstrap_ci(alone, params, per_bin=True))
    pd.testing.assert_frame_equal(models(tables["compute"]), scoring.compute_table(alone, params=params))
    back, meta = scoring.read_result(layout.summary("ci"), "ci")
    pd.testing.assert_frame_equal(back, tables["ci"])
    assert meta["inputs"] == [str(layout.scores)] and meta["ceilings"]["demo"]["source"].startswith("counts")
