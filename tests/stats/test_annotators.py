"""Annotator-count sensitivity on a planted corpus whose every quantity is computed by hand, the
rater draws' own properties, and CREMA-D's real vote tables where ``../shared`` has them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from ambiemo.stats import annotators as A

LABELS = ["neutral", "happy", "angry", "sad"]


def planted(n=3000):
    """Every utterance: 3 raters, votes (2, 1, 0, 0). 'baseline' answers (1, 0, 0, 0); 'cot' answers
    the all-raters soft label (2/3, 1/3, 0, 0), so it wins with all raters by a known margin."""
    votes = np.tile([2.0, 1.0, 0.0, 0.0], (n, 1))
    ids = [f"u{i}" for i in range(n)]
    frames = []
    for strategy, q in (("baseline", [1, 0, 0, 0]), ("cot", [2 / 3, 1 / 3, 0, 0])):
        f = pd.DataFrame({"dataset": "planted", "model": "m", "strategy": strategy, "budget": 1, "utt_id": ids})
        for j, x in enumerate(LABELS):
            f[f"p_{x}"] = q[j]
        frames.append(f)
    return votes, ids, pd.concat(frames, ignore_index=True)


def js(a, b):
    return float(jensenshannon(np.r_[a, 0, 0], np.r_[b, 0, 0]))


def h(p):
    return -sum(x * math.log2(x) for x in p if x > 0)


def test_planted_corpus_curve_as_computed_by_hand():
    votes, ids, scores = planted()
    raters, frac = A.raters_from_counts(votes)
    assert not frac.any()
    t = A.annotator_curve(raters, ids, scores, "planted", LABELS, repeats=10, seed=1)
    get = t.set_index(["quantity", "model", "strategy", "k"])["mean"]
    one, two, mix = [1, 0], [0, 1], [2 / 3, 1 / 3]
    # k = 1: one rater, label 0 with probability 2/3. k = 2: both label 0 w.p. 1/3, else (1/2, 1/2).
    e_cot = {1: 2 / 3 * js(one, mix) + 1 / 3 * js(two, mix), 2: 1 / 3 * js(one, mix) + 2 / 3 * js([0.5, 0.5], mix)}
    e_base = {1: 1 / 3 * js(two, one), 2: 2 / 3 * js([0.5, 0.5], one)}
    for k in (1, 2):
        assert get["js", "m", "cot", k] == pytest.approx(e_cot[k], abs=0.01)
        assert get["js", "m", "baseline", k] == pytest.approx(e_base[k], abs=0.01)
    assert get["js", "m", "cot", 3] == pytest.approx(0.0, abs=1e-12)
    # So the ranking flips at k = 1 (0.43 vs 0.28) and holds from k = 2 (0.20 vs 0.31).
    assert [get["tau", "", "", k] for k in (1, 2, 3)] == [-1.0, 1.0, 1.0]
    assert [get["comparisons_agree", "", "", k] for k in (1, 2, 3)] == [0.0, 1.0, 1.0]
    assert A.stable_from(t) == {"planted": 2}
    # Entropy: 0 bits; 2/3 bit; H(2/3, 1/3). Split-half ceiling: k = 2 halves differ w.p. 2/3;
    # k = 3: the first rater alone against the other two.
    assert get["entropy_bits", "", "", 1] == 0.0
    assert get["entropy_bits", "", "", 2] == pytest.approx(2 / 3, abs=0.01)
    assert get["entropy_bits", "", "", 3] == pytest.approx(h(mix), abs=1e-12)
    assert np.isnan(get["ceiling_js", "", "", 1])
    assert get["ceiling_js", "", "", 2] == pytest.approx(2 / 3 * js(one, two), abs=0.01)
    assert get["ceiling_js", "", "", 3] == pytest.approx(2 / 3 * js(one, [0.5, 0.5]) + 1 / 3 * js(two, one), abs=0.01)
    ci = t.set_index(["quantity", "model", "strategy", "k"]).loc[("js", "m", "cot", 1)]
    assert ci["ci_low"] <= ci["mean"] <= ci["ci_high"] and ci["repeats"] == 10


def test_draws_are_without_replacement_and_nested():
    rng = np.random.default_rng(0)
    counts = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0], [1.0, 0.0, 0.0]])
    raters, _ = A.raters_from_counts(counts)
    d = A.Draws(raters, rng)
    np.testing.assert_array_equal(d.votes(10), counts)  # all raters, whatever k beyond them
    for k in (1, 2, 3):
        v = d.votes(k)
        assert (v <= counts).all() and (v.sum(axis=1) == np.minimum(k, counts.sum(axis=1))).all()
        assert (d.votes(k + 1) >= v).all()  # nested


def test_fractional_counts_are_left_out_and_counted():
    raters, frac = A.raters_from_counts(np.array([[1.5, 1.5], [2.0, 1.0]]))
    assert frac.tolist() == [True, False] and np.isnan(raters[0]).all()


def test_ratings_table_gives_the_same_raters_as_counts():
    ratings = pd.DataFrame(
        {
            "utt_id": ["a", "a", "a", "b"],
            "rater": ["r1", "r2", "r3", "r1"],
            "label": ["neutral", "neutral", "sad", "happy"],
            "weight": 1.0,
            "kind": "primary",
        }
    )
    raters = A.raters_from_table(ratings, ["a", "b"], LABELS)
    np.testing.assert_array_equal(np.nan_to_num(raters).sum(axis=1), [[2, 0, 0, 1], [0, 1, 0, 0]])


def test_crema_d_real_votes_entropy_grows_and_ceiling_falls(shared_dir):
    root = shared_dir / "data" / "crema-d" / "processedResults" / "tabulatedVotes.csv"
    if not root.is_file():
        pytest.skip("shared/data/crema-d has no processedResults/tabulatedVotes.csv")
    table = pd.read_csv(root)
    voice = table[table.iloc[:, 0] // 100000 == 1]  # the row index // 100000 is 1 for voice-only ratings
    votes = voice[["A", "D", "F", "H", "N", "S"]].to_numpy(dtype=float)[:600]
    raters, frac = A.raters_from_counts(votes)
    ids = [f"c{i}" for i in range(len(votes))]
    empty = pd.DataFrame(columns=["dataset", "model", "strategy", "budget", "utt_id", *[f"p_{x}" for x in "ADFHNS"]])
    t = A.annotator_curve(raters, ids, empty, "crema-d", list("ADFHNS"), repeats=3, seed=0)
    ent = t[t["quantity"] == "entropy_bits"].set_index("k")["mean"]
    ceil = t[t["quantity"] == "ceiling_js"].set_index("k")["mean"].dropna()
    assert ent.is_monotonic_increasing and ent.iloc[0] == 0.0
    assert ceil.iloc[-1] < ceil.iloc[0]  # more raters per half, closer halves
