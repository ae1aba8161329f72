"""The parse-failure policy (params ``parsing.on_failure``): what an answer that did not parse counts as.

Stated once for the inference stage, which writes it into the predictions, and for scoring, which
reads the predicted label under it; neither imports the other's code for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# params ``parsing.on_failure``:
#   uniform  a failed answer counts as the uniform distribution (and as no label: wrong for accuracy)
#   nan      p_* stay NaN; scoring leaves the row out of distribution metrics and counts it (still
#            wrong for accuracy)
#   neutral  one-hot on the label ``neutral``, for the distribution and the predicted label alike
#            (AER-LLM's rule, data_processing/prediction_processing.py); needs a ``neutral`` label
#   drop     p_* stay NaN and scoring leaves the row out of every metric, hard labels included
#            (scaling-ambiguity-SER's rule: its evaluation matches samples by id); counted
FAILURE_POLICIES = ("uniform", "nan", "neutral", "drop")
NEUTRAL = "neutral"


def apply_failure_policy(
    p: np.ndarray | None, n_labels: int, policy: str = "uniform", labels: Sequence[str] | None = None
) -> tuple[np.ndarray, bool]:
    """``(distribution, parsed_ok)``: ``p`` itself when it parsed, else what ``policy`` puts in its place
    (``neutral`` needs ``labels``)."""
    if policy not in FAILURE_POLICIES:
        raise ValueError(f"params parsing.on_failure must be one of {FAILURE_POLICIES}, got {policy!r}")
    index = failure_label_index(policy, labels)
    if p is not None:
        return np.asarray(p, dtype=float), True
    if policy == "uniform":
        return np.full(n_labels, 1.0 / n_labels), False
    if index is not None:
        return one_hot(index, n_labels), False
    return np.full(n_labels, np.nan), False


def failure_label_index(policy: str, labels: Sequence[str] | None) -> int | None:
    """The label a failed answer predicts under ``policy`` (``neutral``: its index), else None."""
    if policy != "neutral":
        return None
    names = [str(x).lower() for x in (labels or ())]
    if NEUTRAL not in names:
        raise ValueError(
            f"params parsing.on_failure 'neutral' scores a failed answer as one-hot neutral, but the label set "
            f"{list(labels or ())} has no 'neutral'; choose uniform, nan or drop"
        )
    return names.index(NEUTRAL)


def one_hot(index: int, n: int) -> np.ndarray:
    p = np.zeros(n)
    p[index] = 1.0
    return p
