"""Reference predictors and the human ceiling against hand-computed cases (scipy as the JS reference)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from ambiemo.inference.predictions import write_predictions
from ambiemo.scoring import references as R

LABELS = ["angry", "sad"]


def _manifest(rows):
    """rows: (utt_id, speaker, votes_angry, votes_sad)."""
    df = pd.DataFrame(rows, columns=["utt_id", "speaker", "votes_angry", "votes_sad"])
    df["dataset"] = "toy"
    n = df[["votes_angry", "votes_sad"]].sum(axis=1)
    df["p_angry"], df["p_sad"] = df["votes_angry"] / n, df["votes_sad"] / n
    return df


def _ratings(rows):
    """rows: (utt_id, rater, label, weight[, kind, self_eval])."""
    full = [(*r, "primary", False)[:6] if len(r) == 4 else r for r in rows]
    df = pd.DataFrame(full, columns=["utt_id", "rater", "label", "weight", "kind", "self_eval"])
    df["category"] = df["label"].fillna("other")
    return df


def test_uniform_and_predictions_table_form(tmp_path):
    man = _manifest([("u1", "A", 3, 0), ("u2", "B", 1, 2)])
    table = R.reference_predictions(man, LABELS)
    assert sorted(table["strategy"].unique()) == sorted(R.DISTRIBUTION_REFERENCES)
    uni = table[table["strategy"] == "uniform"]
    np.testing.assert_allclose(uni[["p_angry", "p_sad"]].to_numpy(), 0.5)
    # The scoring stage reads references like a model: the table passes the predictions schema.
    prov = {"model": "reference"}
    write_predictions(table, tmp_path / "ref.parquet", labels=LABELS, label_set="toy", provenance=prov)


def test_label_prior_leaves_the_speaker_out():
    # A: (1,0) twice; B: (0,1); C: (0.5,0.5). By hand: A -> mean(B, C) = (0.25, 0.75);
    # B -> mean(A, A, C) = (5/6, 1/6); C -> mean(A, A, B) = (2/3, 1/3).
    man = _manifest([("a1", "A", 2, 0), ("a2", "A", 1, 0), ("b1", "B", 0, 3), ("c1", "C", 1, 1)])
    q = R.label_prior(man, LABELS)
    np.testing.assert_allclose(q, [[0.25, 0.75], [0.25, 0.75], [5 / 6, 1 / 6], [2 / 3, 1 / 3]])


def test_label_prior_unknown_speaker_is_its_own_cluster_and_one_speaker_is_an_error():
    man = _manifest([("u1", "", 1, 0), ("u2", "", 0, 1), ("u3", "A", 1, 1)])
    q = R.label_prior(man, LABELS)
    np.testing.assert_allclose(q[0], [0.25, 0.75])  # mean of u2 and u3
    with pytest.raises(ValueError, match="one speaker"):
        R.label_prior(_manifest([("u1", "A", 1, 0), ("u2", "A", 0, 1)]), LABELS)


def test_hard_oracle_one_hot_first_tied_label_and_ties_score_alike():
    labels = ["a", "b", "c"]
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.4, 0.4 + 0.2]])
    man = pd.DataFrame({"utt_id": ["x", "y", "z"], "speaker": "S", "dataset": "toy"})
    for j, lab in enumerate(labels):
        man[f"p_{lab}"] = p[:, j]
    np.testing.assert_array_equal(R.hard_oracle(man, labels), [[1, 0, 0], [0, 0, 1], [0, 0, 1]])
    # The module doc's claim: for a tie, any tied one-hot scores the same JS (scipy computes it).
    assert jensenshannon(p[0], [1, 0, 0]) == pytest.approx(jensenshannon(p[0], [0, 1, 0]))


THREE = [("u", "r1", "angry", 1.0), ("u", "r2", "angry", 1.0), ("u", "r3", "sad", 1.0)]


def test_human_loo_by_hand():
    out = R.human_loo(_ratings(THREE), LABELS).set_index("utt_id")
    # r1, r2: vote (1,0) against rest (0.5,0.5); r3: vote (0,1) against rest (1,0).
    js = (2 * jensenshannon([0.5, 0.5], [1, 0]) + jensenshannon([1, 0], [0, 1])) / 3
    assert out.loc["u", "js"] == pytest.approx(js)
    assert out.loc["u", "tv"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert out.loc["u", "brier"] == pytest.approx((0.5 + 0.5 + 2) / 3)
    assert out.loc["u", "bc"] == pytest.approx((2 * math.sqrt(0.5) + 0) / 3)
    assert out.loc["u", "n_raters"] == 3


def test_human_loo_counts_equals_loo_for_whole_votes_and_counts_fractional():
    man = _manifest([("u", "A", 2.0, 1.0), ("f", "A", 1.5, 0.5), ("one", "B", 1.0, 0.0)])
    counts = R.human_loo_counts(man, LABELS).set_index("utt_id")
    loo = R.human_loo(_ratings(THREE), LABELS).set_index("utt_id")
    for m in R.CEILING_METRICS:
        assert counts.loc["u", m] == pytest.approx(loo.loc["u", m])
    assert list(counts.index) == ["u"]
    assert counts.attrs["excluded"] == {"fractional_votes": 1, "fewer_than_2_votes": 1}


@pytest.mark.parametrize("js_base", ["e", 2])
def test_human_loo_counts_equals_loo_over_one_rater_per_vote(js_base):
    """The counts ceiling (all utterances and labels at once) against the per-rater one, each vote a
    rater: many utterances with four labels, some labels unvoted, some utterances excluded."""
    labels = ["angry", "sad", "happy", "neutral"]
    rng = np.random.default_rng(7)
    votes = rng.integers(0, 4, size=(300, len(labels)))
    votes[::9] = 0
    votes[::9, 0] = 1  # one vote: excluded from both
    man = pd.DataFrame({"utt_id": [f"u{i:03d}" for i in range(len(votes))]})
    for j, label in enumerate(labels):
        man[f"votes_{label}"] = votes[:, j].astype(float)
    rows = [
        (utt, f"r{k}", label, 1.0)
        for utt, row in zip(man["utt_id"], votes, strict=True)
        for k, label in enumerate(label for label, v in zip(labels, row, strict=True) for _ in range(v))
    ]
    counts = R.human_loo_counts(man, labels, js_base=js_base).set_index("utt_id")
    loo = R.human_loo(_ratings(rows), labels, js_base=js_base).set_index("utt_id")
    assert list(counts.index) == list(loo.index) and len(counts) == int((votes.sum(axis=1) >= 2).sum())
    for m in R.CEILING_METRICS:
        np.testing.assert_allclose(counts[m], loo[m], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(counts["n_raters"], loo["n_raters"])
    assert counts.attrs["excluded"] == {"fewer_than_2_votes": int((votes.sum(axis=1) < 2).sum())}


def test_ratings_filters_are_counted():
    rows = [
        *THREE,
        ("u", "r4", "angry", 1.0, "secondary", False),  # not primary: ignored
        ("u", "self", "sad", 1.0, "primary", True),  # self-evaluation: ignored by default
        ("u", "r5", None, 1.0),  # outside the label set: dropped and counted
        ("v", "r1", "angry", 0.5),  # a multi-label rater: half a vote each
        ("v", "r1", "sad", 0.5),
        ("v", "r2", "sad", 1.0),
        ("w", "r1", "sad", 1.0),  # one rater: excluded and counted
    ]
    out = R.human_loo(_ratings(rows), LABELS).set_index("utt_id")
    assert out.loc["u", "n_raters"] == 3
    assert out.attrs["dropped_ratings"] == 1 and out.attrs["raters_without_vote"] == 1
    assert out.attrs["excluded"] == {"fewer_than_2_raters": 1}
    # v: r1 (0.5,0.5) against (0,1); r2 (0,1) against (0.5,0.5): TV 0.5 both.
    assert out.loc["v", "tv"] == pytest.approx(0.5)
    assert out.loc["v", "js"] == pytest.approx(jensenshannon([0, 1], [0.5, 0.5]))
    with_self = R.human_loo(_ratings(rows), LABELS, self_eval=True).set_index("utt_id")
    assert with_self.loc["u", "n_raters"] == 4


def test_split_half_values_and_invariance():
    rows = [("u", f"r{i}", lab, 1.0) for i, lab in enumerate(["angry", "angry", "sad", "sad"])]
    rows += [("agree", f"r{i}", "sad", 1.0) for i in range(5)]
    rows += [("few", f"r{i}", "sad", 1.0) for i in range(3)]
    ratings = _ratings(rows)
    out = R.human_split_half(ratings, LABELS, n_splits=4000, seed=3).set_index("utt_id")
    # Of the 6 ways to pick the first half of {a,a,s,s}, 2 give TV 1 and 4 give TV 0.
    assert out.loc["u", "tv"] == pytest.approx(1 / 3, abs=0.03)
    assert out.loc["agree", "js"] == pytest.approx(0.0, abs=1e-7)
    assert "few" not in out.index and out.attrs["excluded"] == {"fewer_than_4_raters": 1}
    # Neither row order nor the other utterances change an utterance's value.
    shuffled = ratings.sample(frac=1.0, random_state=1)
    again = R.human_split_half(shuffled[shuffled["utt_id"] == "u"], LABELS, n_splits=4000, seed=3)
    assert again.set_index("utt_id").loc["u", "js"] == out.loc["u", "js"]


def test_ceiling_js_base_follows_the_convention():
    nat = R.human_loo(_ratings(THREE), LABELS)["js"].iloc[0]
    bits = R.human_loo(_ratings(THREE), LABELS, js_base=2)["js"].iloc[0]
    assert bits == pytest.approx(nat / math.sqrt(math.log(2)))
