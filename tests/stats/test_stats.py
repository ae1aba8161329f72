"""Bootstrap intervals, paired tests, Holm correction and the interaction models."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests
from synthetic import PARAMS, candidates_table, cells, manifest_df

from ambiemo import scoring, stats


@pytest.fixture(scope="module")
def scores():
    man = manifest_df(n=32, seed=5)
    preds = cells(man, budgets={"bon": [2, 4]})
    return scoring.score_predictions(man, preds, PARAMS, candidates=candidates_table(preds))


# --------------------------------------------------------------------------- weighted metrics = resampled metrics


def test_weighted_metrics_equal_metrics_on_repeated_rows(scores):
    cell = scores[(scores["model"] == "small") & (scores["strategy"] == "w-bon")].reset_index(drop=True)
    labels = scores.attrs["labels"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        w = rng.integers(0, 4, len(cell)).astype(float)
        w[:3] = 1  # keep a few rows so every metric is defined
        got = stats.weighted_metrics(cell, w[None, :], labels, 5)
        repeated = cell.loc[np.repeat(np.arange(len(cell)), w.astype(int))]
        expected = scoring.group_metrics(repeated, labels, 5)
        expected.update(oracle_js=repeated["oracle_js"].mean(), pass_at_n=repeated["pass_at_n"].mean())
        for name, value in expected.items():
            assert got[name][0] == pytest.approx(value, abs=1e-10, nan_ok=True), name


def test_bootstrap_point_estimates_match_summary(scores):
    ci = stats.bootstrap_ci(scores, PARAMS, n_resamples=50)
    summary = scoring.summarise(scores, params=PARAMS, per_bin=False)
    merged = ci.merge(summary, on=list(scoring.KEYS))
    for metric in ("js", "r2", "ece", "f1_weighted", "uar", "entropy_spearman", "accuracy"):
        rows = merged[merged["metric"] == metric]
        np.testing.assert_allclose(rows["estimate"], rows[metric], atol=1e-10)
    js = ci[ci["metric"] == "js"]
    assert ((js["ci_low"] < js["estimate"]) & (js["estimate"] < js["ci_high"])).all()
    assert set(ci["cluster_unit"]) == {"speaker"}
    assert (ci["n_clusters"] == 8).all()


def test_bootstrap_is_deterministic_and_order_independent(scores):
    a = stats.bootstrap_ci(scores, metrics=["js", "uar"], params=PARAMS, n_resamples=100, seed=1)
    b = stats.bootstrap_ci(
        scores.sample(frac=1, random_state=2), metrics=["js", "uar"], params=PARAMS, n_resamples=100, seed=1
    )
    pd.testing.assert_frame_equal(a, b)
    c = stats.bootstrap_ci(scores, metrics=["js"], params=PARAMS, n_resamples=100, seed=2)
    assert not np.allclose(a.loc[a["metric"] == "js", "ci_low"], c["ci_low"])


def test_clusters_fall_back_to_utterances():
    frame = pd.DataFrame({"dataset": "d", "utt_id": ["a", "b", "c", "d"], "speaker": ["s1", "s1", "", None]})
    codes, unit = stats.clusters(frame)
    assert unit == "speaker+utterance"
    assert codes[0] == codes[1] and len({codes[1], codes[2], codes[3]}) == 3
    assert stats.clusters(frame.assign(speaker=""))[1] == "utterance"


def test_cluster_codes_of_one_dataset_follow_the_sorted_keys():
    """One dataset's codes (built without a key per row) number the clusters in the order of their
    keys sorted as strings: "spk:<dataset>/<speaker>", then "utt:<dataset>/<utt_id>"."""
    from ambiemo.stats.bootstrap import cluster_codes

    rng = np.random.default_rng(4)
    n = 80
    speakers = rng.choice(["s09", "s1", "s10", "S2", "é", "a/b", "", None], n)
    frame = pd.DataFrame({"dataset": "iemocap", "utt_id": [f"u{i}" for i in rng.permutation(n)], "speaker": speakers})
    keys = [f"spk:iemocap/{s}" if s else f"utt:iemocap/{u}" for s, u in zip(speakers, frame["utt_id"], strict=True)]
    order = {k: i for i, k in enumerate(sorted(set(keys)))}
    for table in (frame, frame.astype({"speaker": "string[pyarrow]", "utt_id": "string[pyarrow]"})):
        codes, known = cluster_codes(table)
        np.testing.assert_array_equal(codes, [order[k] for k in keys])
        np.testing.assert_array_equal(known, [bool(s) for s in speakers])


def test_a_subset_of_rows_gets_the_clusters_it_would_get_alone():
    """The paired and gains tables take each metric's and bin's clusters from the cell's codes
    (``subset_clusters``): the same codes and unit as ``clusters`` of those rows alone."""
    from ambiemo.stats.bootstrap import cluster_codes, subset_clusters

    rng = np.random.default_rng(3)
    n = 60
    speakers = rng.choice(["s09", "s1", "s10", "s2", "", None], n)
    frame = pd.DataFrame({"dataset": "d", "utt_id": [f"u{i:02d}" for i in rng.permutation(n)], "speaker": speakers})
    codes, known = cluster_codes(frame)
    for _ in range(20):
        rows = np.flatnonzero(rng.random(n) < rng.uniform(0.1, 0.9))
        got_codes, got_unit = subset_clusters(codes, known, rows)
        want_codes, want_unit = stats.clusters(frame.iloc[rows])
        np.testing.assert_array_equal(got_codes, want_codes)
        assert got_unit == want_unit
    only_known = np.flatnonzero(np.asarray(known))
    assert subset_clusters(codes, known, only_known)[1] == "speaker"


def _speaker_frame(rng, n_speakers=10, per_speaker=6, speaker_sd=0.1, noise_sd=0.05, mean=0.4):
    spk = np.repeat(np.arange(n_speakers), per_speaker)
    js = mean + rng.normal(0, speaker_sd, n_speakers)[spk] + rng.normal(0, noise_sd, len(spk))
    n = len(spk)
    p = np.tile([1.0, 0, 0, 0], (n, 1))
    return pd.DataFrame(
        {
            "dataset": "d",
            "model": "m",
            "strategy": "s",
            "budget": 1,
            "utt_id": [f"u{i}" for i in range(n)],
            "speaker": [f"s{x}" for x in spk],
            "ambiguity": "clear",
            "ambiguity_rank": 0,
            "js": js,
            "bc": 1 - js,
            "kl": js,
            "tv": js,
            "brier": js,
            "correct": 1.0,
            "plausible": 1.0,
            "oracle_js": js,
            "pass_at_n": 1.0,
            "confidence": 0.9,
            "majority_used": "a",
            "pred_label": "a",
            "true_a": p[:, 0],
            "true_b": p[:, 1],
            "true_c": p[:, 2],
            "true_d": p[:, 3],
            "p_a": 0.7,
            "p_b": 0.1,
            "p_c": 0.1,
            "p_d": 0.1,
        }
    )


def test_clustered_bootstrap_covers_the_true_mean_and_is_wider_than_naive():
    rng = np.random.default_rng(11)
    hits, widths, naive_widths = 0, [], []
    trials = 60
    for t in range(trials):
        frame = _speaker_frame(rng)
        ci = stats.bootstrap_ci(frame, metrics=["js"], params=PARAMS, n_resamples=300, seed=t).iloc[0]
        hits += ci["ci_low"] <= 0.4 <= ci["ci_high"]
        widths.append(ci["ci_high"] - ci["ci_low"])
        naive = stats.bootstrap_ci(
            frame.assign(speaker=""), metrics=["js"], params=PARAMS, n_resamples=300, seed=t
        ).iloc[0]
        naive_widths.append(naive["ci_high"] - naive["ci_low"])
    # 95% nominal; percentile intervals over 10 clusters run a little short: accept 80-100%
    assert hits / trials >= 0.8
    # utterances of one speaker are correlated: ignoring that understates the uncertainty
    assert np.mean(widths) > 1.5 * np.mean(naive_widths)


# --------------------------------------------------------------------------- Holm and paired tests


def test_holm_matches_statsmodels_and_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    got = stats.holm(p)
    np.testing.assert_allclose(got[:4], multipletests(p[:4], method="holm")[1])
    assert np.isnan(got[4])
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 with a running maximum
    np.testing.assert_allclose(got[:4], [0.03, 0.06, 0.06, 0.02])


def test_holm_equals_statsmodels_bit_for_bit_with_ties_and_large_families():
    rng = np.random.default_rng(8)
    for m in (1, 2, 3, 17, 400):
        p = rng.uniform(0, 0.2, m).round(3)  # rounded: many ties
        p[rng.random(m) < 0.1] = 1.0
        np.testing.assert_array_equal(stats.holm(p), multipletests(p, method="holm")[1])


def test_rank_biserial_hand_cases():
    assert stats.rank_biserial(np.array([1.0, 2, 3])) == 1
    assert stats.rank_biserial(np.array([-1.0, -2])) == -1
    assert stats.rank_biserial(np.array([1.0, 2, -3])) == pytest.approx(0)
    assert stats.rank_biserial(np.array([1.0, -2, 3, 0])) == pytest.approx((1 + 3 - 2) / 6)


def test_paired_comparisons_against_scipy(scores):
    table = stats.paired_comparisons(scores, metrics=["js", "correct"], params=PARAMS)
    assert set(table["strategy"]) == {"bon", "w-bon"}
    row = table[(table["model"] == "small") & (table["strategy"] == "w-bon") & (table["metric"] == "js")].iloc[0]
    base = scores[(scores["model"] == "small") & (scores["strategy"] == "baseline")].set_index("utt_id")["js"]
    cell = scores[(scores["model"] == "small") & (scores["strategy"] == "w-bon")].set_index("utt_id")["js"]
    d = (cell - base.loc[cell.index]).to_numpy()
    assert row["n_pairs"] == len(d)
    assert row["mean_diff"] == pytest.approx(d.mean())
    assert row["gain"] == pytest.approx(-d.mean())  # lower JS is better
    assert row["p_wilcoxon"] == pytest.approx(wilcoxon(d).pvalue)
    assert row["diff_ci_low"] <= row["mean_diff"] <= row["diff_ci_high"]
    # the synthetic weighted strategy mixes in more of the human distribution: clearly better
    # utterance by utterance ...
    assert row["gain"] > 0 and row["p_permutation_unclustered"] < 0.01
    # ... and the test that decides is clustered by speaker: the exact sign-flip p-value over
    # every pattern of whole speakers' summed differences, by enumeration
    spk = scores[(scores["model"] == "small") & (scores["strategy"] == "w-bon")].set_index("utt_id")["speaker"]
    sums = pd.Series(d, index=spk.loc[cell.index].to_numpy()).groupby(level=0).sum().to_numpy()
    flips = np.array(list(itertools.product((1, -1), repeat=len(sums))))
    expected = np.mean(np.abs(flips @ sums) >= abs(sums.sum()) * (1 - 1e-10))
    assert row["n_clusters"] == len(sums) and row["p_permutation"] == pytest.approx(expected)
    assert row["min_p"] == pytest.approx(2 / 2 ** len(sums)) and row["p_permutation"] >= row["min_p"]


def test_paired_comparisons_say_where_the_normal_approximation_served(scores):
    params = {**PARAMS, "stats": {**PARAMS.get("stats", {}), "sign_flip_normal_from": 1}}
    table = stats.paired_comparisons(scores, metrics=["js"], params=params)
    tested = table[table["n_pairs"] > 0]
    assert tested["note"].str.contains("clustered and unclustered sign-flip p by the normal approximation").all()
    assert (tested["min_p"] == 0.0).all()
    drawn = stats.paired_comparisons(scores, metrics=["js"], params=PARAMS)
    assert not drawn["note"].str.contains("normal approximation").any()
    # Holm within a family never lowers a p-value
    assert (table["p_permutation_holm"] >= table["p_permutation"] - 1e-12).all()
    fam = table[table["family"] == "demo/small/js"]
    np.testing.assert_allclose(fam["p_wilcoxon_holm"], multipletests(fam["p_wilcoxon"], method="holm")[1])
    corr = table[(table["metric"] == "correct")]
    assert (corr["n_dropped"] == scores.groupby("utt_id")["majority_tie"].first().sum()).all()


def test_identical_strategy_is_not_different(scores):
    base = scores[scores["strategy"] == "baseline"]
    twin = base.assign(strategy="copy")
    table = stats.paired_comparisons(pd.concat([base, twin]), metrics=["js"], params=PARAMS)
    assert (table["p_permutation"] == 1).all() and (table["mean_diff"] == 0).all()
    assert table["note"].str.contains("every pair is equal").all()


def test_permutation_test_null_calibration():
    """Under no difference the permutation p-value is roughly uniform: few false positives."""
    rng = np.random.default_rng(3)
    rejections = 0
    for t in range(40):
        n = 30
        base = rng.normal(0.4, 0.1, n)
        frame = pd.DataFrame(
            {
                "dataset": "d",
                "model": "m",
                "utt_id": np.tile([f"u{i}" for i in range(n)], 2),
                "speaker": "",
                "strategy": ["baseline"] * n + ["x"] * n,
                "budget": 1,
                "js": np.r_[base, base + rng.normal(0, 0.05, n)],
            }
        )
        p = stats.paired_comparisons(frame, metrics=["js"], params=PARAMS, n_resamples=200, seed=t)["p_permutation"]
        rejections += int(p.iloc[0] < 0.05)
    assert rejections <= 6


def test_missing_baseline_is_reported_not_raised(scores):
    table = stats.paired_comparisons(scores[scores["strategy"] != "baseline"], metrics=["js"], params=PARAMS)
    assert table["note"].str.contains("no 'baseline' rows").all()


# --------------------------------------------------------------------------- planted interaction


def _simulate(
    n_utts=120,
    seed=0,
    capacities=(0.5, 2.0, 7.0, 30.0),
    strategies=("baseline", "tts"),
    interaction=0.06,
    speakers=True,
):
    """JS distance with a planted log-capacity × entropy interaction (and a planted correctness one)."""
    rng = np.random.default_rng(seed)
    rows = []
    h = rng.uniform(0, 2, n_utts)
    u = rng.normal(0, 0.03, n_utts)
    for i in range(n_utts):
        for cap in capacities:
            lc = np.log10(cap)
            for s in strategies:
                tts = float(s != "baseline")
                js = 0.4 - 0.05 * lc + 0.1 * h[i] - 0.03 * tts + interaction * lc * h[i] + u[i] + rng.normal(0, 0.03)
                logit = 0.3 + 1.0 * lc - 0.8 * h[i] + 0.3 * tts + 0.8 * lc * (h[i] - 1)
                rows.append(
                    {
                        "dataset": "sim",
                        "model": f"m{cap}",
                        "strategy": s,
                        "budget": 1,
                        "utt_id": f"u{i}",
                        "speaker": f"s{i % 15}" if speakers else "",
                        "entropy_bits": h[i],
                        "params_b": cap,
                        "js": js,
                        "correct": float(rng.random() < 1 / (1 + np.exp(-logit))),
                    }
                )
    return pd.DataFrame(rows)


def test_mixed_model_recovers_planted_capacity_by_entropy_interaction():
    table = stats.interaction_model(_simulate(), PARAMS).set_index("term")
    row = table.loc["log10_capacity × entropy"]
    assert row["estimate"] > 0 and row["p"] < 1e-3
    assert row["ci_low"] <= 0.06 <= row["ci_high"]
    assert table.loc["strategy[tts]", "estimate"] == pytest.approx(-0.03, abs=0.01)
    # a term with no planted effect should not look like one
    null = table.loc["log10_capacity × strategy[tts] × entropy"]
    assert null["ci_low"] <= 0 <= null["ci_high"]
    assert {"var(speaker)", "var(utterance)", "var(residual)"} <= set(table.index)
    # no interaction planted: the estimate is small and not significant
    flat = stats.interaction_model(_simulate(interaction=0.0, seed=1), PARAMS).set_index("term")
    assert flat.loc["log10_capacity × entropy", "p"] > 0.01


def test_gee_recovers_planted_interaction_on_correctness():
    table = stats.correctness_model(_simulate(n_utts=200, seed=2), PARAMS).set_index("term")
    row = table.loc["log10_capacity × entropy"]
    assert row["estimate"] > 0 and row["p"] < 0.01
    assert table.loc["entropy", "estimate"] < 0
    assert "log-odds" in row["note"]


def test_degenerate_designs_give_notes_not_crashes():
    one_model = _simulate(n_utts=30, capacities=(7.0,))
    table = stats.interaction_model(one_model, PARAMS)
    assert "one model capacity only" in table["note"].iloc[0]
    assert not table["term"].str.contains("capacity").any()
    one_strategy = _simulate(n_utts=30, strategies=("baseline",))
    table = stats.interaction_model(one_strategy, PARAMS)
    assert "one strategy only" in table["note"].iloc[0]
    assert table.set_index("term").loc["log10_capacity × entropy", "estimate"] > 0
    no_speakers = stats.interaction_model(_simulate(n_utts=30, speakers=False), PARAMS)
    assert "speaker not identifiable" in no_speakers["note"].iloc[0]
    small_limit = {**PARAMS, "stats": {**PARAMS["stats"], "speaker_component_max_utterances": 20}}
    big = stats.interaction_model(_simulate(n_utts=30), small_limit)
    assert "speaker variance component skipped for size" in big["note"].iloc[0]
    assert "var(speaker)" not in set(big["term"])
    all_right = _simulate(n_utts=20).assign(correct=1.0)
    table = stats.correctness_model(all_right, PARAMS)
    assert table["term"].tolist() == ["(not fitted)"] and "no variation" in table["note"].iloc[0]
    empty = stats.interaction_model(one_model.iloc[:0], PARAMS)
    assert empty["term"].tolist() == ["(not fitted)"]


def test_models_run_on_real_scores(scores):
    table = stats.interaction_model(scores, PARAMS)
    assert "log10_capacity × entropy" in set(table["term"])
    assert "one budget per strategy (max)" in table["note"].iloc[0]
    gee = stats.correctness_model(scores, PARAMS)
    assert len(gee) >= 1 and gee["note"].iloc[0]
