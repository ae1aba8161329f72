"""Metrics that compare a model's emotion distribution with the human vote distribution.

Everything is vectorised over utterances: distributions are float arrays of shape
``(n_utterances, n_labels)`` in the label set's order, rows summing to 1. ``p`` is the
human (annotator vote) distribution, ``q`` the model's. Hard labels are integer indices
into the label set; ``-1`` means "none": a tied majority that the tie policy excludes
(``y_true``) or a prediction with no usable label, such as a parse failure (``y_pred``),
which is always counted wrong.

Definitions (the numbers in the paper rest on them):

- **Jensen–Shannon distance**: ``sqrt(JSD(p, q))``, the square root of the divergence, in
  natural log by default (as in AER-LLM), so it lies in ``[0, sqrt(ln 2)] ≈ [0, 0.833]``;
  with ``base=2`` it lies in ``[0, 1]``. Same value as ``scipy.spatial.distance.jensenshannon``.
- **Bhattacharyya coefficient**: ``Σ_k sqrt(p_k q_k)`` in ``[0, 1]``, 1 for identical rows.
- **R²**: the squared Pearson correlation between predicted and true probabilities, as in
  AER-LLM's code. ``r2`` pools every (utterance, label) cell of the two matrices into one
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
- **Expected calibration error**: confidence = the probability the model gave its predicted
  label; correctness = that label equals the majority label (under the tie policy).
  Confidences fall in ``n_bins`` equal-width bins on [0, 1] (bin ``b`` holds
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
import pandas as pd
from scipy import special
from sklearn.metrics import accuracy_score

from ambiemo.data import labels

# Defaults, stated once. params.yaml `scoring` overrides them in the pipeline.
JS_BASE = math.e  # natural log, as in AER-LLM; sqrt(ln 2) is the largest distance
KL_EPSILON = 1e-6  # additive smoothing of the model's distribution inside KL
ECE_BINS = 5  # as in AER-LLM's code
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
    m = 0.5 * (p + q)
    # rel_entr is 0 where p is 0, so disjoint supports need no special case.
    div = 0.5 * (special.rel_entr(p, m).sum(axis=1) + special.rel_entr(q, m).sum(axis=1))
    div /= math.log(log_base(base))
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


def _ece_bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"ece bins must be >= 1, got {n_bins}")
    return np.minimum((np.asarray(conf) * n_bins).astype(int), n_bins - 1)


def reliability_bins(conf, correct, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """One row per confidence bin: its edges, count, mean confidence and accuracy.

    ``correct`` may hold NaN for utterances the tie policy excludes, ``conf`` NaN for predictions
    without a distribution; those rows are left out.
    Empty bins keep their row with n = 0 and NaN means, so tables have a fixed shape.
    """
    conf, correct = np.asarray(conf, dtype=float), np.asarray(correct, dtype=float)
    keep = ~np.isnan(correct) & ~np.isnan(conf)
    conf, correct = conf[keep], correct[keep]
    idx = _ece_bin_index(conf, n_bins)
    n = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / n
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / n
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "n": n,
            "confidence": mean_conf,
            "accuracy": acc,
        }
    )


def expected_calibration_error(conf, correct, n_bins: int = ECE_BINS) -> float:
    """Σ_b (n_b/n)·|accuracy_b − confidence_b| (NaN-correct rows left out; NaN if none remain)."""
    table = reliability_bins(conf, correct, n_bins)
    total = table["n"].sum()
    if total == 0:
        return float("nan")
    used = table[table["n"] > 0]
    return float((used["n"] / total * (used["accuracy"] - used["confidence"]).abs()).sum())


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


# --- conventions of the literature, side by side -------------------------------------------
#
# Published numbers on distributional emotion recognition use different definitions under the
# same names; the conventions table shows each beside the others so that a reader can compare.
#
# - ``js_distance_nat``: sqrt(JSD), natural log, as AER-LLM's code computes it
#   (``scipy.spatial.distance.jensenshannon`` with its default base). Range [0, sqrt(ln 2)].
# - ``js_divergence_bits``: JSD itself (no square root), base 2, as the later soft-label SER work
#   reports it. Range [0, 1]. It equals ``js_distance(p, q, base=2) ** 2``.
# - ``r2_utterance_mean``: AER-LLM's R²: the squared Pearson correlation of each utterance's
#   predicted and human k-vectors, averaged over the utterances where it is defined (rows where
#   either vector is constant have no correlation; their count is returned beside it).
# - ``r2_pooled``: the squared correlation of all (utterance, label) cells at once (``r2``).
# - ``r2_label_mean``: the coefficient of determination per label column across utterances,
#   averaged over labels: ``sklearn.metrics.r2_score(p, q)`` (multioutput "uniform_average"),
#   as the later soft-label work computes it. It can be negative; it is not a squared correlation.


def js_divergence_bits(p, q) -> np.ndarray:
    """Jensen–Shannon divergence per utterance in bits (no square root), in [0, 1]."""
    return js_distance(p, q, base=2) ** 2


def r2_utterance_mean(p, q) -> tuple[float, int]:
    """AER-LLM's R²: the mean per-utterance squared correlation, and how many rows had none."""
    per = r2_per_utterance(p, q)
    undefined = int(np.isnan(per).sum())
    return (float(np.nanmean(per)) if undefined < per.size else float("nan")), undefined


def r2_label_mean(p, q) -> float:
    """scikit-learn's coefficient of determination per label column, averaged over labels."""
    from sklearn.metrics import r2_score

    p, q = _pair(p, q)
    if len(p) < 2:
        return float("nan")
    return float(r2_score(p, q, multioutput="uniform_average"))


CONVENTIONS: tuple[tuple[str, str, str], ...] = (
    ("js_distance_nat", "sqrt(JSD), natural log", "AER-LLM (scipy jensenshannon, base e)"),
    ("js_divergence_bits", "JSD, log base 2", "soft-label SER work"),
    ("r2_utterance_mean", "mean over utterances of corr(p_i, q_i)^2", "AER-LLM"),
    ("r2_pooled", "corr over all (utterance, label) cells, squared", "ambiemo's set-level r2"),
    ("r2_label_mean", "mean over labels of sklearn r2_score", "soft-label SER work"),
)


def conventions_table(p, q) -> pd.DataFrame:
    """One row per convention: its name, definition, source and value on (p, q); JS rows are
    means over utterances; ``undefined`` counts utterances the convention has no value for."""
    r2u, undefined = r2_utterance_mean(p, q)
    values = {
        "js_distance_nat": (float(js_distance(p, q, math.e).mean()), 0),
        "js_divergence_bits": (float(js_divergence_bits(p, q).mean()), 0),
        "r2_utterance_mean": (r2u, undefined),
        "r2_pooled": (r2(p, q), 0),
        "r2_label_mean": (r2_label_mean(p, q), 0),
    }
    return pd.DataFrame(
        [
            {"convention": name, "definition": d, "source": src, "value": values[name][0], "undefined": values[name][1]}
            for name, d, src in CONVENTIONS
        ]
    )
