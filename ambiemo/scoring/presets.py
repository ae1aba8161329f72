"""The peers' metric conventions, written from the facts of their code (never from the code itself), so
that a number in ambiemo's tables can be put beside the number the peer's paper printed.

Two presets, each a function of ``(p, q, parsed_ok, labels)`` returning ``{metric: PresetValue}``:

``aer-llm`` — mHealthUnimelb/AER-LLM at commit ``7295fa3`` (``Evaluation/eval_metrics.py``,
``Evaluation/eval_framework.py``, ``data_processing/preprocessing.py``,
``data_processing/prediction_processing.py``). Facts:

- the truth is rounded to two decimals per label (``round(count / total, 2)``: three raters split
  three ways give 0.33 + 0.33 + 0.33 = 0.99, kept as is);
- a failed answer (unparsable, or the API failed) is the one-hot ``[1, 0, 0, 0]`` on the first label
  of ``['neutral', 'happy', 'angry', 'sad']``, for the distributions and the hard labels alike;
- ``KL(a, b) = round(Σ_{a≠0} a·ln(a / (b + 1e-8)), 4)``, called as ``KL(pred, truth)``: the model's
  distribution from the human one, 1e-8 added to the human side, nothing renormalised;
- ``js = sqrt(0.5·KL(p, m) + 0.5·KL(q, m))`` with ``m = (p + q)/2`` and KL as above (each term rounded
  to 4 decimals, 1e-8 added to ``m``);
- ``BC = round(Σ sqrt(a·b), 4)``;
- ``R² = round(cov₀(a, b)² / (var₀(a)·var₀(b) + 1e-10), 4)`` per utterance (population moments), so a
  constant row scores 0 and stays in the mean;
- every per-utterance value is rounded again to 6 decimals and the set value is the plain mean;
- ECE: 5 equal bins ``(lower, upper]`` of the top probability; correct = ``argmax(pred) ==
  argmax(truth)`` (the first label on a tie, in AER-LLM's label order); weights = share of all rows;
- accuracy and weighted F1 (scikit-learn) of ``argmax(truth)`` against ``argmax(pred)``.
  (The printouts round the means to 2 decimals and show ECE, accuracy and F1 in percent; the
  preset keeps full precision and fractions.)

``scaling-ambiguity-ser`` — WendaZhang08/scaling-ambiguity-SER at commit ``f419c7e``
(``lib/evaluation_lib.py``). Facts:

- samples are matched by id between the reference and the prediction files, so a failed sample
  (absent from the predictions) is dropped;
- every row is renormalised when its sum is off 1 by more than 1e-6;
- ``js`` = Jensen–Shannon *divergence* in bits (``scipy.stats.entropy(·, m, base=2)``, no square root);
- ``bc = Σ sqrt(p·q)`` of the renormalised rows, unrounded;
- ``r2`` = ``sklearn.metrics.r2_score`` per label column (truth first), averaged over the labels;
- ECE: 10 bins, ``bin = min(int(conf·10), 9)`` (``[lower, upper)``, 1.0 in the last), correct =
  ``argmax`` against ``argmax`` (first on a tie, label order ``Anger, Happiness, Neutral state,
  Sadness``), weights = share of all rows;
- accuracy and macro F1 (scikit-learn) of ``argmax(truth)`` against ``argmax(pred)``.

Where ambiemo's label set is the four AER-LLM classes, the columns are put in the peer's label
order first, so that its tie rule (the first maximum) picks the label the peer's code picks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, r2_score


@dataclass(frozen=True)
class Source:
    repo: str
    commit: str
    files: tuple[str, ...]

    def cite(self) -> str:
        return f"{self.repo}@{self.commit[:7]}: {', '.join(self.files)}"


@dataclass(frozen=True)
class PresetValue:
    """A preset's set-level value, the rows it averages over and the rows it left out (counted)."""

    value: float
    n: int
    excluded: int
    definition: str


AER_LLM_SOURCE = Source(
    "mHealthUnimelb/AER-LLM",
    "7295fa342d04ad6ad980aa224510adc5bd4dc9bd",
    ("Evaluation/eval_metrics.py", "Evaluation/eval_framework.py", "data_processing/prediction_processing.py"),
)
SCALING_SOURCE = Source(
    "WendaZhang08/scaling-ambiguity-SER", "f419c7e277c4334ecc59590b0440c9734430ff39", ("lib/evaluation_lib.py",)
)

AER_LLM_ORDER = ("neutral", "happy", "angry", "sad")  # prediction_processing.py emo_labels
SCALING_ORDER = ("angry", "happy", "neutral", "sad")  # evaluation_lib.py IEMOCAP_EMOTIONS / MSP_EMOTIONS
AER_LLM_EPS_KL = 1e-8
AER_LLM_EPS_R = 1e-10
AER_LLM_ECE_BINS = 5
SCALING_ECE_BINS = 10


def _in_order(p: np.ndarray, q: np.ndarray, labels: Sequence[str], order: Sequence[str]):
    """The columns in the peer's label order when the label sets agree, else as they are."""
    labels = [str(x) for x in labels]
    if sorted(labels) != sorted(order):
        return p, q, labels
    idx = [labels.index(x) for x in order]
    return p[:, idx], q[:, idx], list(order)


def round_half_even(x, digits: int) -> np.ndarray:
    """``round(numpy.float64, digits)``, which numpy's ``__round__`` computes as ``np.round``."""
    return np.round(np.asarray(x, dtype=float), digits)


def round_python(x, digits: int) -> np.ndarray:
    """Python's correctly rounded ``round(float, digits)`` per element (AER-LLM rounds its truth so)."""
    arr = np.asarray(x, dtype=float)
    return np.array([round(float(v), digits) for v in arr.ravel()]).reshape(arr.shape)


# --- AER-LLM ------------------------------------------------------------------------------------


def aer_kl(a, b) -> np.ndarray:
    """AER-LLM's ``KL(a, b)`` per row: ``round(Σ_{a≠0} a·ln(a/(b + 1e-8)), 4)``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float) + AER_LLM_EPS_KL
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a != 0, a * np.log(a / b), 0.0)
    return round_half_even(terms.sum(axis=1), 4)


def aer_js(p, q) -> np.ndarray:
    """AER-LLM's ``js_distance``: sqrt of the mean of two rounded KL terms to the mixture."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    m = 0.5 * (p + q)
    with np.errstate(invalid="ignore"):
        return np.sqrt(0.5 * aer_kl(p, m) + 0.5 * aer_kl(q, m))


def aer_bc(p, q) -> np.ndarray:
    return round_half_even(np.sqrt(np.asarray(p, dtype=float) * np.asarray(q, dtype=float)).sum(axis=1), 4)


def aer_r2(a, b) -> np.ndarray:
    """AER-LLM's ``R(a, b)``: population covariance² / (var·var + 1e-10), rounded to 4 decimals."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ac, bc = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    k = a.shape[1]
    cov = (ac * bc).sum(axis=1) / k
    return round_half_even(cov**2 / ((ac**2).sum(axis=1) / k * (bc**2).sum(axis=1) / k + AER_LLM_EPS_R), 4)


def aer_ece(q, p, n_bins: int = AER_LLM_ECE_BINS) -> float:
    """AER-LLM's ``ECE``: bins ``(lower, upper]`` of the top probability, argmax against argmax."""
    q, p = np.asarray(q, dtype=float), np.asarray(p, dtype=float)
    conf = q.max(axis=1)
    ok = (q.argmax(axis=1) == p.argmax(axis=1)).astype(float)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.mean() > 0:
            ece += abs(conf[inside].mean() - ok[inside].mean()) * inside.mean()
    return float(ece)


def aer_llm(p, q, parsed_ok, labels: Sequence[str]) -> dict[str, PresetValue]:
    """Every AER-LLM number from ambiemo's truth ``p``, predictions ``q`` and parse flags."""
    p, q = np.asarray(p, dtype=float), np.array(q, dtype=float)
    ok = np.asarray(parsed_ok, dtype=bool)
    p, q, order = _in_order(p, q, labels, AER_LLM_ORDER)
    if (~ok).any():
        if "neutral" not in order:
            raise ValueError(
                f"preset aer-llm scores a failed answer as one-hot neutral, but the label set {order} has no 'neutral'"
            )
        q[~ok] = np.eye(len(order))[order.index("neutral")]
    if not np.isfinite(q).all():
        raise ValueError("preset aer-llm: a parsed row has NaN probabilities; the predictions table is broken")
    truth = round_python(p, 2)
    n, fails = len(p), int((~ok).sum())
    y_true, y_pred = truth.argmax(axis=1), q.argmax(axis=1)
    per = {
        "js": (aer_js(q, truth), "sqrt(0.5 KL4(q,m) + 0.5 KL4(p,m)), KL4 rounded to 4 dp, 1e-8 added to m"),
        "bc": (aer_bc(q, truth), "sum sqrt(p q), rounded to 4 dp"),
        "r2": (aer_r2(q, truth), "per-utterance cov^2/(var var + 1e-10), rounded to 4 dp; constant rows score 0"),
        "kl": (aer_kl(q, truth), "KL(model || human + 1e-8), natural log, rounded to 4 dp"),
    }
    note = f"truth rounded to 2 dp; {fails} failed answer(s) scored as one-hot neutral"
    out = {
        k: PresetValue(float(round_half_even(v, 6).mean()) if n else np.nan, n, 0, f"{d}; {note}")
        for k, (v, d) in per.items()
    }
    out["ece"] = PresetValue(
        aer_ece(q, truth) if n else np.nan, n, 0, f"5 bins (lower, upper], argmax ties first; {note}"
    )
    out["accuracy"] = PresetValue(
        float(accuracy_score(y_true, y_pred)) if n else np.nan, n, 0, f"argmax vs argmax (first on ties); {note}"
    )
    out["f1"] = PresetValue(
        float(f1_score(y_true, y_pred, average="weighted", zero_division=0)) if n else np.nan,
        n,
        0,
        f"sklearn weighted F1, argmax vs argmax (first on ties); {note}",
    )
    return out


# --- scaling-ambiguity-SER ----------------------------------------------------------------------


def _renormalise(x: np.ndarray) -> np.ndarray:
    s = x.sum(axis=1, keepdims=True)
    off = (s > 0) & (np.abs(s - 1.0) > 1e-6)
    return np.where(off, x / np.where(s > 0, s, 1.0), x)


def scaling_js(p, q) -> np.ndarray:
    """The JS divergence in bits, through ``scipy.stats.entropy`` as the peer computes it."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    m = 0.5 * (p + q)
    return 0.5 * (stats.entropy(p, m, base=2, axis=1) + stats.entropy(q, m, base=2, axis=1))


def scaling_r2(p, q) -> float:
    """``sklearn.metrics.r2_score`` per label column (truth first), averaged over labels."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    return float(np.mean([r2_score(p[:, j], q[:, j]) for j in range(p.shape[1])]))


def scaling_ece(q, p, n_bins: int = SCALING_ECE_BINS) -> float:
    """Bins ``min(int(conf·n), n−1)``, argmax against argmax, weights over all rows."""
    q, p = np.asarray(q, dtype=float), np.asarray(p, dtype=float)
    pred = q.argmax(axis=1)
    conf = q[np.arange(len(q)), pred]
    ok = (pred == p.argmax(axis=1)).astype(float)
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        inside = idx == b
        if inside.any():
            ece += inside.sum() / len(q) * abs(conf[inside].mean() - ok[inside].mean())
    return float(ece)


def scaling_ambiguity_ser(p, q, parsed_ok, labels: Sequence[str]) -> dict[str, PresetValue]:
    """Every scaling-ambiguity-SER number; failed answers are dropped (and counted)."""
    ok = np.asarray(parsed_ok, dtype=bool)
    p, q = np.asarray(p, dtype=float)[ok], np.asarray(q, dtype=float)[ok]
    p, q, _ = _in_order(p, q, labels, SCALING_ORDER)
    p, q = _renormalise(p), _renormalise(q)
    n, dropped = len(p), int((~ok).sum())
    note = f"{dropped} failed answer(s) dropped"
    has = n > 0
    y_true, y_pred = p.argmax(axis=1), q.argmax(axis=1)
    return {
        "js": PresetValue(float(scaling_js(p, q).mean()) if has else np.nan, n, dropped, f"JSD in bits; {note}"),
        "bc": PresetValue(
            float(np.sqrt(p * q).sum(axis=1).mean()) if has else np.nan, n, dropped, f"sum sqrt(p q); {note}"
        ),
        "r2": PresetValue(
            scaling_r2(p, q) if n > 1 else np.nan, n, dropped, f"mean over labels of sklearn r2_score; {note}"
        ),
        "ece": PresetValue(
            scaling_ece(q, p) if has else np.nan, n, dropped, f"10 bins [lower, upper), argmax ties first; {note}"
        ),
        "accuracy": PresetValue(
            float(accuracy_score(y_true, y_pred)) if has else np.nan, n, dropped, f"argmax vs argmax; {note}"
        ),
        "f1": PresetValue(
            float(f1_score(y_true, y_pred, average="macro", zero_division=0)) if has else np.nan,
            n,
            dropped,
            f"sklearn macro F1, argmax vs argmax; {note}",
        ),
    }


PRESETS: dict[str, tuple[Source, Callable[..., dict[str, PresetValue]]]] = {
    "aer-llm": (AER_LLM_SOURCE, aer_llm),
    "scaling-ambiguity-ser": (SCALING_SOURCE, scaling_ambiguity_ser),
}
