"""Figures 3 and 4: how test-time scaling pays, in the style of ``ambiemo.report.figures``.

3. ``interaction``: gain over the baseline against model capacity, one panel per ambiguity level,
   one line per model family (the stats stage's ``gains`` table: ``gain_intervals`` makes it for
   scores without one).
4. ``compute_curves``: a metric against generated tokens and against model calls per utterance,
   one line per strategy through its budgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ambiemo.report import style
from ambiemo.report.figures import (
    BASELINE_COLOUR,
    DOUBLE,
    RC,
    _grid,
    _label,
    _legend,
    _message_figure,
    _model_order,
    _models_only,
    _strategy_order,
    _styles,
)
from ambiemo.scoring import at_largest_budget, overall
from ambiemo.scoring.metrics import METRICS


def gain_intervals(
    scores: pd.DataFrame,
    metric: str = "js",
    params: Mapping[str, Any] | None = None,
    baseline: str = "baseline",
    n_resamples: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """The gains table of the stats stage (``ambiemo.stats.gains.gain_table``: each strategy's mean
    paired gain over the baseline per ambiguity level, with its speaker-clustered interval) for one
    per-utterance ``metric``, for scores that have no stats stage behind them. Figure 3 of the
    pipeline reads ``stats/gains.parquet`` instead: the figure draws the table, it computes nothing."""
    from ambiemo.stats.gains import gain_table

    if metric not in scores.columns:
        raise KeyError(f"gain_intervals: the scores have no per-utterance column {metric!r}")
    params = dict(params or {})  # the table reads every setting from params: these arguments override them
    if baseline:
        params["stats"] = {**(params.get("stats") or {}), "baseline": baseline}
    if n_resamples:
        params["scoring"] = {**(params.get("scoring") or {}), "bootstrap_resamples": n_resamples}
    if seed is not None:
        params["seed"] = seed
    return gain_table(scores, params, metrics=[metric])


def model_families(params: Mapping[str, Any] | None, models: Sequence[str]) -> dict[str, str]:
    """Each model's family (params ``models.<key>.family``); a model without one is its own family:
    ``ambiemo.stats.families``, the grouping the capacity models use, so the figure and the table agree."""
    from ambiemo.stats import families

    models = list(models)
    return dict(zip(models, families(pd.Series(models, dtype=object), params), strict=True))


def interaction(gains: pd.DataFrame, baseline: str = "baseline", families: Mapping[str, str] | None = None) -> Figure:
    """Gain over the baseline (positive = better) against model capacity (log scale): one row of
    panels per strategy (at its largest budget) and dataset, one column per ambiguity level, and in
    each panel one line per model **family** through its models' sizes (a family with one model is
    a point), each family with its own colour and marker (``style.model_family_encodings``).

    Takes the stats stage's gains table (``stats/gains.parquet``, ``ambiemo.stats.gains.gain_table``)
    for one metric (error bars from its ``ci_low`` / ``ci_high``) or
    ``scoring.gain_over_baseline(summary, metric)`` (no intervals). ``families`` maps a model to
    its family (``model_families(params, models)``); unmapped models are their own family. The
    reference predictors are left out, and so are models without a capacity (API models): the
    figure's footnote counts them.
    """
    data = at_largest_budget(_models_only(gains))
    data = data[data["strategy"] != baseline]
    if data.empty:
        return _message_figure("no gain to show: the run has no strategy besides the baseline")
    metric = str(data["metric"].iloc[0])
    families = dict(families or {})
    data = data.assign(family=data["model"].map(lambda m: families.get(m, m)))
    no_size = sorted(data.loc[~(data["params_b"] > 0), "model"].unique())
    data = data[data["params_b"] > 0]
    if data.empty:
        return _message_figure(f"no gain against capacity: no model has a capacity (left out: {', '.join(no_size)})")
    if "ci_low" not in data:
        data = data.assign(ci_low=np.nan, ci_high=np.nan)
    levels = data[["ambiguity", "ambiguity_rank"]].drop_duplicates().sort_values("ambiguity_rank")["ambiguity"].tolist()
    rows = [(d, s) for d in sorted(data["dataset"].unique()) for s in _strategy_order(data[data["dataset"] == d])]
    looks = style.model_family_encodings(data["family"].unique())
    caps = np.sort(data["params_b"].unique())
    with plt.rc_context(RC):
        panel_h = 1.3 if len(rows) <= 8 else max(0.75, 10.4 / len(rows))  # many datasets × strategies: one page
        width = min(DOUBLE, 0.6 + 1.6 * len(levels))
        fig, axes = _grid(len(rows), len(levels), width, panel_h, sharex=True, sharey=True)
        for r, (dataset, strategy) in enumerate(rows):
            for c, level in enumerate(levels):
                ax = axes[r, c]
                d = data[(data["dataset"] == dataset) & (data["strategy"] == strategy) & (data["ambiguity"] == level)]
                for fam in sorted(d["family"].unique()):
                    _family_line(ax, d[d["family"] == fam].sort_values("params_b"), fam, looks[fam])
                ax.axhline(0, color=BASELINE_COLOUR, linewidth=0.8)
                ax.set_xscale("log")
                ax.set_xticks(caps, [f"{x:g}" for x in caps])  # the models' own sizes, not decades
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_xlim(caps[0] / 1.6, caps[-1] * 1.6)
                if r == 0:
                    ax.set_title("all utterances" if level == "all" else f"ambiguity: {level}")
                if c == 0:
                    ax.set_ylabel(strategy + (f"\n{dataset}" if len({d for d, _ in rows}) > 1 else ""))
        name = METRICS[metric].label if metric in METRICS else metric
        fig.supylabel(f"gain in {name} over {baseline} (positive = better)", fontsize=RC["axes.labelsize"])
        note = f"; left out, no capacity: {', '.join(no_size)}" if no_size else ""
        fig.supxlabel(f"model capacity (billions of parameters, log scale){note}", fontsize=RC["axes.labelsize"])
        _legend(fig, axes, ncol=6)
    return fig


def _family_line(ax, line: pd.DataFrame, family: str, look: Mapping[str, Any]) -> None:
    """One family's gains through its models' sizes, with error bars where the interval is known."""
    x, y = line["params_b"].to_numpy(dtype=float), line["gain"].to_numpy(dtype=float)
    lo, hi = line["ci_low"].to_numpy(dtype=float), line["ci_high"].to_numpy(dtype=float)
    ax.plot(x, y, label=family, **look)
    if np.isfinite(lo).any():
        yerr = np.vstack([y - lo, hi - y])
        ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=look["color"], elinewidth=0.7, capsize=1.5)


# --------------------------------------------------------------------------- 4. compute curves

# x axes of figure 4, best first: (column, label); the first of each pair the table has is used.
COMPUTE_AXES = (
    (
        ("tokens_total", "tokens processed per utterance\n(prompt + generated, model + verifier)"),
        ("gen_tokens", "generated tokens per utterance\n(model only)"),
    ),
    (("calls_total", "calls per utterance\n(model + verifier)"), ("model_calls", "model calls per utterance")),
    (("flops_est", "FLOPs per utterance (estimate:\n2 × parameters × tokens)"),),
)


def compute_curves(
    summary: pd.DataFrame, metric: str = "js", baseline: str = "baseline", compute: pd.DataFrame | None = None
) -> Figure:
    """``metric`` against compute per utterance: one line per strategy through its budgets, one row
    per model (and dataset), one column per compute axis.

    The axes are the total tokens processed (``tokens_total``: prompt + generated, model and
    verifier), the calls (model + verifier calls, so that a verifier's scoring is counted) and the
    estimated FLOPs (``flops_est``, 2 × parameters × tokens: an estimate) where the summary or the
    ``compute`` table has them; otherwise the older axes (generated tokens, model calls) stand in,
    and the FLOPs column is left out. The reference predictors spend no compute and are left out.
    """
    data = _models_only(overall(summary))
    if compute is not None:
        keys = [k for k in ("dataset", "model", "strategy", "budget") if k in compute]
        extra = [c for c in ("tokens_total", "flops_est", "verifier_calls") if c in compute and c not in data]
        if extra:
            data = data.merge(compute[[*keys, *extra]].drop_duplicates(keys), on=keys, how="left")
    if "verifier_calls" in data and "model_calls" in data:
        data = data.assign(calls_total=data["model_calls"] + data["verifier_calls"].fillna(0))
    xs = [next(((col, lab) for col, lab in axis if _has(data, col)), None) for axis in COMPUTE_AXES]
    xs = [x for x in xs if x is not None]
    rows = [(d, m) for d in sorted(data["dataset"].unique()) for m in _model_order(data[data["dataset"] == d])]
    strategies = _strategy_order(data, baseline)
    styles = _styles(strategies, baseline)
    with plt.rc_context(RC):
        fig, axes = _grid(len(rows), len(xs), min(DOUBLE, 0.6 + 2.3 * len(xs)), 1.9, sharey="row")
        for r, (dataset, model) in enumerate(rows):
            d = data[(data["dataset"] == dataset) & (data["model"] == model)]
            for c, (x, xlabel) in enumerate(xs):
                ax = axes[r, c]
                for s in strategies:
                    line = d[d["strategy"] == s].sort_values("budget")
                    line = line[np.isfinite(line[x].to_numpy(dtype=float))]
                    if len(line):
                        ax.plot(line[x], line[metric], label=s, **styles[s])
                finite = d[x].to_numpy(dtype=float)
                finite = finite[np.isfinite(finite)]
                if finite.size and (finite > 0).all() and finite.max() / finite.min() > 20:
                    ax.set_xscale("log")
                if x == "flops_est":
                    ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 36G, not an offset "1e10"
                ax.set_xlabel(xlabel)
                if c == 0:
                    several = data["dataset"].nunique() > 1
                    ax.set_ylabel(f"{_label(metric)}\n{model}" + (f" · {dataset}" if several else ""))
        _legend(fig, axes)
    return fig


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and bool(np.isfinite(frame[column].to_numpy(dtype=float)).any())


# --------------------------------------------------------------------------- 5. reliability
