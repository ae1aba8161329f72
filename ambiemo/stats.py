"""Uncertainty and inference on per-utterance scores (``ambiemo.scoring``).

Three questions, three tools:

- **How sure is each number?** ``bootstrap_ci``: percentile intervals from a bootstrap that
  resamples *speakers* (a speaker's utterances move together, since they are not independent);
  utterances whose speaker is unknown are resampled one by one, and the table says which unit
  was used (``cluster_unit``). Every metric is recomputed on each resample, including the
  set-level ones (R², ECE, F1, UAR, entropy Spearman), through weighted forms that equal the
  metric on the resampled rows exactly (tests check this against ``ambiemo.metrics``).
- **Does a strategy beat the baseline?** ``paired_comparisons``: per dataset × model ×
  strategy × budget, the per-utterance differences from the baseline (same utterances), with
  the Wilcoxon signed-rank test, a paired sign-flip permutation test, Holm's correction within a
  family (params ``stats.holm_family``), the matched-pairs rank-biserial correlation and the
  mean difference with a speaker-clustered bootstrap interval.
- **How do capacity, test-time scaling and ambiguity interact?** ``interaction_model``: a linear
  mixed model (statsmodels ``MixedLM``) of per-utterance JS distance on log10 capacity ×
  strategy × vote entropy, with random intercepts for utterance (and speaker where it is
  identifiable); ``correctness_model``: a GEE (binomial, exchangeable within utterance) for
  correctness against the majority label with the same fixed effects. Capacity and entropy are
  centred at their means, so main effects are read at the average capacity and ambiguity;
  the strategy reference level is the baseline.

Every function takes the scores and the params mapping first (``f(scores, params, ...)``),
reads its defaults from params (``scoring`` for resamples and CI level, ``stats`` for the rest,
``seed``), and returns a tidy table. Cases where a model cannot be estimated as asked (one
model, one strategy, no ambiguity variation, too few rows) drop the terms that are not
identifiable, or return a one-row table, and say so in a ``note`` column instead of raising.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ambiemo import metrics as M
from ambiemo.scoring import KEYS, labels_of, scoring_params

STATS_DEFAULTS: dict[str, Any] = {
    "baseline": "baseline",
    "paired_metrics": ["js", "bc", "correct"],
    "permutation_resamples": 2000,
    "alpha": 0.05,
    "holm_family": ["dataset", "model"],
    "mixed_model_metric": "js",
    "budget": "max",
    # Nesting utterances in speakers (a variance component per utterance) costs time roughly
    # quadratic in utterances per speaker: ~4 s for 500 utterances, ~100 s for 2,000. Above this
    # many utterances the mixed model keeps the utterance intercept only, and says so.
    "speaker_component_max_utterances": 1000,
}

# Per-utterance score columns whose group value is their mean (NaN rows left out).
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
SET_METRICS = ("r2", "ece", "entropy_spearman", "f1_weighted", "uar")
HIGHER_IS_BETTER = {
    **{k: v.higher_is_better for k, v in M.METRICS.items()},
    "correct": True,
    "plausible": True,
    "oracle_js": False,
    "pass_at_n": True,
}


def stats_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``stats`` over the defaults, checked."""
    out = {**STATS_DEFAULTS, **dict((params or {}).get("stats") or {})}
    if out["budget"] not in ("max", "min"):
        raise ValueError(f"params stats.budget is {out['budget']!r}; use 'max' or 'min'")
    if not 0 < float(out["alpha"]) < 1:
        raise ValueError(f"params stats.alpha must be in (0, 1), got {out['alpha']}")
    return out


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
    speaker = frame["speaker"].fillna("").astype(str) if "speaker" in frame else pd.Series("", index=frame.index)
    known = speaker != ""
    dataset = frame["dataset"].astype(str) if "dataset" in frame else ""
    key = np.where(known, "spk:" + dataset + "/" + speaker, "utt:" + dataset + "/" + frame["utt_id"].astype(str))
    codes = pd.factorize(pd.Series(key), sort=True)[0]
    unit = "speaker" if known.all() else "utterance" if not known.any() else "speaker+utterance"
    return codes, unit


def cluster_counts(n_clusters: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_clusters): how often each cluster was drawn in each resample."""
    draws = rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
    offset = draws + n_clusters * np.arange(n_resamples)[:, None]  # one bincount for all resamples
    return np.bincount(offset.ravel(), minlength=n_resamples * n_clusters).reshape(n_resamples, n_clusters)


def resample_weights(codes: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_rows) integer weights: how often each row's cluster was drawn."""
    return cluster_counts(int(codes.max()) + 1, n_resamples, rng)[:, codes].astype(float)


# Resamples evaluated at once: bounds memory at (chunk × rows) floats per array for large corpora.
_CHUNK = 200


# --------------------------------------------------------------------------- weighted metrics


def _wmean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    ww = w[:, ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        return ww @ x[ok] / ww.sum(axis=1)


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
    ``scipy.stats.rankdata`` would give on the rows repeated ``w`` times."""
    uniq, inv = np.unique(x, return_inverse=True)
    onehot = np.zeros((len(x), len(uniq)))
    onehot[np.arange(len(x)), inv] = 1
    wu = w @ onehot  # (B, U): copies of each distinct value
    below = np.cumsum(wu, axis=1) - wu
    return (below + (wu + 1) / 2)[:, inv]


def weighted_metrics(
    frame: pd.DataFrame, w: np.ndarray, labels: Sequence[str], ece_bins: int = M.ECE_BINS
) -> dict[str, np.ndarray]:
    """Every metric of a group of score rows under row weights ``w`` (B, n).

    With integer weights each value equals the metric computed on the rows repeated that many
    times, which is what a bootstrap resample is.
    """
    w = np.atleast_2d(np.asarray(w, dtype=float))
    out = {name: _wmean(w, frame[col].to_numpy(dtype=float)) for name, col in MEAN_COLUMNS.items() if col in frame}
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
    lookup = {x: j for j, x in enumerate(labels)}
    yt = frame["majority_used"].map(lambda s: lookup.get(s, -1)).to_numpy(dtype=int)
    yp = frame["pred_label"].map(lambda s: lookup.get(s, -1)).to_numpy(dtype=int)
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
    ``metrics`` defaults to every metric of ``ambiemo.metrics.METRICS`` plus the oracle.
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
            counts = cluster_counts(int(codes.max()) + 1, n_resamples, _rng(seed, (*key, bin_name)))
            point = weighted_metrics(part, np.ones((1, len(part))), labels, int(sp["ece_bins"]))
            chunks = [
                weighted_metrics(part, counts[i : i + _CHUNK, codes].astype(float), labels, int(sp["ece_bins"]))
                for i in range(0, n_resamples, _CHUNK)
            ]
            boot = {m: np.concatenate([c[m] for c in chunks]) for m in chunks[0]}
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


# --------------------------------------------------------------------------- paired tests


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014) of differences ``d``: the share of
    the rank sum of |d| on the positive side minus the share on the negative side, in [-1, 1];
    zero differences are left out, as in the Wilcoxon test."""
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    r = sps.rankdata(np.abs(d))
    return float((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests``); NaN stays NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.sum() == 1:  # a family of one needs no correction (and multipletests runs gc.collect())
        out[ok] = p[ok]
    elif ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="holm")[1]
    return out


def _baseline_rows(g: pd.DataFrame, baseline: str) -> pd.DataFrame:
    base = g[g["strategy"] == baseline]
    return base[base["budget"] == base["budget"].min()]


PAIRED_COLUMNS = [
    "dataset",
    "model",
    "strategy",
    "budget",
    "metric",
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
    metrics = list(metrics or st["paired_metrics"])
    n_perm = int(n_resamples or st["permutation_resamples"])
    seed = _seed(params, seed)
    unknown = [m for m in metrics if m not in scores.columns]
    if unknown:
        raise KeyError(f"paired_comparisons: no per-utterance column(s) {unknown} in the scores")
    rows = []
    for (dataset, model), g in scores.groupby(["dataset", "model"], sort=True):
        base = _baseline_rows(g, baseline)
        if base.empty:
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
        base = base.set_index("utt_id")
        others = g[g["strategy"] != baseline]
        for (strategy, budget), cell in others.groupby(["strategy", "budget"], sort=True):
            cell = cell.set_index("utt_id")
            common = cell.index.intersection(base.index)
            for metric in metrics:
                rows.append(
                    _paired_row(
                        dataset,
                        model,
                        strategy,
                        budget,
                        metric,
                        base.loc[common],
                        cell.loc[common],
                        n_perm,
                        seed,
                        int(sp["bootstrap_resamples"]),
                        float(sp["ci_level"]),
                    )
                )
    out = pd.DataFrame(rows)
    if out.empty:  # one strategy only: nothing to compare, but the table keeps its columns
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    if "p_permutation" not in out:
        return out
    family_keys = [*st["holm_family"], "metric"]
    out["family"] = out[family_keys].astype(str).agg("/".join, axis=1)
    out["p_wilcoxon_holm"] = np.nan
    out["p_permutation_holm"] = np.nan
    for idx in out.groupby("family").groups.values():
        out.loc[idx, "p_wilcoxon_holm"] = holm(out.loc[idx, "p_wilcoxon"], st["alpha"])
        out.loc[idx, "p_permutation_holm"] = holm(out.loc[idx, "p_permutation"], st["alpha"])
    out["significant"] = out["p_permutation_holm"] < float(st["alpha"])
    return out[PAIRED_COLUMNS]


def _paired_row(
    dataset,
    model,
    strategy,
    budget,
    metric,
    base: pd.DataFrame,
    cell: pd.DataFrame,
    n_perm: int,
    seed: int,
    n_boot: int,
    level: float,
) -> dict[str, Any]:
    x, y = cell[metric].to_numpy(dtype=float), base[metric].to_numpy(dtype=float)
    ok = ~np.isnan(x) & ~np.isnan(y)
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
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
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
    rng = _rng(seed, (dataset, model, strategy, budget, metric))
    codes, unit = clusters(cell.reset_index().loc[ok])
    w = resample_weights(codes, n_boot, rng)
    boots = w @ d / w.sum(axis=1)
    row["diff_ci_low"], row["diff_ci_high"] = (float(v) for v in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))
    if not (d != 0).any():
        row.update(
            wilcoxon_stat=nan, p_wilcoxon=1.0, p_permutation=1.0, note="every pair is equal: no difference to test"
        )
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy notes when it falls back from the exact distribution
        res = sps.wilcoxon(d, zero_method="wilcox")
    row["wilcoxon_stat"], row["p_wilcoxon"] = float(res.statistic), float(res.pvalue)
    perm = sps.permutation_test(
        (x[ok], y[ok]),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        permutation_type="samples",
        n_resamples=n_perm,
        vectorized=True,
        rng=rng,
    )
    row["p_permutation"] = float(perm.pvalue)
    if unit != "speaker":
        row["note"] = f"bootstrap clusters: {unit}"
    return row


# --------------------------------------------------------------------------- interaction models

_TERM_NAMES = (
    (re.compile(r"C\(strategy, Treatment\('[^']*'\)\)\[T\.([^\]]*)\]"), r"strategy[\1]"),
    (re.compile(r"C\(dataset\)\[T\.([^\]]*)\]"), r"dataset[\1]"),
)
TABLE_COLUMNS = [
    "term",
    "estimate",
    "std_err",
    "ci_low",
    "ci_high",
    "p",
    "model",
    "outcome",
    "n_obs",
    "n_groups",
    "note",
]


def _term(name: str) -> str:
    for pattern, repl in _TERM_NAMES:
        name = pattern.sub(repl, name)
    return name.replace(":", " × ")


def model_frame(
    scores: pd.DataFrame, outcome: str, params: Mapping[str, Any] | None = None, baseline: str | None = None
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The rows and formulas the interaction models fit, and notes on what was dropped.

    Formulas come from the fullest (capacity × strategy × entropy) to simpler ones (all two-way
    interactions; capacity × entropy plus strategy; capacity × entropy); a model falls back to
    the next only when the fuller one cannot be estimated (for correctness: a strategy that is
    always right for some model separates the data), and says so.

    Keeps one budget per strategy (params ``stats.budget``), rows with an outcome and a
    capacity, and builds centred ``log10_capacity`` and ``entropy``. Factors that do not vary
    (one model, one strategy, one entropy) leave the formula, with a note.
    """
    st = stats_params(params)
    baseline = baseline or st["baseline"]
    notes: list[str] = []
    if outcome not in scores.columns:
        raise KeyError(f"no per-utterance column {outcome!r} in the scores")
    pick = scores.groupby(["dataset", "model", "strategy"])["budget"].transform(st["budget"])
    d = scores[scores["budget"] == pick].copy()
    if (scores["budget"] != pick).any():
        notes.append(f"one budget per strategy ({st['budget']})")
    dropped_cap = int(d["params_b"].isna().sum())
    if dropped_cap:
        notes.append(f"{dropped_cap} rows without params_b left out")
    dropped_y = int((d[outcome].isna() & d["params_b"].notna()).sum())
    if dropped_y:
        notes.append(f"{dropped_y} rows without {outcome} left out")
    d = d[d[outcome].notna() & d["params_b"].notna()].copy()
    d["y"] = d[outcome].astype(float)
    d["utt_key"] = d["dataset"].astype(str) + "/" + d["utt_id"].astype(str)
    cap = np.log10(d["params_b"].astype(float))
    d["log10_capacity"] = cap - cap.mean() if len(d) else cap
    d["entropy"] = d["entropy_bits"] - d["entropy_bits"].mean() if len(d) else d["entropy_bits"]
    terms = []
    if d["log10_capacity"].nunique() >= 2:
        terms.append("log10_capacity")
    else:
        notes.append("one model capacity only: capacity terms dropped")
    strategies = sorted(d["strategy"].unique())
    if len(strategies) >= 2:
        ref = baseline if baseline in strategies else strategies[0]
        if ref != baseline:
            notes.append(f"no {baseline!r} rows: reference strategy is {ref!r}")
        terms.append(f"C(strategy, Treatment('{ref}'))")
    else:
        notes.append("one strategy only: strategy terms dropped")
    if d["entropy"].nunique() >= 2:
        terms.append("entropy")
    else:
        notes.append("no variation in vote entropy: entropy terms dropped")
    if len(d):
        notes.append(
            f"centred at log10 params_b = {float(cap.mean()):.3f}, entropy = {float(d['entropy_bits'].mean()):.3f} bits"
        )
    extra = " + C(dataset)" if d["dataset"].nunique() > 1 else ""
    ladder = ["y ~ " + (" * ".join(terms) if terms else "1") + extra]
    if len(terms) == 3:
        cap_t, strat_t, ent_t = terms
        ladder += [
            f"y ~ ({cap_t} + {strat_t} + {ent_t}) ** 2{extra}",
            f"y ~ {cap_t} * {ent_t} + {strat_t}{extra}",
            f"y ~ {cap_t} * {ent_t}{extra}",
        ]
    return d, ladder, notes


def _usable(result) -> bool:
    """Fixed effects that are finite and not running off to infinity (separation in a logit model).
    Variance components may sit on the boundary (zero, no standard error): that is allowed."""
    names = list(result.model.exog_names)
    params = np.asarray(pd.Series(result.params)[names], dtype=float)
    bse = np.asarray(pd.Series(result.bse)[names], dtype=float)
    return bool(np.isfinite(params).all() and np.isfinite(bse).all() and np.abs(params).max() < 15)


def _fit_ladder(build, ladder: list[str], notes: list[str]):
    """Fit the first formula of ``ladder`` that gives usable estimates; notes say which and why."""
    messages: set[str] = set()
    for i, formula in enumerate(ladder):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = build(formula)
            except (np.linalg.LinAlgError, ValueError) as err:
                messages.add(f"{type(err).__name__}: {err}".split("\n")[0])
                result = None
        messages |= {
            str(w.message).split("\n")[0]
            for w in caught
            if any(s in str(w.message).lower() for s in ("converge", "boundary", "singular", "overflow", "separation"))
        }
        if result is not None and _usable(result):
            if i:
                notes.append(f"fuller model(s) not estimable (e.g. separation); fitted {formula.replace('y ~ ', '')}")
            notes.extend(f"statsmodels: {m}" for m in sorted(messages))
            return result
    notes.extend(f"statsmodels: {m}" for m in sorted(messages))
    return None


def _not_fitted(kind: str, outcome: str, n_obs: int, note: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "term": "(not fitted)",
                "estimate": np.nan,
                "std_err": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "p": np.nan,
                "model": kind,
                "outcome": outcome,
                "n_obs": n_obs,
                "n_groups": 0,
                "note": note,
            }
        ],
        columns=TABLE_COLUMNS,
    )


def _tidy(result, kind: str, outcome: str, n_obs: int, n_groups: int, notes: list[str], alpha: float) -> pd.DataFrame:
    ci = result.conf_int(alpha=alpha)
    names = [n for n in result.model.exog_names]
    table = pd.DataFrame(
        {
            "term": [_term(n) for n in names],
            "estimate": [float(result.params[n]) for n in names],
            "std_err": [float(result.bse[n]) for n in names],
            "ci_low": [float(ci.loc[n, 0]) for n in names],
            "ci_high": [float(ci.loc[n, 1]) for n in names],
            "p": [float(result.pvalues[n]) for n in names],
        }
    )
    table["model"], table["outcome"], table["n_obs"], table["n_groups"] = kind, outcome, n_obs, n_groups
    table["note"] = "; ".join(notes)
    return table[TABLE_COLUMNS]


def interaction_model(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    metric: str | None = None,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Linear mixed model of a per-utterance metric (params ``stats.mixed_model_metric``, JS
    distance by default) on log10 capacity × strategy × vote entropy.

    Random intercepts for utterance; where speakers are known (at least two, fewer than the
    utterances), utterances are nested in speakers with a speaker intercept too (variance
    components). Returns the tidy coefficient table (``TABLE_COLUMNS``) plus rows ``var(...)``
    for the variance components (estimate only).
    """
    st = stats_params(params)
    metric = metric or st["mixed_model_metric"]
    import statsmodels.formula.api as smf

    d, ladder, notes = model_frame(scores, metric, params, baseline)
    if len(d) < 3 or d["utt_key"].nunique() < 2:
        return _not_fitted("mixedlm", metric, len(d), "; ".join([*notes, "fewer than two utterances to fit"]))
    speaker = d["speaker"].fillna("").astype(str)
    n_spk, n_utt = speaker[speaker != ""].nunique(), d["utt_key"].nunique()
    nested = n_spk >= 2 and n_spk < n_utt
    if nested and n_utt > int(st["speaker_component_max_utterances"]):
        nested = False
        notes.append(
            f"speaker variance component skipped for size ({n_utt} utterances > params "
            "stats.speaker_component_max_utterances): utterance intercept only, so standard errors of "
            "utterance-level terms such as entropy may be optimistic"
        )
    elif not nested:
        notes.append("speaker not identifiable: random intercept for utterance only")
    if nested:
        # unknown speakers: each such utterance its own speaker group
        d["group"] = np.where(speaker != "", "spk:" + d["dataset"].astype(str) + "/" + speaker, "utt:" + d["utt_key"])
        if (speaker == "").any():
            notes.append("utterances without a speaker are their own speaker group")
        groups = d["group"].nunique()

        def build(formula):
            return smf.mixedlm(
                formula, d, groups="group", re_formula="1", vc_formula={"utterance": "0 + C(utt_key)"}
            ).fit(reml=True, method=["lbfgs", "powell"])
    else:
        groups = d["utt_key"].nunique()

        def build(formula):
            return smf.mixedlm(formula, d, groups="utt_key", re_formula="1").fit(reml=True, method=["lbfgs", "powell"])

    result = _fit_ladder(build, ladder, notes)
    if result is None:
        return _not_fitted("mixedlm", metric, len(d), "; ".join([*notes, "no formula could be estimated"]))
    table = _tidy(result, "mixedlm", metric, len(d), groups, notes, float(st["alpha"]))
    var_rows = [("var(speaker)" if nested else "var(utterance)", float(np.asarray(result.cov_re)[0, 0]))]
    if nested:
        var_rows.append(("var(utterance)", float(result.vcomp[0])))
    var_rows.append(("var(residual)", float(result.scale)))
    extra = pd.DataFrame(
        [
            {
                "term": t,
                "estimate": v,
                "model": "mixedlm",
                "outcome": metric,
                "n_obs": len(d),
                "n_groups": groups,
                "note": table["note"].iloc[0],
            }
            for t, v in var_rows
        ],
        columns=TABLE_COLUMNS,
    )
    return pd.concat([table, extra], ignore_index=True)


def correctness_model(
    scores: pd.DataFrame, params: Mapping[str, Any] | None = None, *, baseline: str | None = None
) -> pd.DataFrame:
    """GEE (binomial, logit link, exchangeable correlation within utterance) of correctness
    against the majority label on log10 capacity × strategy × vote entropy. Estimates are
    log-odds; rows the tie policy excluded (``correct`` NaN) are left out and counted."""
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    st = stats_params(params)
    d, ladder, notes = model_frame(scores, "correct", params, baseline)
    if len(d) < 3 or d["utt_key"].nunique() < 2:
        return _not_fitted("gee", "correct", len(d), "; ".join([*notes, "fewer than two utterances to fit"]))
    if d["y"].nunique() < 2:
        which = "correct" if d["y"].iloc[0] else "wrong"
        return _not_fitted(
            "gee", "correct", len(d), "; ".join([*notes, f"every row is {which}: no variation to model"])
        )

    def build(formula):
        return smf.gee(
            formula, groups="utt_key", data=d, family=sm.families.Binomial(), cov_struct=sm.cov_struct.Exchangeable()
        ).fit(maxiter=200)

    result = _fit_ladder(build, ladder, notes)
    if result is None:
        return _not_fitted("gee", "correct", len(d), "; ".join([*notes, "no formula could be estimated"]))
    notes.append("estimates in log-odds")
    return _tidy(result, "gee", "correct", len(d), d["utt_key"].nunique(), notes, float(st["alpha"]))
