"""One gain: the summaries, the paired tests, the gains table (figure 3) and power agree on it."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import synthetic as S  # noqa: E402

from ambiemo import scoring  # noqa: E402
from ambiemo.scoring.gains import direction  # noqa: E402
from ambiemo.stats import bootstrap as B  # noqa: E402
from ambiemo.stats.gains import gain_table  # noqa: E402
from ambiemo.stats.paired import paired_comparisons  # noqa: E402
from ambiemo.stats.power import power_table  # noqa: E402

PARAMS = {**S.PARAMS, "seed": 11}


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    man = S.manifest_df(n=60, n_speakers=6, seed=8)
    cells = S.cells(man, strategies=("baseline", "bon"), models=("small", "large"), budgets={"bon": [2, 4]})
    return scoring.score_predictions(man, [c.drop(columns="candidate_records") for c in cells], PARAMS)


def _hand_gain(scores, model, budget, metric, level="all"):
    """Baseline minus strategy (or strategy minus baseline) by hand, on the utterances both have."""
    g = scores[scores["model"] == model]
    base = g[g["strategy"] == "baseline"].set_index("utt_id")
    cell = g[(g["strategy"] == "bon") & (g["budget"] == budget)].set_index("utt_id")
    d = (cell[metric] - base[metric]).dropna()
    if level != "all":
        d = d[cell.loc[d.index, "ambiguity"] == level]
    return (1 if metric in ("bc", "correct") else -1) * d.mean()


def test_directions():
    assert direction("js") == -1 and direction("bc") == 1 and direction("correct") == 1 and direction("ece") == -1
    with pytest.raises(KeyError, match="no direction"):
        direction("nonsense")


def test_gain_table_is_the_hand_computed_paired_gain(scores):
    table = gain_table(
        scores,
        {**PARAMS, "scoring": {**PARAMS.get("scoring", {}), "bootstrap_resamples": 200}},
        metrics=["js", "correct"],
    )
    for row in table.itertuples():
        ref = _hand_gain(scores, row.model, row.budget, row.metric, row.ambiguity)
        assert row.gain == pytest.approx(ref, abs=1e-12)
        assert row.ci_low <= row.gain + 1e-12 <= row.ci_high + 2e-12
    # for a mean metric the paired gain over every utterance is the summary's gain
    summary = scoring.summarise(scores, params=PARAMS)
    point = scoring.gain_over_baseline(summary, "js").set_index(["model", "strategy", "budget", "ambiguity"])["gain"]
    js = table[table["metric"] == "js"].set_index(["model", "strategy", "budget", "ambiguity"])["gain"]
    np.testing.assert_allclose(js, point.loc[js.index], atol=1e-12)


def test_paired_interval_is_the_gains_tables_all_row(scores):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paired = paired_comparisons(scores, PARAMS, metrics=["js", "bc"])
    gains = gain_table(scores, PARAMS, metrics=["js", "bc"])
    gains = gains[gains["ambiguity"] == "all"].set_index(["model", "budget", "metric"])
    for row in paired.itertuples():
        g = gains.loc[(row.model, row.budget, row.metric)]
        assert row.gain == pytest.approx(g["gain"], abs=1e-12)
        sign = direction(row.metric)
        lo, hi = sorted((sign * row.diff_ci_low, sign * row.diff_ci_high))
        assert (lo, hi) == pytest.approx((g["ci_low"], g["ci_high"]), abs=1e-12)
    # and the interval is the speaker bootstrap of the mean difference, computed row by row
    cell = scores[(scores["model"] == "small") & (scores["strategy"] == "bon") & (scores["budget"] == 2)]
    base = scores[(scores["model"] == "small") & (scores["strategy"] == "baseline")].set_index("utt_id")
    cell = cell.set_index("utt_id").sort_index()
    d = (cell["js"] - base.loc[cell.index, "js"]).to_numpy()
    codes, _ = B.clusters(cell.reset_index())
    rng = B._rng(11, ("demo", "small", "bon", 2, "js"))
    w = B.resample_weights(codes, 200, rng)
    low, high = np.quantile(w @ d / w.sum(axis=1), [0.025, 0.975])
    row = paired[(paired["model"] == "small") & (paired["budget"] == 2) & (paired["metric"] == "js")].iloc[0]
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((low, high), abs=1e-12)


def test_power_reads_the_same_pairs(scores):
    power = power_table(scores, ["js"])
    for row in power.itertuples():
        assert row.n == len(scores[(scores["model"] == row.model) & (scores["strategy"] == "baseline")])
