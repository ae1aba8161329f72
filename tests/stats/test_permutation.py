"""Cluster-aware paired tests: exact by hand, against scipy, and nominal under simulated speaker effects."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from ambiemo.stats import permutation as P
from ambiemo.stats.power import power_table


def test_exact_sign_flip_by_hand():
    # sums (1, 2): patterns give 3, -1, 1, -3; |T*| >= 3 for 2 of 4.
    p, exact = P.sign_flip_pvalues(np.array([[1.0, 2.0]]))
    assert exact and p[0] == pytest.approx(0.5)
    # sums (1, 2, 4): only ±7 reach |7|: 2 of 8.
    p, _ = P.sign_flip_pvalues(np.array([[1.0, 2.0, 4.0]]))
    assert p[0] == pytest.approx(0.25)


def test_unclustered_matches_scipy_paired_permutation_test():
    rng = np.random.default_rng(4)
    x, y = rng.normal(0.3, 1, 9), rng.normal(0, 1, 9)
    ref = sps.permutation_test(
        (x, y), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples", vectorized=True
    )
    p, exact = P.sign_flip_pvalues((x - y)[None, :])
    assert exact and p[0] == pytest.approx(ref.pvalue)


def test_false_positive_rate_with_speaker_effects():
    start = time.perf_counter()
    rates = P.false_positive_rates(n_datasets=2000, n_speakers=10, per_speaker=20, seed=11)
    print(rates, f"{time.perf_counter() - start:.1f}s")
    assert rates["n_datasets"] >= 500
    assert rates["clustered"] <= 0.06
    assert rates["unclustered"] > 0.06  # treating utterances as independent is anti-conservative


def _scores():
    rng = np.random.default_rng(0)
    rows = []
    for spk in range(8):
        shift = rng.normal(0, 0.1)
        for i in range(6):
            base = rng.uniform(0.3, 0.6)
            utt = f"s{spk}u{i}"
            rows.append(("d", "m", "baseline", 1, utt, f"s{spk}", base))
            rows.append(("d", "m", "bon", 4, utt, f"s{spk}", base - 0.05 + shift))  # lower JS is better
            rows.append(("d", "m", "cot", 1, utt, f"s{spk}", base + shift))
    df = pd.DataFrame(rows, columns=["dataset", "model", "strategy", "budget", "utt_id", "speaker", "js"])
    df.loc[(df["utt_id"] == "s0u0") & (df["strategy"] == "cot"), "js"] = np.nan
    return df


def test_clustered_comparisons_table():
    scores = _scores()
    out = P.clustered_comparisons(scores, ["js"], n_resamples=500).set_index("strategy")
    assert list(out.columns) == P.COLUMNS[:2] + P.COLUMNS[3:]
    bon, cot = out.loc["bon"], out.loc["cot"]
    assert bon["n_clusters"] == 8 and bon["exact"]  # 2^8 = 256 patterns <= 500
    assert bon["gain"] == pytest.approx(-bon["mean_diff"]) and bon["n_dropped"] == 0 and cot["n_dropped"] == 1
    # Holm over the family of two: the smaller p doubles, the larger is at least it.
    ps = np.sort(out["p_clustered"].to_numpy())
    np.testing.assert_allclose(np.sort(out["p_clustered_holm"]), [min(1, 2 * ps[0]), max(min(1, 2 * ps[0]), ps[1])])
    # Row order does not change a number.
    again = P.clustered_comparisons(scores.sample(frac=1, random_state=2), ["js"], n_resamples=500)
    pd.testing.assert_frame_equal(again.set_index("strategy"), out)


def test_errors_name_the_column():
    with pytest.raises(KeyError, match="speaker"):
        P.clustered_comparisons(_scores().drop(columns="speaker"), ["js"])


def test_reference_rows_never_enter_a_comparison_with_a_baseline():
    from ambiemo.stats import paired_comparisons

    rng = np.random.default_rng(1)
    rows = []
    for model in ("m", "reference"):
        for strategy in ("baseline", "bon", "uniform"):
            for i in range(12):
                rows.append(
                    {
                        "dataset": "d",
                        "model": model,
                        "strategy": strategy,
                        "budget": 1,
                        "utt_id": f"u{i}",
                        "speaker": f"s{i % 4}",
                        "js": rng.random(),
                    }
                )
    scores = pd.DataFrame(rows)
    # a reference model with a strategy named "baseline" still has no baseline of its own
    assert set(P.clustered_comparisons(scores)["model"]) == {"m"}
    assert set(power_table(scores)["model"]) == {"m"}
    paired = paired_comparisons(scores, {"stats": {"paired_metrics": ["js"], "permutation_resamples": 100}})
    assert set(paired["model"]) == {"m"} and len(paired) == 2


def _null_scores(n_speakers: int, per_speaker: int, seed: int, speakers: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for strategy in ("baseline", "bon"):
        for s in range(n_speakers):
            effect = rng.normal(0, 0.1)
            for j in range(per_speaker):
                rows.append(
                    {
                        "dataset": "d",
                        "model": "m",
                        "strategy": strategy,
                        "budget": 1,
                        "utt_id": f"s{s}-u{j}",
                        "speaker": f"s{s}" if speakers else "",
                        "js": 0.4 + effect + rng.normal(0, 0.05),
                    }
                )
    return pd.DataFrame(rows)


def test_paired_p_values_do_not_depend_on_row_order():
    # 20 speakers: past exact enumeration, so the sign patterns are drawn; the clusters and pairs they
    # are drawn for must not follow the row order
    from ambiemo.stats import paired_comparisons

    scores = _null_scores(20, 6, seed=3)
    params = {"stats": {"paired_metrics": ["js"], "permutation_resamples": 999}}
    cols = ["p_permutation", "p_permutation_unclustered", "p_wilcoxon", "diff_ci_low", "diff_ci_high"]
    first = paired_comparisons(scores, params)[cols]
    for seed in (1, 2):
        shuffled = scores.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        pd.testing.assert_frame_equal(paired_comparisons(shuffled, params)[cols], first)
        table = power_table(shuffled)
        assert table["mde"].iloc[0] == pytest.approx(power_table(scores)["mde"].iloc[0], rel=1e-12)


def test_power_clusters_like_the_paired_table_when_speakers_are_unknown():
    # no speaker ids: each utterance is its own cluster, in the power table as in the paired tests and CIs
    from ambiemo.stats import paired_comparisons

    scores = _null_scores(4, 10, seed=5, speakers=False)
    paired = paired_comparisons(scores, {"stats": {"paired_metrics": ["js"], "permutation_resamples": 99}})
    row = power_table(scores).iloc[0]
    assert row["n_clusters"] == paired["n_clusters"].iloc[0] == 40
    assert np.isfinite(row["mde"]) and row["icc"] == 0.0


@pytest.mark.parametrize("shape", [(3, 2001), (4, 7), (1, 1), (2, 3), (0, 5), (131, 16000)])
def test_sign_flips_are_choices_draws_and_leave_the_generator_where_choice_does(shape):
    for seed in range(3):
        ref, fast = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(3):  # odd counts leave half a 64-bit output for the next call
            expected = ref.choice((1.0, -1.0), size=shape) == -1.0
            np.testing.assert_array_equal(P.sign_flips(fast, *shape), expected.astype(float))
            assert fast.bit_generator.state == ref.bit_generator.state
        assert fast.random() == ref.random()


def test_normal_sign_flip_matches_the_exact_binomial_on_lattice_differences():
    # differences of correctness: T* = 2K − m over the m non-zero pairs, K ~ Binomial(m, 1/2), exactly
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.02, 0.04, 0.06):
        d = rng.choice((-1.0, 0.0, 1.0), size=6000, p=(0.15 - shift / 2, 0.7, 0.15 + shift / 2))
        m, t = int((d != 0).sum()), abs(d.sum())
        exact = sps.binom.cdf((m - t) / 2, m, 0.5) + sps.binom.sf((m + t) / 2 - 1, m, 0.5)
        assert P.sign_flip_normal(d)[0] == pytest.approx(min(1.0, exact), abs=0.003)


@pytest.mark.parametrize("kind", ["normal", "skewed", "heavy"])
def test_normal_sign_flip_agrees_with_many_random_patterns(kind):
    rng = np.random.default_rng(5)
    n = 5000
    base = {
        "normal": rng.normal(0, 1, n),
        "skewed": rng.beta(0.5, 4, n) - rng.beta(0.5, 4, n),  # differences of JS-like distances
        "heavy": rng.standard_t(3, n),
    }[kind]
    for effect in (0.0, 0.02, 0.035):
        d = base + effect * base.std()
        approx = P.sign_flip_normal(d)[0]
        monte_carlo, _ = P.sign_flip_pvalues(d[None, :], 40_000, np.random.default_rng(7))
        assert approx == pytest.approx(monte_carlo[0], abs=0.01)  # 4 standard errors of 40,000 draws


def test_paired_test_takes_the_normal_approximation_from_the_stated_size():
    rng = np.random.default_rng(2)
    d, clusters = rng.normal(0.05, 1, 300), np.repeat(np.arange(30), 10)
    drawn = P.paired_test(d, clusters, n_resamples=500, normal_from=301)
    assert drawn["normal"] == [] and drawn["min_p"] == pytest.approx(1 / 501)
    unclustered = P.paired_test(d, clusters, n_resamples=500, normal_from=300)
    assert unclustered["normal"] == ["unclustered"]
    assert unclustered["p_clustered"] == drawn["p_clustered"]
    assert unclustered["p_unclustered"] == P.sign_flip_normal(d)[0]
    both = P.paired_test(d, clusters, n_resamples=500, normal_from=30)
    assert both["normal"] == ["clustered", "unclustered"] and both["min_p"] == 0.0
    assert both["p_clustered"] == P.sign_flip_normal(P.cluster_sums(d, clusters))[0]
