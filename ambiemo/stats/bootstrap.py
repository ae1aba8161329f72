"""Speaker-clustered bootstrap intervals, with set-level metrics recomputed exactly under resample weights."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.config import settings
from ambiemo.scoring import KEYS, labels_of, scoring_params
from ambiemo.scoring import metrics as M
from ambiemo.stats.cluster_sums import MEAN_COLUMNS  # per-utterance columns whose group value is their mean

SET_METRICS = ("r2", "ece", "entropy_spearman", "f1_weighted", "uar")


def stats_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``stats`` with the schema's defaults (``ambiemo.core.params.Stats``), power keys included."""
    return settings(dict(params or {}), "stats")


def _seed(params: Mapping[str, Any] | None, seed: int | None) -> int:
    return int(seed if seed is not None else (params or {}).get("seed", 0) or 0)


def _rng(seed: int, key: Any) -> np.random.Generator:
    """A generator per group, from the run seed and the group's name: the same group gets the
    same resamples whatever else is in the table."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


# --------------------------------------------------------------------------- clusters


def clusters(frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Cluster index per row for the bootstrap, and the unit used.

    Rows of one speaker share a cluster; rows whose speaker is unknown ("" or missing) form one
    cluster per utterance. Returns ``(codes, unit)`` with unit ``speaker``, ``utterance`` (no
    speaker known) or ``speaker+utterance`` (some known).
    """
    codes, known = cluster_codes(frame)
    return codes, cluster_unit(known)


def cluster_codes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``clusters``' codes (in the sorted order of the cluster keys) and which rows have a speaker."""
    speaker = frame["speaker"].fillna("").astype(str) if "speaker" in frame else pd.Series("", index=frame.index)
    known = np.asarray(speaker != "", dtype=bool)
    if "dataset" not in frame or frame["dataset"].nunique(dropna=False) <= 1:
        # One dataset (a chunk of the stages): the keys share their prefix, so their sorted order is
        # the speakers' names sorted, then the utterances' ids; no key string is built per row.
        codes = np.empty(len(frame), dtype=np.intp)
        codes[known], names = pd.factorize(speaker.to_numpy()[known], sort=True)
        codes[~known] = pd.factorize(frame["utt_id"].astype(str).to_numpy()[~known], sort=True)[0] + len(names)
        return codes, known
    dataset = frame["dataset"].astype(str)
    key = np.where(known, "spk:" + dataset + "/" + speaker, "utt:" + dataset + "/" + frame["utt_id"].astype(str))
    return pd.factorize(pd.Series(key), sort=True)[0], known


def cluster_unit(known: np.ndarray) -> str:
    return "speaker" if known.all() else "utterance" if not known.any() else "speaker+utterance"


def subset_clusters(codes: np.ndarray, known: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, str]:
    """``clusters(frame.iloc[rows])`` from the whole frame's ``cluster_codes``, without building its
    keys again: the codes are in the keys' sorted order, so renumbering the rows' codes in sorted
    order gives the subset's own."""
    return pd.factorize(np.asarray(codes)[rows], sort=True)[0], cluster_unit(np.asarray(known)[rows])


def cluster_counts(n_clusters: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_clusters): how often each cluster was drawn in each resample."""
    draws = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    offset = draws + n_clusters * np.arange(n_resamples)[:, None]  # one bincount for all resamples
    return np.bincount(offset.ravel(), minlength=n_resamples * n_clusters).reshape(n_resamples, n_clusters)


def resample_weights(codes: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_rows) integer weights: how often each row's cluster was drawn."""
    return cluster_counts(int(codes.max()) + 1, n_resamples, rng)[:, codes].astype(float)


# Cluster draws held at once by the chunked bootstrap: (resamples in a chunk) × clusters ≤ this.
_MAX_DRAWS = 1 << 21


def cluster_count_chunks(n_clusters: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``cluster_counts(n_clusters, n_resamples, rng)`` in chunks of resamples, so that no
    resamples × clusters array is held when clusters are many (every utterance its own). The
    generator's stream is consumed row by row either way, so the chunks stacked equal the whole."""
    step = max(1, _MAX_DRAWS // max(n_clusters, 1))
    for start in range(0, n_resamples, step):
        yield cluster_counts(n_clusters, min(step, n_resamples - start), rng)


def cluster_mean_bootstrap(d: np.ndarray, codes: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of ``d`` resampling whole clusters (``codes``), from the per-cluster sums
    and sizes: each resample's mean is Σ_c k_c S_c / Σ_c k_c n_c, equal to the mean of the
    resampled rows (``resample_weights`` @ d / weights) without a resamples × rows array."""
    n_clusters = int(codes.max()) + 1
    sums = np.bincount(codes, weights=np.asarray(d, dtype=float), minlength=n_clusters)
    sizes = np.bincount(codes, minlength=n_clusters).astype(float)
    parts = [k @ sums / (k @ sizes) for k in cluster_count_chunks(n_clusters, n_resamples, rng)]
    return np.concatenate(parts)


# --------------------------------------------------------------------------- weighted metrics


def _wmean(w: np.ndarray, x: np.ndarray, w_sum: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean per row of ``w`` over the non-NaN ``x``; ``w_sum`` is ``w.sum(axis=1)``, passed
    in so that columns without NaN (most) neither copy ``w`` nor sum it again."""
    ok = ~np.isnan(x)
    if ok.all():
        ww, total = w, (w.sum(axis=1) if w_sum is None else w_sum)
    else:
        ww = w[:, ok]
        total = ww.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ww @ x[ok] / total


def _wpearson(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation per row of ``w`` ((B, n) weights, x and y (B, n) or (n,))."""
    sw = w.sum(axis=1, keepdims=True)
    mx = (w * x).sum(axis=1, keepdims=True) / sw
    my = (w * y).sum(axis=1, keepdims=True) / sw
    cov = (w * (x - mx) * (y - my)).sum(axis=1)
    vx = (w * (x - mx) ** 2).sum(axis=1)
    vy = (w * (y - my) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vx * vy)
    r[(vx <= 1e-15 * sw[:, 0]) | (vy <= 1e-15 * sw[:, 0])] = np.nan
    return r


def _wranks(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Average ranks of each row's value within the weighted (resampled) sample, as
    ``scipy.stats.rankdata`` would give on the rows repeated ``w`` times.

    The copies of each distinct value are summed over the rows sorted by value (O(B·n)); a
    one-hot (rows × distinct values) product did the same in O(B·n²). With integer weights every
    sum is an exact integer, so both give the same ranks to the last bit.
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]  # the start of each run of equal values
    wu = np.add.reduceat(w[:, order], np.flatnonzero(first), axis=1)  # (B, U): copies of each value
    below = np.cumsum(wu, axis=1) - wu
    inv = np.empty(len(x), dtype=int)
    inv[order] = np.cumsum(first) - 1  # each row's distinct value
    return (below + (wu + 1) / 2)[:, inv]


def weighted_metrics(
    frame: pd.DataFrame, w: np.ndarray, labels: Sequence[str], ece_bins: int = M.ECE_BINS
) -> dict[str, np.ndarray]:
    """Every metric of a group of score rows under row weights ``w`` (B, n).

    With integer weights each value equals the metric computed on the rows repeated that many
    times, which is what a bootstrap resample is.
    """
    w = np.atleast_2d(np.asarray(w, dtype=float))
    w_sum = w.sum(axis=1)
    out = {
        name: _wmean(w, frame[col].to_numpy(dtype=float), w_sum) for name, col in MEAN_COLUMNS.items() if col in frame
    }
    p = frame[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
    q = frame[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    has_q = np.isfinite(q).all(axis=1)
    wq, p, q = w[:, has_q], p[has_q], q[has_q]
    k = len(labels)
    # R²: every (utterance, label) cell carries its utterance's weight; the pooled moments are
    # weighted sums of per-utterance sums, so no (B, n·k) array is needed.
    n_cells = k * wq.sum(axis=1)
    sx, sy = wq @ p.sum(axis=1), wq @ q.sum(axis=1)
    sxx, syy, sxy = wq @ (p * p).sum(axis=1), wq @ (q * q).sum(axis=1), wq @ (p * q).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov, vx, vy = sxy - sx * sy / n_cells, sxx - sx * sx / n_cells, syy - sy * sy / n_cells
        r2 = cov * cov / (vx * vy)
    r2[(vx <= 1e-12 * n_cells) | (vy <= 1e-12 * n_cells)] = np.nan
    out["r2"] = r2
    if has_q.sum() >= 1:
        hp, hq = M.entropy_for_ranking(p), M.entropy_for_ranking(q)
        out["entropy_spearman"] = _wpearson(wq, _wranks(wq, hp), _wranks(wq, hq))
        enough = (wq > 0).sum(axis=1) >= 3
        out["entropy_spearman"][~enough] = np.nan
    else:
        out["entropy_spearman"] = np.full(len(w), np.nan)
    # ECE: Σ_b |Σ correct_b − Σ confidence_b| / n over the rows with both.
    conf, corr = frame["confidence"].to_numpy(dtype=float), frame["correct"].to_numpy(dtype=float)
    ok = ~np.isnan(conf) & ~np.isnan(corr)
    b = np.minimum((conf[ok] * ece_bins).astype(int), ece_bins - 1)
    onehot = np.zeros((ok.sum(), ece_bins))
    onehot[np.arange(ok.sum()), b] = 1
    wo = w[:, ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["ece"] = np.abs(wo @ (onehot * corr[ok, None]) - wo @ (onehot * conf[ok, None])).sum(axis=1) / wo.sum(
            axis=1
        )
    # weighted F1 and UAR from per-class weighted counts (classes present among the true labels).
    lookup = pd.Index(list(labels))  # label -> index, -1 for anything else ("" for a tie, NaN)
    yt = lookup.get_indexer(frame["majority_used"]).astype(int)
    yp = lookup.get_indexer(frame["pred_label"]).astype(int)
    T = np.zeros((len(frame), k))
    P = np.zeros((len(frame), k))
    T[yt >= 0, yt[yt >= 0]] = 1
    keep = (yt >= 0) & (yp >= 0)
    P[keep, yp[keep]] = 1  # predictions on excluded (tied) rows do not count
    tp, support, pred = w @ (T * P), w @ T, w @ P
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support > 0, 2 * tp / (support + pred), 0.0)
        present = (support > 0).sum(axis=1)  # classes among the resample's true labels
        out["uar"] = np.where(support > 0, recall, 0.0).sum(axis=1) / present
        out["f1_weighted"] = (support * f1).sum(axis=1) / support.sum(axis=1)
    return out


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    by: Sequence[str] = KEYS,
    metrics: Sequence[str] | None = None,
    per_bin: bool = False,
    n_resamples: int | None = None,
    ci_level: float | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Speaker-clustered percentile bootstrap intervals, one row per group × metric.

    Columns: the ``by`` keys (plus ``ambiguity`` and ``ambiguity_rank`` when ``per_bin``;
    ``"all"`` / -1 for the whole group), ``metric``, ``estimate`` (on the data as they are),
    ``ci_low``, ``ci_high``, ``n`` rows, ``n_clusters``, ``cluster_unit`` and ``n_resamples``.
    ``metrics`` defaults to every metric of ``ambiemo.scoring.metrics.METRICS`` plus the oracle.
    Defaults come from params ``scoring`` (``bootstrap_resamples``, ``ci_level``) and ``seed``.
    """
    sp = scoring_params(params)
    n_resamples = int(n_resamples or sp["bootstrap_resamples"])
    level = float(ci_level or sp["ci_level"])
    seed = _seed(params, seed)
    metrics = list(metrics or [*M.METRICS, "oracle_js", "pass_at_n"])
    by = list(by)
    rows = []
    for key, g in scores.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        labels = [x for x in labels_of(g, "true_") if g[f"true_{x}"].notna().all()]
        parts = [("all", -1, g)]
        if per_bin:
            parts += [
                (b, int(gb["ambiguity_rank"].iloc[0]), gb)
                for b, gb in sorted(g.groupby("ambiguity"), key=lambda t: int(t[1]["ambiguity_rank"].iloc[0]))
            ]
        for bin_name, rank, part in parts:
            codes, unit = clusters(part)
            ece_bins = int(sp["ece_bins"])
            point, boot = _cluster_bootstrap(part, codes, labels, ece_bins, n_resamples, seed, (*key, bin_name))
            for metric in metrics:
                if metric not in boot:
                    raise KeyError(f"bootstrap_ci: unknown metric {metric!r}; choose from {sorted(boot)}")
                values = boot[metric][~np.isnan(boot[metric])]
                lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2]) if values.size else (np.nan, np.nan)
                row = dict(zip(by, key, strict=True))
                if per_bin:
                    row.update(ambiguity=bin_name, ambiguity_rank=rank)
                row.update(
                    metric=metric,
                    estimate=float(point[metric][0]),
                    ci_low=float(lo),
                    ci_high=float(hi),
                    n=len(part),
                    n_clusters=int(codes.max()) + 1,
                    cluster_unit=unit,
                    n_resamples=n_resamples,
                )
                rows.append(row)
    return pd.DataFrame(rows)


def _cluster_bootstrap(
    part: pd.DataFrame, codes: np.ndarray, labels: Sequence[str], ece_bins: int, n_resamples: int, seed: int, key: tuple
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Point estimates and bootstrap replicates of every metric of one group, from its per-cluster
    sums (``ambiemo.stats.cluster_sums``): no resamples × rows array, cost linear in the rows."""
    from ambiemo.stats.cluster_sums import cluster_statistics, metrics_from_sums

    sums, lay, _ = cluster_statistics(part, codes, labels, ece_bins)
    with_q = sums[:, lay.slices["r2"].start]  # rows with a distribution, per cluster
    point = metrics_from_sums(sums.sum(axis=0), lay, np.array([with_q.sum()]))
    chunks = [
        metrics_from_sums(k @ sums, lay, (k > 0) @ with_q)
        for k in cluster_count_chunks(int(codes.max()) + 1, n_resamples, _rng(seed, key))
    ]
    return point, {m: np.concatenate([c[m] for c in chunks]) for m in chunks[0]}
