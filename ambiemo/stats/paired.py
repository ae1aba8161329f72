"""Paired comparisons of each strategy with the baseline: Wilcoxon, a speaker-clustered sign-flip
permutation test (``ambiemo.stats.permutation``: whole speakers flip, the same clusters as the CIs),
Holm (statsmodels, ``ambiemo.stats.permutation.holm``), rank-biserial and Cohen's d_z.

``p_permutation`` is the clustered test and decides ``significant``; ``p_permutation_unclustered``
(every utterance its own cluster) stands beside it so that a reader sees what clustering changes.
The Wilcoxon test treats utterances as independent and is kept for comparison only."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ambiemo.scoring import scoring_params
from ambiemo.scoring.gains import HIGHER_IS_BETTER, KEY_COLUMNS, PairedCell, direction, paired_cells
from ambiemo.stats.bootstrap import _seed, cluster_codes, stats_params, subset_clusters
from ambiemo.stats.gains import gain_interval, paired_metrics
from ambiemo.stats.permutation import holm, paired_test, rank_biserial

PAIRED_COLUMNS = [
    *KEY_COLUMNS,
    "n_pairs",
    "n_dropped",
    "baseline_mean",
    "strategy_mean",
    "mean_diff",
    "diff_ci_low",
    "diff_ci_high",
    "gain",
    "wilcoxon_stat",
    "p_wilcoxon",
    "p_permutation",
    "rank_biserial",
    "p_wilcoxon_holm",
    "p_permutation_holm",
    "significant",
    "family",
    "note",
    "n_clusters",
    "cohens_dz",
    "p_permutation_unclustered",
    "min_p",
]


def paired_comparisons(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    n_resamples: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Each strategy × budget against the baseline on the same utterances, per dataset × model.

    ``metrics`` are per-utterance score columns (params ``stats.paired_metrics``: e.g. ``js``,
    ``bc``, ``correct``). Differences are strategy − baseline; ``gain`` is the mean difference
    signed so that positive means better. Pairs with a NaN on either side (a tie excluded from
    ``correct``, a failure without a distribution) are dropped and counted in ``n_dropped``.
    If the baseline ran at several budgets, its smallest is the reference.

    Columns: dataset, model, strategy, budget, metric, n_pairs, n_dropped, baseline_mean,
    strategy_mean, mean_diff, diff_ci_low, diff_ci_high, gain, wilcoxon_stat, p_wilcoxon,
    p_permutation, rank_biserial, p_wilcoxon_holm, p_permutation_holm, significant (permutation
    test after Holm at params ``stats.alpha``), family, note.
    """
    st, sp = stats_params(params), scoring_params(params)
    baseline = baseline or st["baseline"]
    metrics = paired_metrics(scores, params, metrics, "paired_comparisons")
    n_perm = int(n_resamples or st["permutation_resamples"])
    seed = _seed(params, seed)
    boot = (int(sp["bootstrap_resamples"]), float(sp["ci_level"]))
    rows = []
    for dataset, model, pc in paired_cells(scores, baseline):
        if pc is None:
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "strategy": "",
                    "budget": np.nan,
                    "metric": "",
                    "note": f"no {baseline!r} rows for this model: nothing to compare with",
                }
            )
            continue
        whole = cluster_codes(pc.cell.reset_index())  # once per cell; each metric takes its pairs' share
        for metric in metrics:
            rows.append(_paired_row(pc, whole, metric, n_perm, seed, *boot, int(st["sign_flip_normal_from"])))
    return holm_families(pd.DataFrame(rows), params)


def holm_families(out: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Holm's correction within each family (params ``stats.holm_family`` × metric) and the
    ``significant`` flag, over paired rows (of one chunk of the scores, or of all of them stacked)."""
    st = stats_params(params)
    if out.empty:  # one strategy only: nothing to compare, but the table keeps its columns
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    if "p_permutation" not in out:
        return out
    out = out.copy()
    family_keys = [*st["holm_family"], "metric"]
    out["family"] = out[family_keys].astype(str).agg("/".join, axis=1)
    out["p_wilcoxon_holm"] = np.nan
    out["p_permutation_holm"] = np.nan
    for idx in out.groupby("family").groups.values():
        out.loc[idx, "p_wilcoxon_holm"] = holm(out.loc[idx, "p_wilcoxon"], st["alpha"])
        out.loc[idx, "p_permutation_holm"] = holm(out.loc[idx, "p_permutation"], st["alpha"])
    out["significant"] = out["p_permutation_holm"] < float(st["alpha"])
    return out.reindex(columns=PAIRED_COLUMNS)


def _paired_row(
    pc: PairedCell, whole: tuple, metric: str, n_perm: int, seed: int, n_boot: int, level: float, normal_from: int
) -> dict[str, Any]:
    """One strategy × budget × metric against the baseline; ``whole``: the cell's ``cluster_codes``."""
    dataset, model, strategy, budget = pc.dataset, pc.model, pc.strategy, pc.budget
    x, y, ok = pc.pairs(metric)
    d = x[ok] - y[ok]
    row: dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "strategy": strategy,
        "budget": budget,
        "metric": metric,
        "n_pairs": int(ok.sum()),
        "n_dropped": int((~ok).sum()),
        "note": "",
    }
    sign = direction(metric) if metric in HIGHER_IS_BETTER else 1.0
    nan = float("nan")
    if d.size == 0:
        row.update(
            baseline_mean=nan,
            strategy_mean=nan,
            mean_diff=nan,
            diff_ci_low=nan,
            diff_ci_high=nan,
            gain=nan,
            wilcoxon_stat=nan,
            p_wilcoxon=nan,
            p_permutation=nan,
            rank_biserial=nan,
            note="no utterance scored by both",
        )
        return row
    row.update(
        baseline_mean=float(y[ok].mean()),
        strategy_mean=float(x[ok].mean()),
        mean_diff=float(d.mean()),
        gain=float(sign * d.mean()),
        rank_biserial=rank_biserial(d),
    )
    # the interval of the mean difference is the gains table's "all" row, unsigned
    codes, unit = subset_clusters(*whole, np.flatnonzero(ok))
    interval = gain_interval(d, codes, 1.0, n_boot, level, seed, (dataset, model, strategy, budget, metric))
    row["diff_ci_low"], row["diff_ci_high"] = interval["ci_low"], interval["ci_high"]
    if not (d != 0).any():
        row.update(
            wilcoxon_stat=nan, p_wilcoxon=1.0, p_permutation=1.0, note="every pair is equal: no difference to test"
        )
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy notes when it falls back from the exact distribution
        res = sps.wilcoxon(d, zero_method="wilcox")
    row["wilcoxon_stat"], row["p_wilcoxon"] = float(res.statistic), float(res.pvalue)
    key = (dataset, model, strategy, budget, metric)
    test = paired_test(d, codes, n_resamples=n_perm, seed=seed, key=key, normal_from=normal_from)
    row.update(
        n_clusters=test["n_clusters"],
        cohens_dz=test["cohens_dz"],
        p_permutation=test["p_clustered"],
        p_permutation_unclustered=test["p_unclustered"],
        min_p=test["min_p"],
    )
    notes = [f"bootstrap clusters: {unit}"] if unit != "speaker" else []
    if test["normal"]:
        notes.append(f"{' and '.join(test['normal'])} sign-flip p by the normal approximation (≥ {normal_from} units)")
    row["note"] = "; ".join(notes)
    return row
