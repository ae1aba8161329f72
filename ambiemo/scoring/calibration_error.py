"""Expected calibration error and its reliability table, the ``[lower, upper)`` binning that
ambiemo's headline ECE uses (the peers' own binnings are presets in ``ambiemo.scoring.literature``).

Confidence = the probability the model gave its predicted label; correctness = that label equals
the majority label under the tie policy (NaN where the policy excludes the utterance). Confidences
fall in ``n_bins`` equal-width bins on [0, 1]: bin ``b`` holds ``[b/n, (b+1)/n)`` and the last bin
also holds 1.0; ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b|.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ECE_BINS = 5  # the bin count of AER-LLM's ECE (its edges are (lower, upper]; see presets.py)


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
