"""Every bootstrap metric from per-cluster sums: a resample is a count per cluster, never a row weight.

A speaker-clustered bootstrap resample draws clusters with replacement; a metric on the resampled
rows is then a function of sums over rows weighted by their cluster's count. Every metric of the CI
table is such a function of a few per-cluster sums, so the rows are reduced once to a (clusters ×
statistics) array and each resample costs (clusters × statistics), whatever the number of rows:

- means (JS, BC, KL, TV, Brier, accuracy, plausible accuracy, oracle JS, pass@N): per cluster the
  sum of the non-NaN values and their count;
- pooled R²: per cluster the count of rows with a distribution and the sums of p, q, p², q², p·q
  over their labels (the pooled moments of ``ambiemo.scoring.metrics.r2``);
- ECE: per cluster and confidence bin the sums of correctness and confidence, and the count;
- weighted F1 and UAR: per cluster and class the true positives, the support and the predictions;
- entropy Spearman: the Pearson correlation of the vote-entropy and predicted-entropy *ranks*,
  ranked once on the observed rows (per cluster: count, sums, squares and cross products). On the
  observed data this is Spearman's rho exactly; on a resample it keeps the observed ranks instead
  of re-ranking the duplicated rows. That is the one method change from the row-weight bootstrap
  (``ambiemo.stats.bootstrap.weighted_metrics``), whose re-ranking cost resamples × rows.

``cluster_statistics`` builds the array, ``metrics_from_sums`` turns resample sums into metrics;
with every count 1 they give the point estimates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ambiemo.scoring import metrics as M

# Per-utterance score columns whose group value is their mean (NaN rows left out), by metric name.
MEAN_COLUMNS = {
    "js": "js",
    "bc": "bc",
    "kl": "kl",
    "tv": "tv",
    "brier": "brier",
    "accuracy": "correct",
    "plausible_accuracy": "plausible",
    "oracle_js": "oracle_js",
    "pass_at_n": "pass_at_n",
}


class SumLayout:
    """Where each statistic sits in the columns of the (clusters × statistics) array."""

    def __init__(self, means: Sequence[str], k: int, ece_bins: int) -> None:
        self.means, self.k, self.ece_bins = list(means), k, ece_bins
        self.slices: dict[str, slice] = {}
        at = 0
        for name, width in (
            ("mean_sum", len(self.means)),
            ("mean_n", len(self.means)),
            ("r2", 6),
            ("rank", 6),
            ("ece_corr", ece_bins),
            ("ece_conf", ece_bins),
            ("ece_n", 1),
            ("tp", k),
            ("support", k),
            ("pred", k),
        ):
            self.slices[name] = slice(at, at + width)
            at += width
        self.width = at


def _moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: 1, a, b, a², b², a·b (each already summed over labels where a and b are per label)."""
    return np.column_stack([np.ones(len(a)), a, b, a * a, b * b, a * b])


def cluster_statistics(
    frame: pd.DataFrame, codes: np.ndarray, labels: Sequence[str], ece_bins: int = M.ECE_BINS
) -> tuple[np.ndarray, SumLayout, int]:
    """The (clusters × statistics) sums of a group of score rows, their layout, and the number of
    rows with a predicted distribution that entered the rank statistics."""
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    means = [name for name, col in MEAN_COLUMNS.items() if col in frame]
    k = len(labels)
    lay = SumLayout(means, k, ece_bins)
    rows = np.zeros((len(frame), lay.width))
    for j, name in enumerate(means):
        x = frame[MEAN_COLUMNS[name]].to_numpy(dtype=float)
        ok = ~np.isnan(x)
        rows[ok, lay.slices["mean_sum"].start + j] = x[ok]
        rows[ok, lay.slices["mean_n"].start + j] = 1.0
    p = frame[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
    q = frame[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    has_q = np.isfinite(q).all(axis=1)
    ph, qh = p[has_q], q[has_q]
    rows[has_q, lay.slices["r2"]] = np.column_stack(
        [
            np.ones(len(ph)),
            ph.sum(axis=1),
            qh.sum(axis=1),
            (ph * ph).sum(axis=1),
            (qh * qh).sum(axis=1),
            (ph * qh).sum(axis=1),
        ]
    )
    if has_q.any():
        rp = sps.rankdata(M.entropy_for_ranking(ph))
        rq = sps.rankdata(M.entropy_for_ranking(qh))
        rows[has_q, lay.slices["rank"]] = _moments(rp, rq)
    conf, corr = frame["confidence"].to_numpy(dtype=float), frame["correct"].to_numpy(dtype=float)
    ok = ~np.isnan(conf) & ~np.isnan(corr)
    b = np.minimum((conf[ok] * ece_bins).astype(int), ece_bins - 1)
    where = np.flatnonzero(ok)
    rows[where, lay.slices["ece_corr"].start + b] = corr[ok]
    rows[where, lay.slices["ece_conf"].start + b] = conf[ok]
    rows[where, lay.slices["ece_n"].start] = 1.0
    lookup = pd.Index(list(labels))  # label -> index, -1 for anything else ("" for a tie, NaN)
    yt = lookup.get_indexer(frame["majority_used"]).astype(int)
    yp = lookup.get_indexer(frame["pred_label"]).astype(int)
    has_t = yt >= 0
    keep = has_t & (yp >= 0)  # predictions on excluded (tied) rows do not count
    rows[np.flatnonzero(has_t), lay.slices["support"].start + yt[has_t]] = 1.0
    rows[np.flatnonzero(keep), lay.slices["pred"].start + yp[keep]] = 1.0
    hit = keep & (yt == yp)
    rows[np.flatnonzero(hit), lay.slices["tp"].start + yt[hit]] = 1.0
    sums = np.zeros((n_clusters, lay.width))
    if len(codes):  # Σ rows per cluster: one stable sort and a reduceat (np.add.at is slow)
        order = np.argsort(codes, kind="stable")
        sc = codes[order]
        starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
        sums[sc[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return sums, lay, int(has_q.sum())


def metrics_from_sums(totals: np.ndarray, lay: SumLayout, positive_rank_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric per resample from its (resamples × statistics) sums; ``positive_rank_rows`` is,
    per resample, the number of rows with a distribution drawn at least once (Spearman needs 3)."""
    t = np.atleast_2d(totals)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        s, n = t[:, lay.slices["mean_sum"]], t[:, lay.slices["mean_n"]]
        for j, name in enumerate(lay.means):
            out[name] = s[:, j] / n[:, j]
        cnt, sx, sy, sxx, syy, sxy = t[:, lay.slices["r2"]].T
        n_cells = lay.k * cnt
        cov, vx, vy = sxy - sx * sy / n_cells, sxx - sx * sx / n_cells, syy - sy * sy / n_cells
        r2 = cov * cov / (vx * vy)
        r2[(vx <= 1e-12 * n_cells) | (vy <= 1e-12 * n_cells)] = np.nan
        out["r2"] = r2
        cnt, sx, sy, sxx, syy, sxy = t[:, lay.slices["rank"]].T
        vx, vy = sxx - sx * sx / cnt, syy - sy * sy / cnt
        rho = (sxy - sx * sy / cnt) / np.sqrt(vx * vy)
        rho[(vx <= 1e-15 * cnt) | (vy <= 1e-15 * cnt) | (np.asarray(positive_rank_rows) < 3)] = np.nan
        out["entropy_spearman"] = rho
        gap = np.abs(t[:, lay.slices["ece_corr"]] - t[:, lay.slices["ece_conf"]]).sum(axis=1)
        out["ece"] = gap / t[:, lay.slices["ece_n"]][:, 0]
        tp, support, pred = t[:, lay.slices["tp"]], t[:, lay.slices["support"]], t[:, lay.slices["pred"]]
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support > 0, 2 * tp / (support + pred), 0.0)
        present = (support > 0).sum(axis=1)
        out["uar"] = np.where(support > 0, recall, 0.0).sum(axis=1) / present
        out["f1_weighted"] = (support * f1).sum(axis=1) / support.sum(axis=1)
    return out
