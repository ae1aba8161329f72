"""Gains with their uncertainty: paired differences with speaker clusters, and the gains table.

The gain itself is defined once, in ``ambiemo.scoring.gains`` (sign, baseline, pairing); this
module adds the clusters and the bootstrap:

- ``paired_differences``: per dataset × model × strategy × budget × metric, the per-utterance
  differences on the utterances both answered, with their speaker clusters (the paired tests in
  ``ambiemo.stats.permutation`` and the power table read them).
- ``gain_table(scores, params)``: the mean paired gain per cell × ambiguity level (``"all"`` and
  each bin) with a speaker-clustered percentile bootstrap interval, drawn from per-cluster sums
  (``ambiemo.stats.bootstrap.cluster_mean_bootstrap``). The stats stage writes it as
  ``stats/gains.parquet``; the paired table's ``diff_ci_*`` are its ``"all"`` rows (unsigned), and
  figure 3 draws its intervals (figures read tables; they do not recompute statistics).

The bootstrap generator of a row is seeded by the run seed and the row's name: ``(dataset, model,
strategy, budget, metric)`` for the whole set (the paired table's key) and ``(dataset, model,
strategy, budget, level, metric)`` for a bin, so that an interval depends on neither row order nor
on which other cells are present.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.scoring.gains import (
    direction,
    paired_cells,
)

GAIN_COLUMNS = [
    "dataset",
    "model",
    "strategy",
    "budget",
    "ambiguity",
    "ambiguity_rank",
    "metric",
    "params_b",
    "n_pairs",
    "n_dropped",
    "n_clusters",
    "gain",
    "ci_low",
    "ci_high",
    "n_resamples",
]


def paired_differences(
    scores: pd.DataFrame, metrics: Sequence[str], baseline: str = "baseline", cluster: str = "speaker"
) -> Iterator[tuple[tuple, np.ndarray, np.ndarray, int]]:
    """Per dataset × model × strategy × budget × metric: ``(key, d, clusters, n_dropped)``, the
    per-utterance differences (strategy − baseline) on the utterances both answered, their clusters
    (``ambiemo.stats.bootstrap.clusters``: speakers, each utterance without one its own, when
    ``cluster`` is ``"speaker"``; else that column) and how many pairs a NaN dropped."""
    from ambiemo.stats.bootstrap import clusters as bootstrap_clusters

    for _, _, pc in paired_cells(scores, baseline):
        if pc is None:
            continue
        rows = pc.base.reset_index()
        groups = bootstrap_clusters(rows)[0] if cluster == "speaker" else rows[cluster].to_numpy()
        for metric in metrics:
            x, y, ok = pc.pairs(metric)
            yield (pc.dataset, pc.model, pc.strategy, pc.budget, metric), x[ok] - y[ok], groups[ok], int((~ok).sum())


def gain_interval(
    d: np.ndarray, codes: np.ndarray, sign: float, n_resamples: int, level: float, seed: int, key: tuple
) -> dict[str, Any]:
    """Mean gain ``sign · mean(d)`` with its speaker-clustered percentile interval (``codes``: the
    clusters of ``d``'s rows, ``ambiemo.stats.bootstrap.clusters``); NaN where there is no pair."""
    from ambiemo.stats.bootstrap import _rng, cluster_mean_bootstrap

    if d.size == 0:
        return {"n_clusters": 0, "gain": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    boots = cluster_mean_bootstrap(d, codes, n_resamples, _rng(seed, key))
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    if sign < 0:  # the interval of -mean(d) is minus the interval of mean(d), ends swapped
        low, high = -high, -low
    return {
        "n_clusters": int(codes.max()) + 1,
        "gain": float(sign * d.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
    }


def paired_metrics(
    scores: pd.DataFrame, params: Mapping[str, Any] | None, metrics: Sequence[str] | None, who: str
) -> list[str]:
    """The per-utterance metrics a paired table compares (``metrics``, else params
    ``stats.paired_metrics``), each checked to be a column of ``scores``; ``who`` names the table."""
    from ambiemo.stats.bootstrap import stats_params

    metrics = list(metrics or stats_params(params)["paired_metrics"])
    unknown = [m for m in metrics if m not in scores.columns]
    if unknown:
        raise KeyError(f"{who}: no per-utterance column(s) {unknown} in the scores")
    return metrics


def gain_table(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The mean paired gain of every strategy × budget over the baseline, per dataset × model ×
    ambiguity level (``"all"``, rank -1, and each bin) × metric (params ``stats.paired_metrics``),
    with a speaker-clustered bootstrap interval (params ``scoring.bootstrap_resamples``,
    ``scoring.ci_level``, ``seed``; the baseline is params ``stats.baseline``): every setting comes
    from params, as the stats stage runs it. Columns: ``GAIN_COLUMNS``; ``n_dropped`` counts the
    pairs a NaN dropped in the whole cell."""
    from ambiemo.scoring.schema import scoring_params
    from ambiemo.stats.bootstrap import _seed, cluster_codes, stats_params, subset_clusters

    st, sp = stats_params(params), scoring_params(params)
    baseline, metrics = st["baseline"], paired_metrics(scores, params, metrics, "gain_table")
    n_resamples, level, seed = int(sp["bootstrap_resamples"]), float(sp["ci_level"]), _seed(params, None)
    rows = []
    for _, _, pc in paired_cells(scores, baseline):
        if pc is None:
            continue
        frame = pc.cell.reset_index()
        whole, known = cluster_codes(frame)  # once per cell; each metric and bin takes its rows' share
        for metric in metrics:
            x, y, ok = pc.pairs(metric)
            d, part, at = x[ok] - y[ok], frame[ok], np.flatnonzero(ok)
            levels = [("all", -1, np.ones(len(d), dtype=bool))]
            bins = part[["ambiguity", "ambiguity_rank"]].drop_duplicates()  # not a Python object per row
            for b, rank in sorted(zip(bins["ambiguity"], bins["ambiguity_rank"], strict=True), key=lambda t: t[1]):
                levels.append((b, int(rank), (part["ambiguity"] == b).to_numpy()))
            for name, rank, mask in levels:
                key = (pc.dataset, pc.model, pc.strategy, pc.budget, metric)
                if name != "all":
                    key = (*key[:4], name, metric)
                sub = part[mask]
                rows.append(
                    {
                        "dataset": pc.dataset,
                        "model": pc.model,
                        "strategy": pc.strategy,
                        "budget": pc.budget,
                        "ambiguity": name,
                        "ambiguity_rank": rank,
                        "metric": metric,
                        "params_b": float(sub["params_b"].iloc[0]) if "params_b" in sub and len(sub) else np.nan,
                        "n_pairs": int(mask.sum()),
                        "n_dropped": int((~ok).sum()),
                        "n_resamples": n_resamples,
                        **gain_interval(
                            d[mask],
                            subset_clusters(whole, known, at[mask])[0],
                            direction(metric),
                            n_resamples,
                            level,
                            seed,
                            key,
                        ),
                    }
                )
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)
