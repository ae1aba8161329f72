"""Every metric against an independent reference (scipy, scikit-learn, hand-computed cases),
plus property tests over random vote distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy, pearsonr, spearmanr
from sklearn.metrics import brier_score_loss, f1_score

from ambiemo.scoring import metrics as M

K = 4
UNIFORM = np.full((1, K), 0.25)
ONE_HOT = np.eye(K)[[0]]


def random_dists(n, k=K, seed=0, zeros=True):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k) * 0.7, size=n)
    if zeros:  # real vote distributions have many exact zeros
        p[rng.random((n, k)) < 0.3] = 0
        p[p.sum(axis=1) == 0, 0] = 1
        p /= p.sum(axis=1, keepdims=True)
    return p


P, Q = random_dists(50, seed=1), random_dists(50, seed=2)


# --------------------------------------------------------------------------- distributional


@pytest.mark.parametrize("base", [math.e, 2])
def test_js_distance_matches_scipy(base):
    expected = [jensenshannon(p, q, base=base) for p, q in zip(P, Q, strict=True)]
    np.testing.assert_allclose(M.js_distance(P, Q, base=base), expected, atol=1e-12)


def test_js_hand_cases():
    assert M.js_distance(P, P).max() == pytest.approx(0, abs=1e-7)
    # disjoint supports: the largest distance, sqrt(ln 2) in nats, 1 in bits
    a, b = np.array([[0.5, 0.5, 0, 0]]), np.array([[0, 0, 0.3, 0.7]])
    assert M.js_distance(a, b)[0] == pytest.approx(math.sqrt(math.log(2)))
    assert M.js_distance(a, b, base=2)[0] == pytest.approx(1.0)
    assert M.js_distance(a, b, base="e")[0] == pytest.approx(math.sqrt(math.log(2)))
    # uniform vs one-hot: m = (5/8, 1/8, 1/8, 1/8)
    kl_onehot = math.log(8 / 5)
    kl_uniform = 0.25 * math.log(0.25 / (5 / 8)) + 0.75 * math.log(2)
    assert M.js_distance(UNIFORM, ONE_HOT)[0] == pytest.approx(math.sqrt(0.5 * (kl_onehot + kl_uniform)))


def test_bhattacharyya_hand_cases():
    assert M.bhattacharyya_coefficient(P, P) == pytest.approx(np.ones(len(P)))
    assert M.bhattacharyya_coefficient([[1, 0, 0, 0]], [[0, 0.5, 0.5, 0]])[0] == 0
    assert M.bhattacharyya_coefficient(UNIFORM, ONE_HOT)[0] == pytest.approx(0.5)
    expected = [sum(math.sqrt(a * b) for a, b in zip(p, q, strict=True)) for p, q in zip(P, Q, strict=True)]
    np.testing.assert_allclose(M.bhattacharyya_coefficient(P, Q), expected)


def test_kl_matches_scipy_on_smoothed_model():
    eps = 1e-6
    q_s = (Q + eps) / (1 + K * eps)
    expected = [entropy(p, q) for p, q in zip(P, q_s, strict=True)]
    np.testing.assert_allclose(M.kl_divergence(P, Q, eps=eps), expected, rtol=1e-10)
    assert M.kl_divergence(P, P, eps=0).max() == pytest.approx(0, abs=1e-12)
    # one-hot truth, model gives that label zero: ln((1 + k eps) / eps), large but finite
    got = M.kl_divergence(ONE_HOT, [[0, 1, 0, 0]], eps=eps)[0]
    assert got == pytest.approx(math.log((1 + K * eps) / eps))
    # the direction is KL(human || model): not symmetric
    assert M.kl_divergence(UNIFORM, ONE_HOT)[0] != pytest.approx(M.kl_divergence(ONE_HOT, UNIFORM)[0])
    assert M.kl_divergence(ONE_HOT, UNIFORM)[0] == pytest.approx(math.log(4), rel=1e-5)


def test_total_variation_and_brier_hand_cases():
    assert M.total_variation(UNIFORM, ONE_HOT)[0] == pytest.approx(0.75)
    assert M.total_variation([[1, 0, 0, 0]], [[0, 0, 0, 1]])[0] == pytest.approx(1)
    assert M.brier(ONE_HOT, UNIFORM)[0] == pytest.approx(0.75**2 + 3 * 0.25**2)
    assert M.brier([[1, 0, 0, 0]], [[0, 1, 0, 0]])[0] == pytest.approx(2)
    np.testing.assert_allclose(M.total_variation(P, Q), 0.5 * np.abs(P - Q).sum(axis=1))


def test_brier_on_one_hot_truth_matches_sklearn():
    y = np.random.default_rng(3).integers(0, K, len(Q))
    got = M.brier(np.eye(K)[y], Q).mean()
    assert got == pytest.approx(brier_score_loss(y, Q, labels=list(range(K))))


def test_entropy_matches_scipy():
    np.testing.assert_allclose(M.entropy_bits(P), entropy(P, base=2, axis=1))
    assert M.entropy_bits(UNIFORM)[0] == pytest.approx(2)
    assert M.entropy_bits(ONE_HOT)[0] == 0


def test_r2_pooled_and_per_utterance_match_pearson():
    assert M.r2(P, Q) == pytest.approx(pearsonr(P.ravel(), Q.ravel()).statistic ** 2)
    expected = [pearsonr(p, q).statistic ** 2 for p, q in zip(P[:10], Q[:10], strict=True)]
    np.testing.assert_allclose(M.r2_per_utterance(P[:10], Q[:10]), expected, rtol=1e-10)
    assert M.r2(P, P) == pytest.approx(1)
    # a uniform prediction has no correlation with anything: undefined per utterance
    assert np.isnan(M.r2_per_utterance(ONE_HOT, UNIFORM)[0])
    assert np.isnan(M.r2(UNIFORM, ONE_HOT))


def test_entropy_spearman_matches_scipy():
    expected = spearmanr(entropy(P, base=2, axis=1), entropy(Q, base=2, axis=1)).statistic
    assert M.entropy_spearman(P, Q) == pytest.approx(expected)
    assert M.entropy_spearman(P, P) == pytest.approx(1)
    assert np.isnan(M.entropy_spearman(P, np.tile(UNIFORM, (len(P), 1))))


def test_ece_hand_case():
    conf = np.array([0.9, 0.8, 0.3, 0.6])
    ok = np.array([1, 0, 0, 1.0])
    # bins of width 0.2: {0.9, 0.8} -> acc .5 conf .85; {0.3} -> 0 vs .3; {0.6} -> 1 vs .6
    assert M.expected_calibration_error(conf, ok, 5) == pytest.approx(0.5 * 0.35 + 0.25 * 0.3 + 0.25 * 0.4)
    # one bin: |mean accuracy - mean confidence|
    assert M.expected_calibration_error(conf, ok, 1) == pytest.approx(abs(0.5 - 0.65))
    # excluded (NaN) rows do not count; confidence 1.0 lands in the last bin
    assert M.expected_calibration_error([1.0, 0.5, 0.2], [1, np.nan, np.nan], 5) == pytest.approx(0)
    table = M.reliability_bins([1.0, 0.0], [1, 0], 4)
    assert table["n"].tolist() == [1, 0, 0, 1]
    assert np.isnan(M.expected_calibration_error([0.5], [np.nan]))


def test_ece_against_loop_reference():
    rng = np.random.default_rng(5)
    conf, ok = rng.random(200), (rng.random(200) < 0.6).astype(float)
    n_bins = 10
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if inside.any():
            total += inside.mean() * abs(ok[inside].mean() - conf[inside].mean())
    assert M.expected_calibration_error(conf, ok, n_bins) == pytest.approx(total)


def test_confidence_is_probability_of_predicted_label():
    q = np.array([[0.1, 0.6, 0.2, 0.1], [0.25] * 4])
    np.testing.assert_allclose(M.confidence(q, [2, -1]), [0.2, 0.25])


# --------------------------------------------------------------------------- hard labels

TIES = np.array(
    [
        [0.5, 0.5, 0, 0],  # tie between 0 and 1
        [0.2, 0.6, 0.2, 0],  # clear majority 1
        [1 / 3, 1 / 3, 1 / 3, 0],  # three-way tie
    ]
)


def test_majority_tie_policies():
    assert M.majority_label(TIES, "exclude").tolist() == [-1, 1, -1]
    assert M.majority_label(TIES, "first").tolist() == [0, 1, 0]
    # "any": the prediction counts if it is among the tied labels
    assert M.majority_label(TIES, "any", y_pred=[1, 2, 3]).tolist() == [1, 1, 0]
    assert M.majority_label(TIES, "any", y_pred=[-1, 1, 2]).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="tie_policy"):
        M.majority_label(TIES, "random")
    with pytest.raises(ValueError, match="y_pred"):
        M.majority_label(TIES, "any")


def test_hard_metrics_by_hand():
    # Confusion matrix (rows: truth 0, 1, 2; columns: predicted 0, 1, 2)
    #   [[2, 1, 0],      recall 2/3, precision 2/3 -> F1 2/3,  support 3
    #    [0, 1, 1],      recall 1/2, precision 1/2 -> F1 1/2,  support 2
    #    [1, 0, 1]]      recall 1/2, precision 1/2 -> F1 1/2,  support 2
    y_true = [0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 0]
    assert M.accuracy(y_true, y_pred) == pytest.approx(4 / 7)
    assert M.uar(y_true, y_pred) == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert M.weighted_f1(y_true, y_pred) == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 2 * 1 / 2) / 7)


def _confusion_reference(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[float, float, float]:
    """Accuracy, weighted F1 and UAR counted from a confusion matrix with numpy alone."""
    cm = np.zeros((k, k))
    np.add.at(cm, (y_true, y_pred), 1)
    support, predicted, hits = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    present = support > 0
    recall = hits[present] / support[present]
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)[present]
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(recall)), where=precision + recall > 0)
    return hits.sum() / cm.sum(), float((f1 * support[present]).sum() / support.sum()), float(recall.mean())


def test_hard_metrics_match_a_confusion_matrix_count():
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.integers(0, K, 80), rng.integers(0, K, 80)
    y_pred[:20] = y_true[:20]
    acc, f1, recall = _confusion_reference(y_true, y_pred, K)
    assert M.accuracy(y_true, y_pred) == pytest.approx(acc)
    assert M.weighted_f1(y_true, y_pred) == pytest.approx(f1)
    assert M.uar(y_true, y_pred) == pytest.approx(recall)


def test_excluded_rows_and_missing_predictions():
    y_true = np.array([0, 1, -1, 2, 2, 3])
    y_pred = np.array([0, -1, 1, 2, 0, 3])  # row 1: parse failure (always wrong); row 2: excluded tie
    t, pr = np.array([0, 1, 2, 2, 3]), np.array([0, 99, 2, 0, 3])  # 99: a label no truth has
    assert M.accuracy(y_true, y_pred) == pytest.approx(0.6)
    assert M.weighted_f1(y_true, y_pred) == pytest.approx(f1_score(t, pr, labels=[0, 1, 2, 3], average="weighted"))
    assert M.uar(y_true, y_pred) == pytest.approx(np.mean([1, 0, 0.5, 1]))
    np.testing.assert_array_equal(M.correct(y_true, y_pred), [1, 0, np.nan, 1, 0, 1])
    assert np.isnan(M.accuracy([-1, -1], [0, 1]))


def test_plausible_label_accuracy():
    p = np.array([[0.5, 0.5, 0, 0], [0, 0, 1, 0], [0.25] * 4])
    assert M.plausible(p, [1, 1, -1]).tolist() == [True, False, False]
    assert M.plausible_accuracy(p, [0, 2, 3]) == pytest.approx(1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="row 1 sums to"):
        M.js_distance([[1, 0], [0.5, 0.6]], [[1, 0], [0.5, 0.5]])
    with pytest.raises(ValueError, match="negative"):
        M.brier([[1.2, -0.2]], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="shape"):
        M.total_variation([[1, 0]], [[1, 0, 0]])
    with pytest.raises(ValueError, match="log base"):
        M.js_distance([[1, 0]], [[1, 0]], base=1)


# --------------------------------------------------------------------------- properties


@st.composite
def vote_matrices(draw, n=None, k=None, count=2):
    """``count`` (n, k) vote distributions of one shape, built from integer vote counts (so exact zeros occur)."""
    n = n or draw(st.integers(3, 12))
    k = k or draw(st.integers(2, 6))

    def matrix():
        rows = [
            draw(st.lists(st.integers(0, 6), min_size=k, max_size=k).filter(lambda r: sum(r) > 0)) for _ in range(n)
        ]
        a = np.asarray(rows, dtype=float)
        return a / a.sum(axis=1, keepdims=True)

    return tuple(matrix() for _ in range(count))


@settings(max_examples=60, deadline=None)
@given(vote_matrices())
def test_symmetry_and_bounds(pq):
    p, q = pq
    js = M.js_distance(p, q)
    np.testing.assert_allclose(js, M.js_distance(q, p), atol=1e-12)
    np.testing.assert_allclose(M.bhattacharyya_coefficient(p, q), M.bhattacharyya_coefficient(q, p))
    np.testing.assert_allclose(M.total_variation(p, q), M.total_variation(q, p))
    assert ((js >= 0) & (js <= math.sqrt(math.log(2)) + 1e-12)).all()
    assert (M.js_distance(p, q, base=2) <= 1 + 1e-12).all()
    bc = M.bhattacharyya_coefficient(p, q)
    assert ((bc >= -1e-12) & (bc <= 1 + 1e-12)).all()
    tv = M.total_variation(p, q)
    assert ((tv >= 0) & (tv <= 1 + 1e-12)).all()
    b = M.brier(p, q)
    assert ((b >= 0) & (b <= 2 + 1e-12)).all()
    assert (M.kl_divergence(p, q) >= -1e-9).all()
    # known inequalities between them: JSD <= TV·ln 2 and 1 - BC <= TV
    assert (js**2 <= tv * math.log(2) + 1e-9).all()
    assert (1 - bc <= tv + 1e-9).all()
    r2 = M.r2(p, q)
    assert np.isnan(r2) or 0 <= r2 <= 1 + 1e-12


@settings(max_examples=40, deadline=None)
@given(vote_matrices(count=3))
def test_js_triangle_inequality(pqr):
    p, q, r = pqr  # one shape for all three, so that every drawn example is checked
    assert (M.js_distance(p, r) <= M.js_distance(p, q) + M.js_distance(q, r) + 1e-9).all()


@settings(max_examples=60, deadline=None)
@given(vote_matrices(), st.randoms(use_true_random=False))
def test_invariant_to_label_order(pq, rnd):
    p, q = pq
    perm = list(range(p.shape[1]))
    rnd.shuffle(perm)
    pp, qp = p[:, perm], q[:, perm]
    for f in (
        M.js_distance,
        M.bhattacharyya_coefficient,
        M.kl_divergence,
        M.total_variation,
        M.brier,
        M.r2_per_utterance,
    ):
        np.testing.assert_allclose(f(pp, qp), f(p, q), atol=1e-12, equal_nan=True)
    for f in (M.r2, M.entropy_spearman):
        a, b = f(pp, qp), f(p, q)
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12)
    # hard labels: relabelling both sides changes nothing (exclude policy: ties do not depend on order)
    inv = np.argsort(perm)  # old label index -> new index
    y_pred = M.argmax_label(q)
    y_true = M.majority_label(p, "exclude")
    y_true_p = M.majority_label(pp, "exclude")
    np.testing.assert_array_equal(np.where(y_true >= 0, inv[np.maximum(y_true, 0)], -1), y_true_p)
    y_pred_p = inv[y_pred]
    for f in (M.accuracy, M.weighted_f1, M.uar):
        a, b = f(y_true_p, y_pred_p), f(y_true, y_pred)
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b)
    assert M.plausible_accuracy(pp, y_pred_p) == pytest.approx(M.plausible_accuracy(p, y_pred))
    conf, conf_p = M.confidence(q, y_pred), M.confidence(qp, y_pred_p)
    np.testing.assert_allclose(conf, conf_p)
