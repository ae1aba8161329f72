"""Power against statsmodels (no clustering), a hand-computed ICC, and simulation (clustering)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.power import TTestPower

from ambiemo.stats import power as PW


def test_icc_by_hand():
    # Clusters (1, 3) and (5, 7): MSB = 16, MSW = 2, n0 = 2 -> (16 - 2) / (16 + 2).
    assert PW.icc_anova(np.array([1.0, 3, 5, 7]), np.array(["a", "a", "b", "b"])) == pytest.approx(14 / 18)
    assert PW.icc_anova(np.arange(5.0), np.arange(5)) == 0.0


@pytest.mark.parametrize("n", [12, 60, 400])
def test_unclustered_matches_statsmodels(n):
    ref = TTestPower()
    assert PW.t_power(0.3, n, n - 1) == pytest.approx(ref.power(effect_size=0.3, nobs=n, alpha=0.05), rel=1e-6)
    assert PW.minimum_detectable_effect(n, n - 1) == pytest.approx(
        ref.solve_power(nobs=n, alpha=0.05, power=0.8), rel=1e-5
    )
    needed = math.ceil(ref.solve_power(effect_size=0.25, alpha=0.05, power=0.8))
    assert PW.n_needed(0.25 * 2.0, sd=2.0) == needed


def test_clustered_mde_holds_by_simulation():
    rng = np.random.default_rng(7)
    n_speakers, size, icc, sd = 20, 10, 0.3, 1.0
    effect = PW.minimum_detectable_effect(n_speakers * size / (1 + (size - 1) * icc), n_speakers - 1)
    sims = 4000
    u = rng.normal(0, math.sqrt(icc) * sd, (sims, n_speakers, 1))
    d = effect * sd + u + rng.normal(0, math.sqrt(1 - icc) * sd, (sims, n_speakers, size))
    p = sps.ttest_1samp(d.mean(axis=2), 0.0, axis=1).pvalue  # the test on speaker means
    assert (p < 0.05).mean() == pytest.approx(0.8, abs=0.025)
    # Ignoring the clustering would claim a gain less than half as large is detectable.
    assert PW.minimum_detectable_effect(n_speakers * size, n_speakers * size - 1) < effect / 1.8


def test_power_table_and_n_needed_with_clusters():
    rng = np.random.default_rng(1)
    rows = []
    for s in range(12):
        shift = rng.normal(0, 0.05)
        for i in range(8):
            b = rng.uniform(0.3, 0.6)
            rows += [
                ("d", "m", "baseline", 1, f"{s}-{i}", f"s{s}", b),
                ("d", "m", "bon", 4, f"{s}-{i}", f"s{s}", b + shift),
            ]
    scores = pd.DataFrame(rows, columns=["dataset", "model", "strategy", "budget", "utt_id", "speaker", "js"])
    row = PW.power_table(scores, ["js"], gains={"js": 0.02}).iloc[0]
    assert row["n"] == 96 and row["n_clusters"] == 12 and row["icc"] > 0.9
    assert row["design_effect"] == pytest.approx(1 + 7 * row["icc"])
    assert row["n_needed"] % 8 == 0  # whole speakers of the observed size
    # The stated gain needs n_needed utterances: one speaker fewer falls short of 80%.
    c = row["n_needed"] // 8
    eff = 0.02 / row["sd"]
    de = row["design_effect"]
    assert (
        PW.t_power(eff, c * 8 / de, min(c * 8 / de, c) - 1)
        >= 0.8
        > PW.t_power(eff, (c - 1) * 8 / de, min((c - 1) * 8 / de, c - 1) - 1)
    )


def test_no_variance_gives_no_detectable_gain():
    # A strategy that answers exactly as its baseline: every paired difference is 0, so the MDE of
    # delta * sd would read 0 ("any gain is detectable"); it must be missing, with the reason.
    row = PW.power_row(np.zeros(12), np.repeat(["a", "b", "c"], 4), gain=0.02)
    assert math.isnan(row["mde"]) and row["n_needed"] is None and "no variance" in row["note"]
    ok = PW.power_row(np.array([0.1, -0.2, 0.05, 0.3, 0.0, -0.1]), np.arange(6), gain=0.02)
    assert ok["mde"] > 0 and ok["note"] == ""
