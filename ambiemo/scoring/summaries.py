"""Summaries of per-utterance scores: one row per cell (× ambiguity bin), compute, reliability, gains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.scoring import metrics as M
from ambiemo.scoring.references import CEILING_METRICS, CEILING_REFERENCES
from ambiemo.scoring.references import MODEL as REFERENCE_MODEL
from ambiemo.scoring.schema import ALL, COMPUTE_COLUMNS, KEYS, VERIFIER_COLUMNS, labels_of, scoring_params

# --------------------------------------------------------------------------- summaries


def group_metrics(g: pd.DataFrame, labels: Sequence[str], ece_bins: int = M.ECE_BINS) -> dict[str, float]:
    """Every metric of ``ambiemo.scoring.metrics.METRICS`` over one group of score rows."""
    p = g[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
    q = g[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    has_q = np.isfinite(q).all(axis=1)  # rows a parse failure left without a distribution have no say
    p, q = p[has_q], q[has_q]
    lookup = pd.Index(list(labels))  # label -> index, -1 for anything else ("" for a tie, NaN)
    y_true = lookup.get_indexer(g["majority_used"]).astype(int)
    y_pred = lookup.get_indexer(g["pred_label"]).astype(int)
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
    return ceiling_undefined(pd.DataFrame(rows))


def is_ceiling(frame: pd.DataFrame) -> pd.Series:
    """Rows of the human ceilings (``model == "reference"``, a ``human-*`` strategy)."""
    if "model" not in frame or "strategy" not in frame:
        return pd.Series(False, index=frame.index)
    return (frame["model"] == REFERENCE_MODEL) & frame["strategy"].isin(CEILING_REFERENCES)


def ceiling_undefined(summary: pd.DataFrame) -> pd.DataFrame:
    """NaN in every metric a human ceiling does not define (all but js, bc, tv, brier): a
    rater's vote is not a model's answer, so it has no confidence, label or KL of its own."""
    mask = is_ceiling(summary)
    if mask.any():
        undefined = [c for c in (*M.METRICS, "oracle_js", "oracle_bc", "pass_at_n") if c not in CEILING_METRICS]
        summary.loc[mask, [c for c in undefined if c in summary]] = np.nan
    return summary


def tokens_and_flops(scores: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per score row: ``tokens_total`` (model + verifier, prompt + generated) and ``flops_est``.

    A part whose calls were made but whose tokens the route did not report leaves the row's
    total NaN (unknown, not zero); verifier columns absent or NaN with no verifier call count 0.
    ``flops_est`` = 2 × parameters × tokens, the model's and the verifier's each with its own
    ``params_active_b`` (else ``params_b``): an estimate of the forward passes only.
    """
    model_tok = scores["prompt_tokens"].astype(float) + scores["gen_tokens"].astype(float)
    no_verifier = scores["verifier_calls"].astype(float).fillna(0) == 0
    ver = [
        scores[c].astype(float) if c in scores else pd.Series(np.nan, index=scores.index)
        for c in ("verifier_prompt_tokens", "verifier_gen_tokens")
    ]
    ver_tok = sum(v.where(~(no_verifier & v.isna()), 0.0) for v in ver)
    specs = (params or {}).get("models") or {}
    verifier = _verifier_model(params)
    models = pd.Index(pd.unique(scores["model"]))  # one lookup per model, not a Python call per row
    per_model = np.array([_active_b(specs, k) for k in models], dtype=float)
    model_b = pd.Series(per_model[models.get_indexer(scores["model"])], index=scores.index)
    ver_b = _active_b(specs, verifier) if verifier else np.nan
    ver_flops = (2e9 * ver_b * ver_tok).where(~no_verifier, 0.0)
    return pd.DataFrame(
        {"tokens_total": model_tok + ver_tok, "flops_est": 2e9 * model_b * model_tok + ver_flops}, index=scores.index
    )


def _active_b(specs: Mapping[str, Any], key: str) -> float:
    spec = specs.get(key) or {}
    value = spec.get("params_active_b", spec.get("params_b"))
    return float(value) if value is not None else float("nan")


def _verifier_model(params: Mapping[str, Any] | None) -> str | None:
    if not params or "strategies" not in params:
        return None
    from ambiemo.core.config import verifier_model

    return verifier_model(dict(params))


def compute_table(
    scores: pd.DataFrame, by: Sequence[str] = KEYS, params: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Compute spent per group: utterances, then per utterance the model calls, verifier calls,
    prompt and generated tokens and wall seconds (means), and the totals of each; then the
    verifier's own tokens and seconds, ``tokens_total`` (model + verifier, prompt + generated,
    per utterance) and ``flops_est`` (per utterance, an estimate: ``tokens_and_flops``).
    Without ``params`` the FLOPs are NaN (no parameter counts)."""
    by = list(by)
    cols = list(COMPUTE_COLUMNS)
    grouped = scores.groupby(by, sort=True)
    per_utt = grouped[cols].mean()
    totals = grouped[cols].sum(min_count=1).add_prefix("total_")
    extra = scores[[*by]].copy()
    for c in VERIFIER_COLUMNS:
        extra[c] = scores[c].astype(float) if c in scores else np.nan
    extra = extra.join(tokens_and_flops(scores, params))
    # mean(skipna=False): one utterance of unknown tokens makes the cell's total unknown
    more = extra.groupby(by, sort=True)[[*VERIFIER_COLUMNS, "tokens_total", "flops_est"]].agg(
        lambda s: s.mean(skipna=False)
    )
    out = pd.concat([grouped["utt_id"].nunique().rename("n"), per_utt, totals, more], axis=1)
    return out.reset_index()


def compute_matched(
    compute: pd.DataFrame,
    multiples: Sequence[float] = (1, 2, 4, 8),
    baseline: str = "baseline",
    by: Sequence[str] = ("dataset", "model"),
) -> pd.DataFrame:
    """Each strategy at the budget whose ``tokens_total`` is closest to each multiple of the
    baseline's (its smallest budget), per dataset × model; a tie goes to the smaller budget.

    Columns: the ``by`` keys, ``multiple``, ``target_tokens``, ``strategy``, ``budget``,
    ``tokens_total``, ``ratio`` (its tokens over the baseline's) and ``flops_est``. Strategies
    with no known tokens and groups without a baseline are left out (the reference rows too).
    """
    by = list(by)
    rows = []
    known = compute[(compute["model"] != REFERENCE_MODEL) & compute["tokens_total"].notna()]
    for key, g in known.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        base = g[g["strategy"] == baseline]
        if base.empty:
            continue
        base_tokens = float(base.sort_values("budget")["tokens_total"].iloc[0])
        for strategy, s in g.groupby("strategy", sort=True):
            for multiple in multiples:
                target = float(multiple) * base_tokens
                pick = s.assign(_dist=(s["tokens_total"] - target).abs()).sort_values(
                    ["_dist", "budget"], kind="stable"
                )
                best = pick.iloc[0]
                rows.append(
                    {
                        **dict(zip(by, key, strict=True)),
                        "multiple": float(multiple),
                        "target_tokens": target,
                        "strategy": strategy,
                        "budget": int(best["budget"]),
                        "tokens_total": float(best["tokens_total"]),
                        "ratio": float(best["tokens_total"]) / base_tokens if base_tokens else np.nan,
                        "flops_est": float(best["flops_est"]),
                    }
                )
    columns = [*by, "multiple", "target_tokens", "strategy", "budget", "tokens_total", "ratio", "flops_est"]
    return pd.DataFrame(rows, columns=columns)


def conventions(scores: pd.DataFrame) -> pd.DataFrame:
    """``ambiemo.scoring.literature.cell_conventions`` per dataset × model × strategy at its largest
    budget: ambiemo's own conventions and the peers' presets, one row per cell × convention; the
    human ceilings, which have no answers, are left out."""
    from ambiemo.scoring.literature import COLUMNS, cell_conventions

    parts = []
    rows = at_largest_budget(scores[~is_ceiling(scores)])
    for (dataset, model, strategy, budget), g in rows.groupby(list(KEYS), sort=True):
        labels = _labels_in(g)
        p = g[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
        q = g[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
        table = cell_conventions(p, q, g["parsed_ok"].astype(bool).to_numpy(), labels)
        parts.append(table.assign(dataset=dataset, model=model, strategy=strategy, budget=budget))
    if not parts:
        return pd.DataFrame(columns=[*KEYS, *COLUMNS])
    out = pd.concat(parts, ignore_index=True)
    return out[[*KEYS, *COLUMNS]]


def metrics_json(summary: pd.DataFrame, baseline: str = "baseline", metric: str = "js") -> dict[str, Any]:
    """The headline for DVC's ``metrics`` (``dvc metrics show``/``diff``), small enough for a terminal:
    per dataset, each model's ``baseline`` and its best strategy on ``metric`` (every strategy at its
    largest budget, as the paper's headline), beside the uniform and human-ceiling references::

        {dataset: {model: {"baseline": {metric: v}, "best": {"strategy": "w-bon@8", metric: v}},
                   "reference": {"uniform": {metric: v}, "human_ceiling": {metric: v}}}}

    Ties on ``metric`` go to the first strategy by name, then budget. NaN and absent rows become None
    (valid JSON). Every other metric of every cell stays in the summary parquet."""
    lower = not M.METRICS[metric].higher_is_better
    rows = overall(summary)
    out: dict[str, Any] = {}

    def value(part: pd.DataFrame) -> float | None:
        v = float(part[metric].iloc[0]) if len(part) else float("nan")
        return round(v, 6) if np.isfinite(v) else None

    for dataset, d in rows.groupby("dataset", sort=True):
        entry = out.setdefault(str(dataset), {})
        for model, g in d[d["model"] != REFERENCE_MODEL].groupby("model", sort=True):
            cells = at_largest_budget(g).dropna(subset=[metric])
            cells = cells.sort_values([metric, "strategy", "budget"], ascending=[lower, True, True], kind="stable")
            best = cells.head(1)
            entry[str(model)] = {
                "baseline": {metric: value(g[g["strategy"] == baseline].sort_values("budget").head(1))},
                "best": {
                    "strategy": f"{best['strategy'].iloc[0]}@{int(best['budget'].iloc[0])}" if len(best) else None,
                    metric: value(best),
                },
            }
        refs = d[d["model"] == REFERENCE_MODEL]
        ceiling = "human-loo" if (refs["strategy"] == "human-loo").any() else "human-loo-counts"
        entry["reference"] = {
            "uniform": {metric: value(refs[refs["strategy"] == "uniform"])},
            "human_ceiling": {metric: value(refs[refs["strategy"] == ceiling])},
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
    """Reliability-diagram bins (``ambiemo.scoring.metrics.reliability_bins``) per group of ``by``, with the
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
