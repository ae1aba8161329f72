"""Figures of the calibration yardstick and the annotator counts, in the study's style
(``ambiemo.report.figures``): they read tables, they do not recompute statistics.

- ``metric_vs_ambiguity_calibrated``: figure 2 (``figures.metric_vs_ambiguity``) with, per strategy,
  its calibrated JS (``summary/calibration``, one method) as open markers joined by a dotted line in
  the strategy's colour: the part of each curve that a monotone reshaping fitted on other speakers
  removes is calibration, not knowledge.
- ``annotator_curves`` (figure 7): against the number of annotators ``k`` drawn per utterance
  (``stats/annotators``), one column of panels per corpus: the soft labels' entropy and the
  split-half ceiling; every cell's JS; Kendall's τ of the cells' ranking with the all-raters ranking
  and the share of comparisons with the baseline whose sign survives the redraw. Bands: the
  percentile intervals over redraws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ambiemo.report import figures as F

CALIBRATED_LABEL = "calibrated (other speakers' fit)"


def metric_vs_ambiguity_calibrated(
    summary: pd.DataFrame,
    calibration: pd.DataFrame | None,
    metric: str = "js",
    baseline: str = "baseline",
    ci: pd.DataFrame | None = None,
    method: str = "temperature+prior",
) -> Figure:
    """Figure 2 with each strategy's calibrated metric per ambiguity bin (only for ``metric == "js"``,
    the metric calibration minimises; other metrics are drawn as figure 2 is)."""
    fig = F.metric_vs_ambiguity(summary, metric, baseline=baseline, ci=ci)
    if calibration is None or calibration.empty or metric != "js":
        return fig
    cal = calibration[(calibration["method"] == method) & (calibration["ambiguity"] != "all")]
    cal = cal[cal["model"] != F.REFERENCE_MODEL]
    styles = F._styles(F._strategy_order(cal, baseline), baseline)
    multi = summary["dataset"].nunique() > 1
    for ax in fig.axes:
        title = ax.get_title()
        if not title:
            continue
        model, _, dataset = title.partition(" · ")
        pos = {t.get_text(): i for i, t in enumerate(ax.get_xticklabels())}
        d = cal[(cal["model"] == model) & ((cal["dataset"] == dataset) if multi else True)]
        for strategy, line in d.groupby("strategy"):
            line = line[line["ambiguity"].isin(pos)]
            x = line["ambiguity"].map(pos).to_numpy(dtype=float)
            order = np.argsort(x)
            look = styles.get(strategy, {"color": "grey"})
            ax.plot(
                x[order],
                line["js_calibrated"].to_numpy(dtype=float)[order],
                linestyle=":",
                marker="o",
                markerfacecolor="none",
                color=look["color"],
                linewidth=0.8,
                zorder=2,
            )
    handle = Line2D([], [], linestyle=":", marker="o", markerfacecolor="none", color="grey")
    fig.legend([handle], [CALIBRATED_LABEL], loc="upper right", bbox_to_anchor=(1.0, 1.0), fontsize=6)
    return fig


PANELS = (
    ("entropy_bits", "soft-label entropy (bits)"),
    ("js", "JS distance to the k-rater label"),
    ("tau", "Kendall τ with all raters"),
)


def annotator_curves(annotators: pd.DataFrame, baseline: str = "baseline") -> Figure:
    """Figure 7 (module docstring)."""
    if annotators is None or annotators.empty:
        return F._message_figure("no corpus of this run has raters to redraw")
    datasets = sorted(annotators["dataset"].unique())
    with F.plt.rc_context(F.RC):
        fig, axes = F._grid(len(PANELS), len(datasets), min(F.DOUBLE, 0.8 + 2.4 * len(datasets)), 1.6, sharex="col")
        for c, dataset in enumerate(datasets):
            d = annotators[annotators["dataset"] == dataset]
            cells = d[d["quantity"] == "js"]
            styles = F._styles(F._strategy_order(cells, baseline) if len(cells) else [baseline], baseline)
            for r, (quantity, label) in enumerate(PANELS):
                ax = axes[r, c]
                if quantity == "js":
                    several = cells["model"].nunique() > 1
                    for (model, strategy), line in cells.groupby(["model", "strategy"], sort=True):
                        look = styles[strategy]
                        name = f"{model}/{strategy}" if several else str(strategy)
                        _curve(ax, line, look["color"], name, look.get("linestyle", "-"))
                    _curve(ax, d[d["quantity"] == "ceiling_js"], "grey", "human split-half", "--")
                elif quantity == "tau":
                    _curve(ax, d[d["quantity"] == "tau"], "black", "Kendall τ", "-")
                    _curve(ax, d[d["quantity"] == "comparisons_agree"], "#0072B2", "comparisons kept", "--")
                    ax.set_ylim(-1.05, 1.05)
                else:
                    _curve(ax, d[d["quantity"] == quantity], "black", label, "-")
                if c == 0:
                    ax.set_ylabel(label)
                if r == 0:
                    ax.set_title(str(dataset))
                if r == len(PANELS) - 1:
                    ax.set_xlabel("annotators per utterance (k)")
        F._legend(fig, axes, ncol=4)
    return fig


def _curve(ax, line: pd.DataFrame, colour: str, label: str, linestyle: str) -> None:
    line = line.sort_values("k")
    if line.empty:
        return
    k = line["k"].to_numpy(dtype=float)
    ax.plot(k, line["mean"], color=colour, linestyle=linestyle, label=label, marker=".")
    ax.fill_between(k, line["ci_low"], line["ci_high"], color=colour, alpha=0.15, linewidth=0)
