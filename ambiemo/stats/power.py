"""Power: does a null result mean anything? The smallest test-time-scaling gain a dataset can show.

For a comparison of a strategy with the baseline on one metric, the inputs are the per-utterance
paired differences ``d`` and their speakers. From them:

- ``sd``: the standard deviation of ``d`` (ddof = 1).
- ``icc``: the intra-speaker correlation of ``d``, the one-way ANOVA estimator
  ``(MSB − MSW) / (MSB + (n0 − 1) MSW)`` with ``n0 = (N − Σ n_c² / N) / (C − 1)`` (unequal
  speaker sizes), clipped to [0, 1].
- ``design_effect``: ``1 + (m − 1) · icc`` with ``m = N / C`` the mean utterances per speaker;
  ``n_effective = N / design_effect``.
- ``mde``: the minimum detectable gain at ``power`` (80%) and two-sided ``alpha`` (0.05), in the
  metric's units: ``δ · sd`` where ``δ`` solves the power of a one-sample t-test with
  noncentrality ``δ · sqrt(n_effective)`` and ``min(n_effective, C) − 1`` degrees of freedom. With
  equal speaker sizes this is exactly the t-test on speaker means; with no clustering (``C = N``,
  ``icc = 0``) it is the ordinary paired t-test's power (statsmodels ``TTestPower``).
- ``n_needed``: the utterances needed to detect a stated ``gain``: the smallest number of
  speakers ``C'`` (each of the observed mean size ``m``, the same ``icc`` and ``sd``) whose power
  reaches the target, times ``m`` (rounded up).
- ``note``: why a row has no ``mde``: paired differences without variance (a strategy answering
  exactly as the baseline does, e.g. both fall back to uniform) leave nothing to plan from, so
  ``mde`` and ``n_needed`` are missing there rather than a misleading 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from ambiemo.scoring.gains import KEY_COLUMNS
from ambiemo.stats.gains import paired_differences

POWER = 0.8
ALPHA = 0.05
_MAX_CLUSTERS = 10**7


def icc_anova(y: np.ndarray, clusters: np.ndarray) -> float:
    """One-way ANOVA intra-cluster correlation of ``y``, clipped to [0, 1] (0 with one cluster or
    with every cluster of size one)."""
    y = np.asarray(y, dtype=float)
    codes, uniques = pd.factorize(np.asarray(clusters))
    n_total, n_clusters = y.size, len(uniques)
    if n_clusters < 2 or n_clusters == n_total:
        return 0.0
    sizes = np.bincount(codes, minlength=n_clusters).astype(float)
    means = np.bincount(codes, weights=y, minlength=n_clusters) / sizes
    msb = (sizes * (means - y.mean()) ** 2).sum() / (n_clusters - 1)
    msw = ((y - means[codes]) ** 2).sum() / (n_total - n_clusters)
    n0 = (n_total - (sizes**2).sum() / n_total) / (n_clusters - 1)
    denom = msb + (n0 - 1) * msw
    if denom <= 0:
        return 0.0
    return float(np.clip((msb - msw) / denom, 0.0, 1.0))


def t_power(effect: float, n_effective: float, df: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided one-sample t-test: standardised effect, effective n, degrees of freedom."""
    if df < 1:
        return float("nan")
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * math.sqrt(n_effective)
    upper, lower = sps.nct.sf(crit, df, nc), sps.nct.cdf(-crit, df, nc)
    # scipy's noncentral t returns NaN far in a tail: there the upper tail is 1, the lower 0.
    return float(np.nan_to_num(upper, nan=1.0) + np.nan_to_num(lower, nan=0.0))


def minimum_detectable_effect(n_effective: float, df: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The standardised effect ``δ`` whose power is ``power`` (NaN when df < 1)."""
    if df < 1:
        return float("nan")
    hi = 1.0
    while t_power(hi, n_effective, df, alpha) < power:  # widen the bracket only as far as needed
        hi *= 2
    return float(optimize.brentq(lambda e: t_power(e, n_effective, df, alpha) - power, 1e-9, hi, xtol=1e-12))


def design(d: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """sd, icc, mean cluster size, design effect and effective n of paired differences ``d``."""
    d = np.asarray(d, dtype=float)
    n, c = d.size, len(pd.unique(np.asarray(clusters)))
    icc = icc_anova(d, clusters)
    m = n / c if c else float("nan")
    de = 1 + (m - 1) * icc
    return {
        "n": n,
        "n_clusters": c,
        "sd": float(d.std(ddof=1)) if n > 1 else float("nan"),
        "icc": icc,
        "mean_cluster_size": m,
        "design_effect": de,
        "n_effective": n / de,
    }


def _df(n_effective: float, n_clusters: float) -> float:
    return min(n_effective, n_clusters) - 1


def n_needed(
    gain: float,
    sd: float,
    icc: float = 0.0,
    mean_cluster_size: float = 1.0,
    power: float = POWER,
    alpha: float = ALPHA,
) -> int:
    """Utterances needed to detect ``gain`` (metric units): speakers of the given size times it."""
    if not (gain > 0 and sd > 0):
        raise ValueError(f"n_needed: gain and sd must be positive (got gain={gain}, sd={sd})")
    effect, de = gain / sd, 1 + (mean_cluster_size - 1) * icc

    def enough(c: int) -> bool:
        n = c * mean_cluster_size
        return t_power(effect, n / de, _df(n / de, c), alpha) >= power

    lo, hi = 2, 2
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > _MAX_CLUSTERS:
            raise ValueError(f"n_needed: more than {_MAX_CLUSTERS} speakers would be needed for gain {gain}")
    while lo < hi:  # the smallest c with enough power
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if not enough(mid) else (lo, mid)
    return int(math.ceil(hi * mean_cluster_size - 1e-9))


def power_row(d, clusters, gain: float | None = None, power: float = POWER, alpha: float = ALPHA) -> dict:
    """The design of ``d``, its minimum detectable gain and (for a stated ``gain``) the n needed."""
    row = design(d, clusters)
    row["gain"] = gain
    if not (np.isfinite(row["sd"]) and row["sd"] > 0):
        # Identical paired differences (a strategy that answers as the baseline does) give no variance
        # to plan from: no detectable gain is computed rather than a misleading 0.
        row.update(mde=float("nan"), n_needed=None, note="no variance in the paired differences")
        return row
    effect = minimum_detectable_effect(row["n_effective"], _df(row["n_effective"], row["n_clusters"]), power, alpha)
    row["mde"] = effect * row["sd"]
    ok = gain is not None
    row["n_needed"] = n_needed(gain, row["sd"], row["icc"], row["mean_cluster_size"], power, alpha) if ok else None
    row["note"] = ""
    return row


def power_table(
    scores: pd.DataFrame,
    metrics: Sequence[str] = ("js",),
    *,
    baseline: str = "baseline",
    cluster: str = "speaker",
    gains: Mapping[str, float] | None = None,
    power: float = POWER,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """One row per dataset × model × strategy × budget × metric against the baseline (smallest
    budget): n, speakers, sd, icc, design effect, effective n, ``mde`` (metric units) and, for a
    metric with a stated gain in ``gains``, ``n_needed``. Pairs with a NaN are dropped and counted."""
    rows = []
    for key, d, clusters, dropped in paired_differences(scores, metrics, baseline, cluster):
        row = power_row(d, clusters, (gains or {}).get(key[-1]), power, alpha)
        rows.append(
            {
                **dict(zip(KEY_COLUMNS, key, strict=True)),
                "n_dropped": dropped,
                **row,
                "power": power,
                "alpha": alpha,
            }
        )
    return pd.DataFrame(rows)
