"""Summaries of per-utterance scores: one row per cell (× ambiguity bin), compute, reliability, gains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo import metrics as M
from ambiemo.scoring.schema import ALL, COMPUTE_COLUMNS, KEYS, labels_of, scoring_params

# --------------------------------------------------------------------------- summaries


def group_metrics(g: pd.DataFrame, labels: Sequence[str], ece_bins: int = M.ECE_BINS) -> dict[str, float]:
    """Every metric of ``ambiemo.metrics.METRICS`` over one group of score rows."""
    p = g[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
    q = g[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    has_q = np.isfinite(q).all(axis=1)  # rows a parse failure left without a distribution have no say
    p, q = p[has_q], q[has_q]
    lookup = {x: j for j, x in enumerate(labels)}
    y_true = g["majority_used"].map(lambda s: lookup.get(s, -1)).to_numpy(dtype=int)
    y_pred = g["pred_label"].map(lambda s: lookup.get(s, -1)).to_numpy(dtype=int)
    return {
        "js": float(g["js"].mean()),
        "bc": float(g["bc"].mean()),
        "r2": M.r2(p, q),
        "kl": float(g["kl"].mean()),
        "tv": float(g["tv"].mean()),
        "brier": float(g["brier"].mean()),
        "ece": M.expected_calibration_error(g["confidence"].to_numpy(), g["correct"].to_numpy(), ece_bins),
        "entropy_spearman": M.entropy_spearman(p, q),
        "accuracy": M.accuracy(y_true, y_pred),
        "f1_weighted": M.weighted_f1(y_true, y_pred),
        "uar": M.uar(y_true, y_pred),
        "plausible_accuracy": float(g["plausible"].mean()),
    }


def _labels_in(g: pd.DataFrame) -> list[str]:
    """Labels of this group (score tables of several label sets leave others' columns NaN)."""
    return [x for x in labels_of(g, "true_") if g[f"true_{x}"].notna().all()]


def summarise(
    scores: pd.DataFrame, by: Sequence[str] = KEYS, params: Mapping[str, Any] | None = None, per_bin: bool = True
) -> pd.DataFrame:
    """One row per group of ``by`` (default dataset × model × strategy × budget) with every metric,
    and, when ``per_bin``, one more row per ambiguity bin (``ambiguity`` is ``"all"`` for the whole group).

    Columns: the keys, ``ambiguity``, ``ambiguity_rank`` (-1 for "all"), ``n`` utterances,
    ``n_dist`` (those with a predicted distribution: all unless params ``parsing.on_failure`` is nan),
    ``n_hard`` (those with a majority label under the tie policy), ``n_tie_excluded``,
    ``parse_failure_rate``, the metrics, ``entropy_mean`` (mean vote entropy in bits, an x position for
    the bin), ``oracle_js``, ``oracle_bc``, ``pass_at_n``, ``params_b`` and
    compute per utterance: ``model_calls``, ``verifier_calls``, ``prompt_tokens``, ``gen_tokens``, ``wall_s``.
    """
    if isinstance(by, Mapping):
        raise TypeError(
            "summarise(scores, by=..., params=...): the second argument is the grouping columns; "
            "pass the params mapping as params="
        )
    sp = scoring_params(params)
    by = list(by)
    missing = [c for c in by if c not in scores.columns]
    if missing:
        raise KeyError(f"summarise: scores have no column(s) {missing}")
    rows = []
    for key, g in scores.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        labels = _labels_in(g)
        parts = [(ALL, -1, g)]
        if per_bin:
            parts += [
                (b, int(gb["ambiguity_rank"].iloc[0]), gb)
                for b, gb in sorted(g.groupby("ambiguity"), key=lambda t: int(t[1]["ambiguity_rank"].iloc[0]))
            ]
        for bin_name, rank, part in parts:
            row = dict(zip(by, key, strict=True))
            row.update(
                ambiguity=bin_name,
                ambiguity_rank=rank,
                n=len(part),
                n_dist=int(part["js"].notna().sum()),
                n_hard=int(part["correct"].notna().sum()),
                n_tie_excluded=int((part["majority_used"] == "").sum()),
                parse_failure_rate=float(1 - part["parsed_ok"].mean()),
            )
            row.update(group_metrics(part, labels, int(sp["ece_bins"])))
            row.update(
                entropy_mean=float(part["entropy_bits"].mean()),
                oracle_js=_nanmean(part["oracle_js"]),
                oracle_bc=_nanmean(part["oracle_bc"]),
                pass_at_n=_nanmean(part["pass_at_n"]),
                params_b=float(part["params_b"].iloc[0])
                if "params_b" in part and part["params_b"].nunique(dropna=False) == 1
                else float("nan"),
            )
            row.update({c: float(part[c].mean()) for c in COMPUTE_COLUMNS})
            rows.append(row)
    return pd.DataFrame(rows)


def compute_table(scores: pd.DataFrame, by: Sequence[str] = KEYS) -> pd.DataFrame:
    """Compute spent per group: utterances, then per utterance the model calls, verifier calls,
    prompt and generated tokens and wall seconds (means), and the totals of each."""
    by = list(by)
    grouped = scores.groupby(by, sort=True)
    per_utt = grouped[list(COMPUTE_COLUMNS)].mean()
    totals = grouped[list(COMPUTE_COLUMNS)].sum(min_count=1).add_prefix("total_")
    out = pd.concat([grouped["utt_id"].nunique().rename("n"), per_utt, totals], axis=1)
    return out.reset_index()


def metrics_json(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("js", "bc", "r2", "accuracy", "f1_weighted", "uar", "ece", "parse_failure_rate"),
) -> dict[str, Any]:
    """A nested {dataset: {model: {strategy@budget: {metric: value}}}} of the overall summary rows,
    for DVC's ``metrics`` (``dvc metrics show``); NaN becomes None so that the JSON stays valid."""
    out: dict[str, Any] = {}
    rows = summary[summary["ambiguity"] == ALL] if "ambiguity" in summary else summary
    for row in rows.itertuples(index=False):
        cell = out.setdefault(str(row.dataset), {}).setdefault(str(row.model), {})
        values = {m: getattr(row, m) for m in metrics}
        cell[f"{row.strategy}@{row.budget}"] = {
            m: (None if v is None or not np.isfinite(v) else round(float(v), 6)) for m, v in values.items()
        }
    return out


def overall(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows over every ambiguity bin (``ambiguity == "all"``)."""
    return summary[summary["ambiguity"] == ALL] if "ambiguity" in summary else summary


def at_largest_budget(frame: pd.DataFrame, keys: Sequence[str] = ("dataset", "model", "strategy")) -> pd.DataFrame:
    """Each strategy at its largest budget (its headline setting), per group of ``keys``."""
    top = frame.groupby(list(keys))["budget"].transform("max")
    return frame[frame["budget"] == top]


def _nanmean(s: pd.Series) -> float:
    return float(s.mean()) if s.notna().any() else float("nan")


def reliability(
    scores: pd.DataFrame, by: Sequence[str] = KEYS, params: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Reliability-diagram bins (``ambiemo.metrics.reliability_bins``) per group of ``by``, with the
    group's ``params_b`` (so that plots can order models by capacity)."""
    n_bins = int(scoring_params(params)["ece_bins"])
    by = list(by)
    parts = []
    for key, g in scores.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        table = M.reliability_bins(g["confidence"].to_numpy(), g["correct"].to_numpy(), n_bins)
        capacity = g["params_b"].iloc[0] if "params_b" in g and g["params_b"].nunique() == 1 else np.nan
        parts.append(table.assign(**dict(zip(by, key, strict=True)), params_b=capacity))
    if not parts:
        raise ValueError("reliability: no score rows")
    out = pd.concat(parts, ignore_index=True)
    return out[[*by, *[c for c in out.columns if c not in by]]]


def gain_over_baseline(
    summary: pd.DataFrame,
    metric: str = "js",
    baseline: str = "baseline",
    by: Sequence[str] = ("dataset", "model", "ambiguity"),
) -> pd.DataFrame:
    """Each strategy's improvement over the baseline in a summary table, per ``by``.

    ``gain`` is signed so that positive means better (baseline minus strategy for a metric where
    lower is better, such as JS). If the baseline ran at several budgets, its smallest is used.
    """
    if metric not in M.METRICS:
        raise KeyError(f"unknown metric {metric!r}; choose from {list(M.METRICS)}")
    if baseline not in set(summary["strategy"]):
        raise ValueError(
            f"no {baseline!r} rows in the summary: cannot compute gains over the baseline "
            "(params stats.baseline names the reference strategy)"
        )
    sign = 1.0 if M.METRICS[metric].higher_is_better else -1.0
    by = list(by)
    base = summary[summary["strategy"] == baseline]
    base = base[base["budget"] == base.groupby(by)["budget"].transform("min")]
    base = base[[*by, metric]].rename(columns={metric: "baseline_value"})
    rest = summary[summary["strategy"] != baseline]
    out = rest.merge(base, on=by, how="inner", validate="many_to_one")
    out["value"] = out[metric]
    out["gain"] = sign * (out["value"] - out["baseline_value"])
    out["metric"] = metric
    keep = [
        c
        for c in (*KEYS, "ambiguity", "ambiguity_rank", "params_b", "metric", "value", "baseline_value", "gain")
        if c in out.columns
    ]
    return out[keep].reset_index(drop=True)
