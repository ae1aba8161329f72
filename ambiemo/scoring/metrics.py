"""Metrics that compare a model's emotion distribution with the human vote distribution.

Everything is vectorised over utterances: distributions are float arrays of shape
``(n_utterances, n_labels)`` in the label set's order, rows summing to 1. ``p`` is the
human (annotator vote) distribution, ``q`` the model's. Hard labels are integer indices
into the label set; ``-1`` means "none": a tied majority that the tie policy excludes
(``y_true``) or a prediction with no usable label, such as a parse failure (``y_pred``),
which is always counted wrong.

Definitions (the numbers in the paper rest on them):

- **Jensen–Shannon distance**: ``sqrt(JSD(p, q))``, the square root of the divergence, in
  natural log by default (AER-LLM's base, without its rounding: ``ambiemo.scoring.literature``
  has AER-LLM's own form), so it lies in ``[0, sqrt(ln 2)] ≈ [0, 0.833]``;
  with ``base=2`` it lies in ``[0, 1]``. Same value as ``scipy.spatial.distance.jensenshannon``.
- **Bhattacharyya coefficient**: ``Σ_k sqrt(p_k q_k)`` in ``[0, 1]``, 1 for identical rows.
- **R²**: the squared Pearson correlation between predicted and true probabilities (AER-LLM's
  statistic; its code adds 1e-10 to the denominator and rounds, see ``ambiemo.scoring.literature``).
  ``r2`` pools every (utterance, label) cell of the two matrices into one
  correlation, a set-level number that is defined whenever some cell varies.
  ``r2_per_utterance`` correlates one utterance's k-vectors and is NaN where either row is
  constant (a uniform prediction, or a uniform vote split), which is why the set-level
  pooled form is the headline one.
- **KL divergence**: ``KL(p ‖ q̃)`` (human from model, natural log), where
  ``q̃ = (q + ε) / (1 + kε)`` so that a label the annotators chose but the model gave zero
  probability costs a large, finite amount. ``ε = KL_EPSILON`` unless params say otherwise.
- **Total variation**: ``½ Σ_k |p_k − q_k|`` in ``[0, 1]``.
- **Brier score**: ``Σ_k (q_k − p_k)²`` against the soft human label, in ``[0, 2]``; with a
  one-hot ``p`` it is the usual multi-class Brier score.
- **Manhattan distance**: ``Σ_k |p_k − q_k|`` in ``[0, 2]``, the soft-label metric of LeWiDi 2025
  (twice the total variation).
- **Expected calibration error** (``ambiemo.scoring.calibration_error``): confidence = the
  probability the model gave its predicted label; correctness = that label equals the majority
  label (under the tie policy). Confidences fall in ``n_bins`` equal-width bins on [0, 1] (bin ``b`` holds
  ``[b/n, (b+1)/n)``, the last bin also holds 1.0); ECE = Σ_b (n_b / n) · |accuracy_b −
  mean confidence_b|.
- **Entropy Spearman**: Spearman's rho between the annotators' vote entropy and the entropy of
  the model's distribution across utterances: does the model find the same utterances
  ambiguous as people do?
- **Majority label and ties** (``tie_policy``): ``"exclude"`` (default) leaves utterances whose
  top vote share is shared by several labels out of the hard-label metrics (they are counted);
  ``"any"`` counts a prediction correct if it is any of the tied labels (the true label becomes
  the predicted one when it is among them, else the first tied label in label order);
  ``"first"`` takes the first tied label in label order.
- **Accuracy, weighted F1, UAR** of the predicted label against the majority label
  (scikit-learn; weighted F1 weights each true class by its support; UAR is the mean recall
  over the classes present in the majority labels).
- **Plausible-label accuracy**: the share of utterances whose predicted label received at
  least one human vote. No majority is needed, so ties do not matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from sklearn.metrics import accuracy_score

from ambiemo.data import labels
from ambiemo.scoring.calibration_error import ECE_BINS as ECE_BINS
from ambiemo.scoring.calibration_error import expected_calibration_error as expected_calibration_error
from ambiemo.scoring.calibration_error import reliability_bins as reliability_bins

# Defaults, stated once. params.yaml `scoring` overrides them in the pipeline.
JS_BASE = math.e  # natural log (AER-LLM's base); sqrt(ln 2) is the largest distance
KL_EPSILON = 1e-6  # additive smoothing of the model's distribution inside KL
TIE_POLICY = "exclude"
TIE_POLICIES = ("exclude", "any", "first")

# Rows must sum to 1 within this; looser sums point at a bug upstream, not at rounding.
_SUM_ATOL = 1e-6


@dataclass(frozen=True)
class MetricInfo:
    """How to read a metric: its display name, which direction is better, and whether it
    has a value per utterance (then a set's value is the mean) or only per set."""

    name: str
    label: str
    higher_is_better: bool
    per_utterance: bool


# Column names used in score and summary tables, in display order.
METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("js", "JS distance", False, True),
        MetricInfo("bc", "Bhattacharyya coeff.", True, True),
        MetricInfo("r2", "R²", True, False),
        MetricInfo("kl", "KL divergence", False, True),
        MetricInfo("tv", "Total variation", False, True),
        MetricInfo("brier", "Brier score", False, True),
        MetricInfo("ece", "ECE", False, False),
        MetricInfo("entropy_spearman", "Entropy Spearman ρ", True, False),
        MetricInfo("accuracy", "Accuracy", True, True),
        MetricInfo("f1_weighted", "Weighted F1", True, False),
        MetricInfo("uar", "UAR", True, False),
        MetricInfo("plausible_accuracy", "Plausible-label acc.", True, True),
    )
}


def log_base(base: float | str | None) -> float:
    """A log base from params: ``"e"``/``None`` (natural), or a number such as 2."""
    if base is None or (isinstance(base, str) and base.strip().lower() in ("e", "natural", "ln")):
        return math.e
    value = float(base)
    if value <= 0 or value == 1:
        raise ValueError(f"log base must be positive and not 1 (got {base!r}); use 'e' or 2")
    return value


class DistributionError(ValueError):
    """Row ``row`` of array ``name`` is not a probability distribution, for ``reason``."""

    def __init__(self, name: str, row: int, reason: str):
        super().__init__(f"{name}: row {row} {reason}")
        self.name, self.row, self.reason = name, row, reason


def check_distributions(p: np.ndarray, name: str = "p") -> np.ndarray:
    """``p`` as a float (n, k) array of probability rows, or a DistributionError naming the first bad row."""
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an (n_utterances, n_labels) array, got shape {arr.shape}")
    # Whole-array reductions first (a tenth of the row-wise ones' time over short rows); the
    # row-wise search for the first bad row runs only when something is wrong.
    # The fast sum's order differs from the row-wise one by ~1e-16, hence the halved tolerance: it
    # accepts only what the exact check below accepts, and leaves the rest to it.
    k = arr.shape[1]
    fast_ok = k and np.isfinite(arr).all() and arr.min(initial=0.0) >= 0
    if fast_ok and np.abs(arr @ np.ones(k) - 1).max(initial=0.0) <= _SUM_ATOL / 2:
        return arr
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DistributionError(name, i, "has a NaN or infinite probability")
    bad = (arr < 0).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DistributionError(name, i, "has a negative probability")
    sums = arr.sum(axis=1)
    bad = np.abs(sums - 1) > _SUM_ATOL
    if bad.any():
        i = int(np.argmax(bad))
        raise DistributionError(name, i, f"sums to {sums[i]:.6g}, not 1; normalise it before scoring")
    return arr


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = check_distributions(p, "p (human)"), check_distributions(q, "q (model)")
    if p.shape != q.shape:
        raise ValueError(f"p has shape {p.shape} but q has shape {q.shape}; they must match")
    return p, q


# --- distributional metrics, one value per utterance --------------------------------------


def js_distance(p, q, base: float | str = JS_BASE) -> np.ndarray:
    """Jensen–Shannon distance per utterance (square root of the divergence, log ``base``)."""
    p, q = _pair(p, q)
    return js_distance_checked(p, q, math.log(log_base(base)))


def js_distance_checked(p: np.ndarray, q: np.ndarray, log_of_base: float) -> np.ndarray:
    """``js_distance`` of float arrays already checked as distributions, for a search that reshapes
    checked answers at every step (``ambiemo.scoring.calibration``); ``log_of_base``: ln of the base."""
    m = 0.5 * (p + q)
    # rel_entr is 0 where p is 0, so disjoint supports need no special case.
    div = 0.5 * (special.rel_entr(p, m).sum(axis=1) + special.rel_entr(q, m).sum(axis=1))
    div /= log_of_base
    return np.sqrt(np.clip(div, 0.0, None))  # rounding can leave -1e-17 for identical rows


def bhattacharyya_coefficient(p, q) -> np.ndarray:
    """Σ_k sqrt(p_k q_k) per utterance: 1 for identical, 0 for disjoint distributions."""
    p, q = _pair(p, q)
    return np.sqrt(p * q).sum(axis=1)


def kl_divergence(p, q, eps: float = KL_EPSILON, base: float | str = math.e) -> np.ndarray:
    """KL(p ‖ q̃) per utterance, q̃ = (q + eps) / (1 + k·eps)."""
    p, q = _pair(p, q)
    if eps < 0:
        raise ValueError(f"kl epsilon must be >= 0, got {eps}")
    q_s = (q + eps) / (1 + q.shape[1] * eps)
    return special.rel_entr(p, q_s).sum(axis=1) / math.log(log_base(base))


def total_variation(p, q) -> np.ndarray:
    """½ Σ_k |p_k − q_k| per utterance."""
    p, q = _pair(p, q)
    return 0.5 * np.abs(p - q).sum(axis=1)


def manhattan_distance(p, q) -> np.ndarray:
    """Σ_k |p_k − q_k| per utterance: LeWiDi 2025's soft-label metric, in [0, 2]."""
    p, q = _pair(p, q)
    return np.abs(p - q).sum(axis=1)


def brier(p, q) -> np.ndarray:
    """Σ_k (q_k − p_k)² per utterance, against the soft human label."""
    p, q = _pair(p, q)
    return ((q - p) ** 2).sum(axis=1)


def entropy_bits(p) -> np.ndarray:
    """Shannon entropy of each row in bits: ``ambiemo.data.labels.entropy_bits`` (the one definition),
    after checking that the rows are distributions."""
    return labels.entropy_bits(check_distributions(p))


def r2_per_utterance(p, q) -> np.ndarray:
    """Squared Pearson correlation of each utterance's two k-vectors; NaN where a row is constant."""
    p, q = _pair(p, q)
    pc, qc = p - p.mean(axis=1, keepdims=True), q - q.mean(axis=1, keepdims=True)
    denom = np.sqrt((pc**2).sum(axis=1) * (qc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * qc).sum(axis=1) / denom
    r[denom < 1e-15] = np.nan
    return r**2


# --- set-level distributional metrics -----------------------------------------------------


def r2(p, q) -> float:
    """Squared Pearson correlation over all (utterance, label) cells of the two matrices."""
    p, q = _pair(p, q)
    x, y = p.ravel(), q.ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1] ** 2)


def entropy_for_ranking(p) -> np.ndarray:
    """Entropies rounded to 10 decimals: equal distributions in a different label order must tie
    when ranked, and summation order leaves them 1e-16 apart otherwise."""
    return np.round(entropy_bits(p), 10)


def average_ranks(x) -> np.ndarray:
    """``scipy.stats.rankdata(x)`` ("average" ties) of a finite 1-D array, exactly.

    An unstable sort suffices: tied values share one average rank whatever their order, so the
    stable merge sort that rankdata uses (four times slower on 10^6 values) buys nothing here.
    """
    x = np.asarray(x, dtype=float).ravel()
    order = np.argsort(x)
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]  # the start of each run of equal values
    group = np.cumsum(first) - 1
    starts = np.r_[np.flatnonzero(first), x.size]
    ranks = np.empty(x.size)
    ranks[order] = 0.5 * (starts[group] + starts[group + 1] + 1)  # mean of ranks start+1 … end
    return ranks


def entropy_spearman(p, q) -> float:
    """Spearman's rho between the human and the model entropies across utterances (NaN if
    either is constant or there are fewer than 3 utterances).

    The Pearson correlation of the average ranks, as ``scipy.stats.spearmanr`` computes it
    (``np.corrcoef`` of ``rankdata``), with the ranks from ``average_ranks``.
    """
    hp, hq = entropy_for_ranking(p), entropy_for_ranking(q)
    if hp.size < 3 or np.ptp(hp) == 0 or np.ptp(hq) == 0:
        return float("nan")
    return float(np.corrcoef(average_ranks(hp), average_ranks(hq))[0, 1])


def confidence(q, y_pred) -> np.ndarray:
    """The probability the model gave its predicted label (its top probability where it has none)."""
    q = check_distributions(q, "q (model)")
    y_pred = np.asarray(y_pred, dtype=int)
    out = q.max(axis=1)
    has = y_pred >= 0
    out[has] = q[np.flatnonzero(has), y_pred[has]]
    return out


# --- hard labels --------------------------------------------------------------------------


def majority_label(p, tie_policy: str = TIE_POLICY, y_pred=None) -> np.ndarray:
    """Index of the human majority label per utterance under ``tie_policy`` (-1 = excluded tie).

    A tie is two or more labels sharing the top vote share. ``"any"`` needs ``y_pred``.
    """
    p = check_distributions(p, "p (human)")
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy {tie_policy!r} is not one of {TIE_POLICIES} (params scoring.tie_policy)")
    # The majority and what counts as a tie are ``ambiemo.data.labels.majority``'s; the policy only
    # says what a tied row becomes.
    names, tied = labels.majority(p, list(range(p.shape[1])))
    out = np.where(tied, 0, names).astype(int)
    top = np.isclose(p, p.max(axis=1, keepdims=True), rtol=0, atol=labels.EPS)
    out[tied] = top[tied].argmax(axis=1)  # first tied label in label order
    if tie_policy == "exclude":
        out[tied] = -1
    elif tie_policy == "any":
        if y_pred is None:
            raise ValueError("tie_policy 'any' needs the predicted labels (y_pred)")
        y_pred = np.asarray(y_pred, dtype=int)
        rows = np.flatnonzero(tied & (y_pred >= 0))
        hit = rows[top[rows, y_pred[rows]]]
        out[hit] = y_pred[hit]
    return out


def _hard(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a majority label; a missing prediction becomes a label no truth can equal."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    keep = y_true >= 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    return y_true, np.where(y_pred >= 0, y_pred, np.iinfo(np.int32).max)


def correct(y_true, y_pred) -> np.ndarray:
    """1.0 where the prediction equals the majority label, 0.0 where not, NaN where excluded."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    out = ((y_pred == y_true) & (y_pred >= 0)).astype(float)
    out[y_true < 0] = np.nan
    return out


def accuracy(y_true, y_pred) -> float:
    t, pr = _hard(y_true, y_pred)
    return float(accuracy_score(t, pr)) if t.size else float("nan")


def _class_counts(t: np.ndarray, pr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class present in ``t`` (in ascending order, as ``np.unique(t)``): true positives,
    support (true count) and predicted count, from ``_hard``'s arrays."""
    k = int(t.max()) + 1
    support = np.bincount(t, minlength=k)
    tp = np.bincount(t[pr == t], minlength=k)
    pred = np.bincount(pr[pr < k], minlength=k)  # a missing prediction (int32 max) predicts no class
    present = support > 0
    return tp[present], support[present], pred[present]


def weighted_f1(y_true, y_pred) -> float:
    """F1 per class present in ``y_true``, averaged with the classes' support as weights:
    ``sklearn.metrics.f1_score(…, labels=np.unique(y_true), average="weighted", zero_division=0)``,
    from per-class counts (scikit-learn's input validation alone takes 0.3 s on 10^6 labels)."""
    t, pr = _hard(y_true, y_pred)
    if not t.size:
        return float("nan")
    tp, support, pred = _class_counts(t, pr)
    f1 = 2 * tp / (support + pred)  # support > 0, so the denominator is never 0
    return float(np.average(f1, weights=support))


def uar(y_true, y_pred) -> float:
    """Unweighted average recall over the classes present in ``y_true``: ``sklearn.metrics.recall_score(…,
    labels=np.unique(y_true), average="macro")``, from per-class counts."""
    t, pr = _hard(y_true, y_pred)
    if not t.size:
        return float("nan")
    tp, support, _ = _class_counts(t, pr)
    return float(np.mean(tp / support))


def plausible(p, y_pred) -> np.ndarray:
    """True where the predicted label received at least one human vote."""
    p = check_distributions(p, "p (human)")
    y_pred = np.asarray(y_pred, dtype=int)
    out = np.zeros(len(p), dtype=bool)
    has = y_pred >= 0
    out[has] = p[np.flatnonzero(has), y_pred[has]] > 0
    return out


def plausible_accuracy(p, y_pred) -> float:
    ok = plausible(p, y_pred)
    return float(ok.mean()) if ok.size else float("nan")


def argmax_label(q) -> np.ndarray:
    """The model's top label per utterance (the first in label order on a tie)."""
    return check_distributions(q, "q (model)").argmax(axis=1)
