"""Soft labels, entropy, majority and ambiguity bins, against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import entropy as scipy_entropy

from ambiemo.data.labels import (
    AmbiguityBins,
    LabelSet,
    entropy_bits,
    label_set_from_params,
    majority,
    rater_weights,
    soft_labels,
    tally_votes,
)

FOUR = LabelSet("four", ("neutral", "happy", "angry", "sad"), {"excited": "happy"})


def test_rater_weights_split_first_full():
    assert rater_weights(["angry", "sad"]) == {"angry": 0.5, "sad": 0.5}
    assert rater_weights(["angry", "sad", "fear"], "split") == pytest.approx(
        {"angry": 1 / 3, "sad": 1 / 3, "fear": 1 / 3}
    )
    assert rater_weights(["angry", "sad"], "first") == {"angry": 1.0}
    assert rater_weights(["angry", "sad"], "full") == {"angry": 1.0, "sad": 1.0}
    assert rater_weights(["angry", "angry"]) == {"angry": 1.0}  # naming a category twice counts once
    with pytest.raises(ValueError, match="multi_label"):
        rater_weights(["angry"], "half")


def test_tally_merges_and_splits_votes():
    # rater 1: neutral; rater 2: excited (-> happy) + angry, split; rater 3: happy
    t = tally_votes([[("neutral",), ("excited", "angry"), ("happy",)]], FOUR)
    np.testing.assert_allclose(t.votes, [[1.0, 1.5, 0.5, 0.0]])
    assert t.n_raters.tolist() == [3]
    assert t.out_of_set == [{}]


def test_tally_vote_policies():
    ratings = [[("neutral",), ("frustrated", "angry"), ("frustrated",)]]
    dropped = tally_votes(ratings, FOUR, policy="drop_votes")
    np.testing.assert_allclose(dropped.votes, [[1.0, 0.0, 0.5, 0.0]])
    assert dropped.n_raters.tolist() == [2]  # the third rater had nothing in the set
    assert dropped.out_of_set == [{"frustrated": 1.5}]
    assert dropped.dropped_votes == pytest.approx(1.5)

    whole = tally_votes(ratings, FOUR, policy="drop_utterance")
    assert whole.out_of_set == [{"frustrated": 1.5}]  # the caller drops the utterance
    assert whole.dropped_votes == 0

    other = tally_votes(ratings, FOUR.with_other(), policy="other")
    assert FOUR.with_other().labels == ("neutral", "happy", "angry", "sad", "other")
    assert FOUR.with_other().name == "four+other"
    np.testing.assert_allclose(other.votes, [[1.0, 0.0, 0.5, 0.0, 1.5]])
    assert other.n_raters.tolist() == [3]
    with pytest.raises(ValueError, match="with_other"):
        tally_votes(ratings, FOUR, policy="other")


@pytest.mark.parametrize(
    "counts, bits",
    [
        ([3, 0, 0, 0], 0.0),
        ([2, 1, 0, 0], 0.918296),  # IEMOCAP, three raters, 2-1
        ([1, 1, 1, 0], 1.584963),  # 1-1-1 = log2(3)
        ([4, 1, 0, 0], 0.721928),  # AER-LLM's values for five raters
        ([3, 1, 1, 0], 1.370951),
        ([2, 2, 1, 0], 1.521928),
        ([1, 1, 1, 1], 2.0),
    ],
)
def test_entropy_hand_computed(counts, bits):
    assert entropy_bits(soft_labels(np.array([counts], float)))[0] == pytest.approx(bits, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(2, 7)),
        elements=st.floats(0, 50, allow_nan=False, allow_subnormal=False),
    )
)
def test_soft_labels_and_entropy_match_scipy(votes):
    votes[:, 0] += 0.5  # every row needs a vote
    p = soft_labels(votes)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p, soft_labels(votes * 3.0))  # invariant to scale
    h = entropy_bits(p)
    np.testing.assert_allclose(h, scipy_entropy(votes, base=2, axis=1), atol=1e-9)
    assert (h >= 0).all() and (h <= math.log2(votes.shape[1]) + 1e-9).all()


def test_soft_labels_rejects_empty_rows():
    with pytest.raises(ValueError, match="no votes"):
        soft_labels(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_majority_and_ties():
    labels = ("neutral", "happy", "angry", "sad")
    votes = np.array([[2, 1, 0, 0], [1, 1, 1, 0], [0.5, 1.5, 1.5, 0], [0, 0, 0.1 + 0.2, 0.3]], float)
    names, tie = majority(votes, labels)
    assert names.tolist() == ["neutral", "", "", ""]
    assert tie.tolist() == [False, True, True, True]  # 0.1 + 0.2 ties with 0.3


def test_fixed_bins_edges_go_to_the_lower_bin():
    bins = AmbiguityBins.from_params({"method": "fixed", "bins": ["low", "medium", "high"], "edges_bits": [1.0, 1.5]})
    names, edges = bins.assign(np.array([0.0, 1e-12, 0.5, 1.0, 1.2, 1.5, 1.6, 2.0]))
    assert names.tolist() == ["clear", "clear", "low", "low", "medium", "medium", "high", "high"]
    assert edges == (1.0, 1.5)
    assert bins.order() == ("clear", "low", "medium", "high")


def test_quantile_bins_use_non_unanimous_entropies():
    h = np.array([0.0, 0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8])
    bins = AmbiguityBins.from_params({"method": "quantile", "bins": ["low", "high"], "quantiles": [0.5]})
    names, edges = bins.assign(h)
    assert edges == pytest.approx((np.median(h[h > 0]),))  # 1.05, not influenced by the zeros
    assert names.tolist() == ["clear", "clear", "low", "low", "low", "high", "high", "high"]


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"method": "kmeans"}, "fixed' or 'quantile"),
        ({"bins": ["low", "high"], "edges_bits": [1.0, 1.5]}, "need 1 edges_bits"),
        ({"edges_bits": [1.5, 1.0]}, "increasing"),
        ({"bins": ["clear", "high"], "edges_bits": [1.0]}, "must not contain"),
        ({"method": "quantile", "quantiles": [0.5, 1.5]}, "quantiles"),
    ],
)
def test_bad_ambiguity_params(spec, match):
    with pytest.raises(ValueError, match=match):
        AmbiguityBins.from_params(spec)


def test_label_set_from_params():
    params = {"label_sets": {"four": {"labels": ["Neutral", "happy", "angry", "sad"], "merge": {"Excited": "happy"}}}}
    ls = label_set_from_params(params, "four")
    assert ls.labels == ("neutral", "happy", "angry", "sad") and ls.canonical("excited") == "happy"
    with pytest.raises(KeyError, match="defined: four"):
        label_set_from_params(params, "six")
    with pytest.raises(ValueError, match="not one of its labels"):
        LabelSet("x", ("a", "b"), {"c": "d"})
    with pytest.raises(ValueError, match="repeats"):
        LabelSet("x", ("a", "a"))


CATS = ["neutral", "happy", "angry", "sad", "excited", "frustrated", "other"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.lists(st.sampled_from(CATS), min_size=1, max_size=3), max_size=6), min_size=1, max_size=5))
def test_tally_conserves_every_rater_vote(ratings):
    """Under `split`, each rater carries exactly one vote: counted in the set or dropped, never lost."""
    t = tally_votes(ratings, FOUR, policy="drop_votes")
    for i, raters in enumerate(ratings):
        kept = t.votes[i].sum()
        dropped = sum(t.out_of_set[i].values())
        assert kept + dropped == pytest.approx(len(raters))
        in_set = [any(FOUR.canonical(c) in FOUR.labels for c in r) for r in raters]
        assert t.n_raters[i] == sum(in_set)
    other = tally_votes(ratings, FOUR.with_other(), policy="other")
    np.testing.assert_allclose(other.votes.sum(axis=1), [len(r) for r in ratings])
    full = tally_votes(ratings, FOUR.with_other(), policy="other", multi_label="full")
    np.testing.assert_allclose(
        full.votes.sum(axis=1), [sum(len({FOUR.canonical(c) for c in r}) for r in raters) for raters in ratings]
    )
