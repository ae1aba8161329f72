"""Scoring predictions against a manifest, summaries, gains and the `ambiemo score` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import accuracy_score, f1_score, recall_score
from synthetic import LABELS, PARAMS, candidates_table, cells, manifest_df, predictions_df
from typer.testing import CliRunner

from ambiemo import scoring


@pytest.fixture(scope="module")
def manifest():
    return manifest_df(n=40, seed=3)


@pytest.fixture(scope="module")
def scores(manifest):
    preds = cells(manifest, budgets={"bon": [2, 4]})
    return scoring.score_predictions(manifest, preds, PARAMS, candidates=candidates_table(preds))


def test_scores_have_one_row_per_utterance_and_cell(scores, manifest):
    n_cells = 2 * (1 + 2 + 1)
    assert len(scores) == n_cells * len(manifest)
    assert not scores.duplicated(["dataset", "model", "strategy", "budget", "utt_id"]).any()
    assert scores.attrs["missing"] == {}
    assert scores.attrs["labels"] == list(LABELS)


def test_per_utterance_metrics_against_references(scores, manifest):
    truth = manifest.set_index("utt_id")
    row = scores.iloc[17]
    p = truth.loc[row["utt_id"], [f"p_{x}" for x in LABELS]].to_numpy(float)
    q = row[[f"p_{x}" for x in LABELS]].to_numpy(float)
    assert row["js"] == pytest.approx(jensenshannon(p, q))
    assert row["bc"] == pytest.approx(np.sqrt(p * q).sum())
    expected = np.array(
        [
            jensenshannon(a, b)
            for a, b in zip(
                scores[[f"true_{x}" for x in LABELS]].to_numpy(),
                scores[[f"p_{x}" for x in LABELS]].to_numpy(),
                strict=True,
            )
        ]
    )
    np.testing.assert_allclose(scores["js"], expected, atol=1e-12)


def test_context_from_manifest_and_params(scores, manifest):
    merged = scores.merge(
        manifest[["utt_id", "speaker", "entropy_bits", "ambiguity"]], on="utt_id", suffixes=("", "_m")
    )
    assert (merged["speaker"] == merged["speaker_m"]).all()
    assert (merged["ambiguity"] == merged["ambiguity_m"]).all()
    np.testing.assert_allclose(merged["entropy_bits"], merged["entropy_bits_m"])
    assert set(scores.loc[scores["model"] == "large", "params_b"]) == {7.0}
    np.testing.assert_allclose(scores["log10_params"], np.log10(scores["params_b"]))
    order = ["clear", "low", "medium", "high"]
    assert (scores["ambiguity_rank"] == scores["ambiguity"].map({b: i for i, b in enumerate(order)})).all()


def test_correctness_parse_failures_and_ties(scores, manifest):
    tie = scores["majority_tie"].to_numpy()
    assert scores.loc[tie, "correct"].isna().all()  # tie policy "exclude"
    assert (scores.loc[tie, "majority_used"] == "").all()
    ok = ~tie
    expected = (scores.loc[ok, "pred_label"] == scores.loc[ok, "majority"]).astype(float)
    np.testing.assert_array_equal(scores.loc[ok, "correct"], expected)
    failed = ~scores["parsed_ok"]
    assert failed.any(), "the synthetic cells should contain parse failures"
    assert (scores.loc[failed, "pred_label"] == "").all()
    assert (scores.loc[failed & ok, "correct"] == 0).all()
    assert (scores.loc[failed, "plausible"] == 0).all()


def test_tie_policies_change_the_hard_label_count(manifest):
    preds = cells(manifest, strategies=("baseline",), models=("small",))
    n_ties = int(manifest["majority_tie"].sum())
    assert n_ties > 0
    got = {}
    for policy in ("exclude", "first", "any"):
        params = {**PARAMS, "scoring": {**PARAMS["scoring"], "tie_policy": policy}}
        s = scoring.score_predictions(manifest, preds, params)
        got[policy] = scoring.summarise(s, params=params, per_bin=False).iloc[0]
    assert got["exclude"]["n_hard"] == len(manifest) - n_ties
    assert got["first"]["n_hard"] == got["any"]["n_hard"] == len(manifest)
    assert got["any"]["accuracy"] >= got["first"]["accuracy"]


def _recorded(dists: list[list[float] | None]) -> list[dict]:
    """Candidates as inference records them: ``strategies.record`` of real candidates."""
    from ambiemo.models.base import Candidate
    from ambiemo.strategies import record
    from ambiemo.strategies.prompts import Prompt

    prompt = Prompt("distribution@1", (), LABELS)
    return [
        record(Candidate(f"cand {i}", -1.0, None, 5), None if d is None else np.asarray(d), prompt)
        for i, d in enumerate(dists)
    ]


def test_oracle_picks_the_candidate_closest_to_the_humans():
    man = manifest_df(n=3, seed=1)
    # the humans: u000 unanimous "angry" (index 2), u001 unanimous "happy" (index 1)
    assert man["majority"].tolist()[:2] == ["angry", "happy"] and not man["majority_tie"][:2].any()
    preds = predictions_df(man, "small", "bon", budget=3, seed=0)
    preds.at[0, "candidate_records"] = _recorded([[0.5, 0.3, 0.2, 0.0], None, [0.1, 0.2, 0.6, 0.1]])
    preds.at[1, "candidate_records"] = _recorded([None, [0.7, 0.3, 0.0, 0.0]])
    preds.at[2, "candidate_records"] = _recorded([None, None])
    table = candidates_table(preds)  # the candidates table, one row per candidate (ambiemo.inference.candidates)
    s = scoring.score_predictions(man, preds, PARAMS, candidates=table).set_index("utt_id")

    first = s.loc["u000"]  # the third candidate is closer to one-hot "angry" and its top label is "angry"
    truth = [0.0, 0.0, 1.0, 0.0]
    assert jensenshannon(truth, [0.1, 0.2, 0.6, 0.1]) < jensenshannon(truth, [0.5, 0.3, 0.2, 0.0])
    assert first["oracle_js"] == pytest.approx(jensenshannon(truth, [0.1, 0.2, 0.6, 0.1]), abs=1e-12)
    assert first["oracle_bc"] == pytest.approx(math.sqrt(0.6))
    assert first["oracle_n_parsed"] == 2
    assert first["oracle_correct"] == 1 and first["pass_at_n"] == 1

    second = s.loc["u001"]  # one parsed candidate, top label "neutral": wrong, and no candidate says "happy"
    assert second["oracle_n_parsed"] == 1
    assert second["oracle_js"] == pytest.approx(jensenshannon([0, 1, 0, 0], [0.7, 0.3, 0, 0]), abs=1e-12)
    assert second["oracle_bc"] == pytest.approx(math.sqrt(0.3))
    assert second["oracle_correct"] == 0 and second["pass_at_n"] == 0

    third = s.loc["u002"]
    assert third["oracle_n_parsed"] == 0
    assert math.isnan(third["oracle_js"]) and math.isnan(third["oracle_correct"]) and math.isnan(third["pass_at_n"])


def test_summary_matches_independent_computation(scores):
    summary = scoring.summarise(scores, params=PARAMS)
    row = summary[(summary["model"] == "large") & (summary["strategy"] == "w-bon") & (summary["ambiguity"] == "all")]
    assert len(row) == 1
    row = row.iloc[0]
    cell = scores[(scores["model"] == "large") & (scores["strategy"] == "w-bon")]
    hard = cell[cell["majority"] != ""]
    y_true, y_pred = hard["majority"], hard["pred_label"].replace("", "none")
    assert row["n"] == len(cell) and row["n_hard"] == len(hard)
    assert row["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert row["f1_weighted"] == pytest.approx(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="weighted"))
    assert row["uar"] == pytest.approx(recall_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro"))
    assert row["js"] == pytest.approx(cell["js"].mean())
    assert row["parse_failure_rate"] == pytest.approx(1 - cell["parsed_ok"].mean())
    assert row["gen_tokens"] == pytest.approx(cell["gen_tokens"].mean())
    p = cell[[f"true_{x}" for x in LABELS]].to_numpy().ravel()
    q = cell[[f"p_{x}" for x in LABELS]].to_numpy().ravel()
    assert row["r2"] == pytest.approx(np.corrcoef(p, q)[0, 1] ** 2)
    # the per-bin rows partition the utterances
    bins = summary[(summary["model"] == "large") & (summary["strategy"] == "w-bon") & (summary["ambiguity"] != "all")]
    assert bins["n"].sum() == row["n"]
    assert list(bins["ambiguity_rank"]) == sorted(bins["ambiguity_rank"])
    assert scoring.levels(summary) == [b for b in ["clear", "low", "medium", "high"] if b in set(bins["ambiguity"])]


def test_better_cells_score_better(scores):
    s = scoring.summarise(scores, params=PARAMS, per_bin=False).set_index(["model", "strategy", "budget"])
    # the synthetic large model mixes in more of the human distribution
    assert s.loc[("large", "baseline", 1), "js"] < s.loc[("small", "baseline", 1), "js"]
    assert s.loc[("large", "baseline", 1), "bc"] > s.loc[("small", "baseline", 1), "bc"]


def test_gain_over_baseline_is_signed_so_positive_is_better(scores):
    summary = scoring.summarise(scores, params=PARAMS)
    gains = scoring.gain_over_baseline(summary, "js")
    one = gains[(gains["model"] == "small") & (gains["strategy"] == "w-bon") & (gains["ambiguity"] == "all")].iloc[0]
    base = summary[
        (summary["model"] == "small") & (summary["strategy"] == "baseline") & (summary["ambiguity"] == "all")
    ]
    assert one["gain"] == pytest.approx(base["js"].iloc[0] - one["value"])
    acc = scoring.gain_over_baseline(summary, "accuracy")
    one = acc[(acc["model"] == "small") & (acc["strategy"] == "w-bon") & (acc["ambiguity"] == "all")].iloc[0]
    assert one["gain"] == pytest.approx(one["value"] - one["baseline_value"])
    with pytest.raises(ValueError, match="baseline"):
        scoring.gain_over_baseline(summary[summary["strategy"] != "baseline"], "js")


def test_reliability_table(scores):
    table = scoring.reliability(scores, by=["model"], params=PARAMS)
    assert len(table) == 2 * PARAMS["scoring"]["ece_bins"]
    per_model = table.groupby("model")["n"].sum()
    assert per_model["small"] == scores.loc[scores["model"] == "small", "correct"].notna().sum()


def test_ambiguity_from_entropy(manifest):
    params = {**PARAMS, "scoring": {**PARAMS["scoring"], "ambiguity_from": "entropy"}}
    s = scoring.score_predictions(manifest, cells(manifest, strategies=("baseline",), models=("small",)), params)
    assert set(s["ambiguity"]) == {f"{h:.3f}" for h in np.round(manifest["entropy_bits"], 3)}
    ranked = s.sort_values("ambiguity_rank")["entropy_bits"].to_numpy()
    assert (np.diff(ranked) >= -1e-3).all()


def test_missing_utterances_are_counted(manifest):
    preds = cells(manifest, strategies=("baseline",), models=("small",))[0].iloc[:-3]
    s = scoring.score_predictions(manifest, preds, PARAMS)
    assert s.attrs["missing"] == {"demo/small/baseline/1": 3}


def test_missing_capacity_warns(manifest):
    preds = cells(manifest, strategies=("baseline",), models=("small",))
    with pytest.warns(UserWarning, match="params_b is missing for \\['small'\\]"):
        s = scoring.score_predictions(manifest, preds, {"scoring": PARAMS["scoring"]})
    assert s["params_b"].isna().all()


def test_errors_name_the_utterance_and_cell(manifest):
    preds = cells(manifest, strategies=("baseline",), models=("small",))[0]
    stray = preds.copy()
    stray.loc[0, "utt_id"] = "nope"
    with pytest.raises(scoring.ScoringError, match="nope"):
        scoring.score_predictions(manifest, stray, PARAMS)
    with pytest.raises(scoring.ScoringError, match="passed twice"):
        scoring.score_predictions(manifest, [preds, preds], PARAMS)
    bad = preds.copy()
    bad.loc[5, "p_happy"] += 0.5
    with pytest.raises(scoring.ScoringError, match=f"{preds.loc[5, 'utt_id']}.*demo/small/baseline/1"):
        scoring.score_predictions(manifest, bad, PARAMS)
    with pytest.raises(scoring.ScoringError, match="labels"):
        scoring.score_predictions(manifest, preds.drop(columns=["p_sad"]), PARAMS)
    with pytest.raises(scoring.ScoringError, match="gen_tokens"):
        scoring.score_predictions(manifest, preds.drop(columns=["gen_tokens"]), PARAMS)
    with pytest.raises(ValueError, match="tie_policy"):
        scoring.score_predictions(manifest, preds, {"scoring": {"tie_policy": "coin"}})


def test_label_order_of_predictions_does_not_matter(manifest):
    preds = cells(manifest, strategies=("baseline",), models=("small",))[0]
    shuffled = preds[[c for c in preds.columns if not c.startswith("p_")] + [f"p_{x}" for x in reversed(LABELS)]]
    a = scoring.score_predictions(manifest, preds, PARAMS)
    b = scoring.score_predictions(manifest, shuffled, PARAMS)
    pd.testing.assert_frame_equal(a, b)


def test_manifest_object_is_accepted(manifest):
    mm = pytest.importorskip("ambiemo.data.manifest")
    meta = {
        "label_set": {"name": "four", "labels": list(LABELS)},
        "ambiguity": {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]},
    }
    obj = mm.Manifest(manifest, meta)
    preds = cells(manifest, strategies=("baseline",), models=("small",))
    a = scoring.score_predictions(obj, preds, PARAMS)
    b = scoring.score_predictions(manifest, preds, PARAMS)
    pd.testing.assert_frame_equal(a, b)


def test_write_read_scores_round_trip_is_byte_identical(scores, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    scoring.write_scores(scores, a, PARAMS)
    scoring.write_scores(scores, b, PARAMS)
    assert a.read_bytes() == b.read_bytes()
    back, meta = scoring.read_scores(a)
    pd.testing.assert_frame_equal(back, scores, check_dtype=False)
    assert meta["parse_failures"] == int((~scores["parsed_ok"]).sum())
    assert scoring.params_of(meta)["scoring"]["tie_policy"] == "exclude"


def test_cli_scores_and_summarises(manifest, tmp_path):
    mm = pytest.importorskip("ambiemo.data.manifest")
    from ambiemo.cli import app
    from ambiemo.core.tables import write_table
    from ambiemo.data.labels import LabelSet
    from ambiemo.inference.candidates import candidates_path, write_candidates

    man_path = tmp_path / "manifest.parquet"
    mm.write_manifest(
        manifest,
        man_path,
        label_set=LabelSet("four", LABELS),
        ambiguity={"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]},
        exclusions={},
    )
    pred_dir = tmp_path / "predictions"
    pred_dir.mkdir()
    for df in cells(manifest):
        path = pred_dir / f"{df['model'][0]}-{df['strategy'][0]}.parquet"
        write_table(df.drop(columns=["candidate_records"]), path, {"label_set": {"labels": list(LABELS)}})
        write_candidates(candidates_table(df), candidates_path(path), {"label_set": {"name": "four", "labels": LABELS}})
    params_path = tmp_path / "params.yaml"
    # a params file the CLI accepts (the params schema wants an adapter per model)
    models = {k: {"adapter": "fake", **v} for k, v in PARAMS["models"].items()}
    params_path.write_text(yaml.safe_dump({**PARAMS, "models": models}))
    out = tmp_path / "scores.parquet"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "score",
            "--manifest",
            str(man_path),
            "--predictions",
            str(pred_dir),
            "--out",
            str(out),
            "--params",
            str(params_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"{6 * len(manifest)} rows, 6 cells" in res.output
    res = runner.invoke(app, ["score", "summary", str(out), "--by-bin", "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    assert "w-bon" in res.output and "parse_failure_rate" in res.output
    table = pd.read_csv(tmp_path / "s.csv")
    assert set(table["ambiguity"]) >= {"all", "clear"}
    res = runner.invoke(app, ["score", "--manifest", str(man_path), "--out", str(out)])
    assert res.exit_code != 0 and "--predictions" in res.output


def test_failures_without_a_distribution_are_left_out_of_distributional_means(manifest):
    preds = predictions_df(manifest, "small", "baseline", seed=4, fail_rate=0.3, on_failure="nan")
    preds["gen_tokens"] = pd.array([pd.NA] * len(preds), dtype="Int64")  # a route that reports no tokens
    failed = ~preds["parsed_ok"]
    assert failed.any() and preds.loc[failed, "p_happy"].isna().all()
    s = scoring.score_predictions(manifest, preds, PARAMS)
    assert s.loc[~s["parsed_ok"], "js"].isna().all()
    assert (s.loc[~s["parsed_ok"] & ~s["majority_tie"], "correct"] == 0).all()
    row = scoring.summarise(s, params=PARAMS, per_bin=False).iloc[0]
    ok = s[s["parsed_ok"]]
    assert row["n"] == len(s) and row["n_dist"] == len(ok)
    assert row["js"] == pytest.approx(ok["js"].mean())
    p = ok[[f"true_{x}" for x in LABELS]].to_numpy().ravel()
    q = ok[[f"p_{x}" for x in LABELS]].to_numpy().ravel()
    assert row["r2"] == pytest.approx(np.corrcoef(p, q)[0, 1] ** 2)
    assert np.isnan(row["gen_tokens"])
    hard = s[~s["majority_tie"]]
    assert row["accuracy"] == pytest.approx((hard["pred_label"] == hard["majority"]).mean())


def test_compute_table_and_metrics_json(scores):
    compute = scoring.compute_table(scores)
    row = compute[(compute["model"] == "large") & (compute["strategy"] == "bon") & (compute["budget"] == 4)].iloc[0]
    cell = scores[(scores["model"] == "large") & (scores["strategy"] == "bon") & (scores["budget"] == 4)]
    assert row["n"] == cell["utt_id"].nunique()
    assert row["model_calls"] == pytest.approx(cell["model_calls"].mean())
    assert row["total_gen_tokens"] == pytest.approx(cell["gen_tokens"].sum())
    summary = scoring.summarise(scores, params=PARAMS)
    doc = scoring.metrics_json(summary)  # the headline only (tests/scoring/test_metrics_json.py)
    one = summary[
        (summary["model"] == "small")
        & (summary["strategy"] == "baseline")
        & (summary["budget"] == 1)
        & (summary["ambiguity"] == "all")
    ].iloc[0]
    assert doc["demo"]["small"]["baseline"]["js"] == pytest.approx(one["js"], abs=1e-6)
    json.dumps(doc, allow_nan=False)  # valid JSON for DVC


def test_summarise_rejects_params_in_place_of_the_grouping(scores):
    with pytest.raises(TypeError, match="params="):
        scoring.summarise(scores, PARAMS)


# --------------------------------------------------------------------------- real votes (CREMA-D)

CODES = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}
INTENDED = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


@pytest.fixture(scope="module")
def crema(shared_dir):
    tables = shared_dir / "data" / "crema-d" / "processedResults"
    if not (tables / "tabulatedVotes.csv").exists():
        pytest.skip(f"real CREMA-D vote tables not found under {shared_dir} (the shared folder beside the checkout)")
    votes = pd.read_csv(tables / "tabulatedVotes.csv", index_col=0)
    votes = votes[votes.index // 100000 == 1]  # voice-only ratings
    labels = list(CODES.values())
    counts = votes[list(CODES)].to_numpy(dtype=float)
    p = counts / counts.sum(axis=1, keepdims=True)
    top = np.isclose(p, p.max(axis=1, keepdims=True))
    h = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0).sum(axis=1)
    man = pd.DataFrame(
        {
            "utt_id": votes["fileName"].to_numpy(),
            "dataset": "crema-d",
            "speaker": votes["fileName"].str[:4].to_numpy(),
            "n_raters": counts.sum(axis=1).astype(int),
            "majority": np.where(top.sum(axis=1) > 1, "", np.asarray(labels)[p.argmax(axis=1)]),
            "majority_tie": top.sum(axis=1) > 1,
            "entropy_bits": h,
            "ambiguity": np.where(h < 1e-9, "clear", np.where(h <= 1.0, "low", np.where(h <= 1.5, "medium", "high"))),
        }
    )
    for j, x in enumerate(labels):
        man[f"p_{x}"] = p[:, j]
    intended = man["utt_id"].str.split("_").str[2].map(INTENDED).to_numpy()
    onehot = (np.asarray(labels)[None, :] == intended[:, None]).astype(float)
    preds = pd.DataFrame(
        {
            "utt_id": man["utt_id"],
            "dataset": "crema-d",
            "model": "intended",
            "strategy": "baseline",
            "budget": 1,
            **{f"p_{x}": onehot[:, j] for j, x in enumerate(labels)},
            "pred_label": intended,
            "parsed_ok": True,
            "n_candidates": 1,
            "model_calls": 0,
            "verifier_calls": 0,
            "prompt_tokens": 0,
            "gen_tokens": 0,
            "wall_s": 0.0,
            "verifier_prompt_tokens": 0,
            "verifier_gen_tokens": 0,
            "verifier_wall_s": 0.0,
        }
    )
    summary_table = pd.read_csv(tables / "summaryTable.csv", index_col=0).set_index("FileName")
    return man, preds, summary_table, intended


def test_real_crema_d_votes_against_the_corpus_own_majority_table(crema):
    man, preds, table, _ = crema
    params = {"models": {"intended": {"params_b": 1.0}}, "scoring": {"tie_policy": "exclude"}}
    s = scoring.score_predictions(man, preds, params)
    assert len(s) == 7442
    # the corpus's own summary table names the voice majority (ties as "A:D"): an independent reference
    vote = table.loc[s["utt_id"], "VoiceVote"].to_numpy()
    single = np.array([":" not in v for v in vote])
    assert s["correct"].isna().sum() == (~single).sum()
    expected = np.mean([CODES[v] == i for v, i, ok in zip(vote, s["pred_label"], single, strict=True) if ok])
    row = scoring.summarise(s, params=params, per_bin=False).iloc[0]
    assert row["accuracy"] == pytest.approx(expected)
    any_policy = {**params, "scoring": {"tie_policy": "any"}}
    s_any = scoring.score_predictions(man, preds, any_policy)
    expected_any = np.mean(
        [i in {CODES[c] for c in v.split(":")} for v, i in zip(vote, s_any["pred_label"], strict=True)]
    )
    assert scoring.summarise(s_any, params=any_policy, per_bin=False).iloc[0]["accuracy"] == pytest.approx(expected_any)
    # a one-hot prediction: BC = sqrt(share of votes for that label); plausible = it got any vote
    share = np.array(
        [
            man.set_index("utt_id").loc[u, f"p_{x}"]
            for u, x in zip(s["utt_id"][:200], s["pred_label"][:200], strict=True)
        ]
    )
    np.testing.assert_allclose(s["bc"][:200], np.sqrt(share))
    assert row["plausible_accuracy"] == pytest.approx((s["bc"] > 0).mean())


def test_real_crema_d_bootstrap_clusters_by_actor(crema):
    from ambiemo import stats

    man, preds, _, _ = crema
    params = {"models": {"intended": {"params_b": 1.0}}, "seed": 1}
    s = scoring.score_predictions(man, preds, params)
    ci = stats.bootstrap_ci(s, params, metrics=["js", "accuracy", "f1_weighted"], n_resamples=200)
    assert (ci["n_clusters"] == 91).all() and (ci["cluster_unit"] == "speaker").all()
    assert ((ci["ci_low"] < ci["estimate"]) & (ci["estimate"] < ci["ci_high"])).all()
