"""Figures 5 and 6, in the style of ``ambiemo.report.figures``.

5. ``reliability_diagrams``: accuracy against confidence per model × strategy (``scoring.reliability``).
6. ``ambiguity_distribution``: the annotators' vote entropy per dataset (manifests or scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ambiemo.report.figures import (
    DOUBLE,
    PALETTE,
    RC,
    _grid,
    _legend,
    _model_order,
    _models_only,
    _strategy_order,
    _styles,
)
from ambiemo.scoring import at_largest_budget


def reliability_diagrams(
    rel: pd.DataFrame, baseline: str = "baseline", strategies: Sequence[str] | None = None
) -> Figure:
    """Reliability diagrams: per confidence bin, the accuracy against the majority label (bars)
    beside the diagonal of perfect calibration, with the bin's mean confidence marked and the
    ECE in the title; one row per model (and dataset), one column per strategy (at its largest
    budget, or only ``strategies``). Takes ``scoring.reliability(scores)``."""
    data = at_largest_budget(_models_only(rel))
    if strategies is not None:
        data = data[data["strategy"].isin(strategies)]
    rows = [(d, m) for d in sorted(data["dataset"].unique()) for m in _model_order(data[data["dataset"] == d])]
    cols = _strategy_order(data, baseline)
    styles = _styles(cols, baseline)
    several = data["dataset"].nunique() > 1
    panel = min(1.45, (DOUBLE - 0.4) / max(len(cols), 1))
    with plt.rc_context(RC):
        fig, axes = _grid(len(rows), len(cols), 0.4 + panel * len(cols), panel + 0.25, sharex=True, sharey=True)
        for r, (dataset, model) in enumerate(rows):
            for c, s in enumerate(cols):
                ax = axes[r, c]
                d = data[(data["dataset"] == dataset) & (data["model"] == model) & (data["strategy"] == s)]
                width = float((d["upper"] - d["lower"]).iloc[0]) if len(d) else 0.2
                used = d[d["n"] > 0]
                ax.bar(
                    used["lower"],
                    used["accuracy"],
                    width=width,
                    align="edge",
                    color=styles[s]["color"],
                    alpha=0.8,
                    edgecolor="white",
                    linewidth=0.5,
                )
                ax.scatter(used["confidence"], used["accuracy"], s=6, color="black", zorder=3)
                ax.plot([0, 1], [0, 1], color="#555555", linewidth=0.7, linestyle=":")
                total = used["n"].sum()
                ece = (
                    float((used["n"] * (used["accuracy"] - used["confidence"]).abs()).sum() / total)
                    if total
                    else np.nan
                )
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_aspect("equal")
                ax.grid(False)
                name = s.replace("-", "-\n", 1) if len(s) > 12 else s  # long names would collide
                ax.set_title(f"{name}\nECE {ece:.2f}" if r == 0 else f"ECE {ece:.2f}", fontsize=6.5)
                if c == 0:
                    ax.set_ylabel(model + (f" · {dataset}" if several else ""))
        fig.supxlabel("confidence (probability of the predicted label)", fontsize=RC["axes.labelsize"])
        fig.supylabel("accuracy against the majority label", fontsize=RC["axes.labelsize"])
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- 6. ambiguity distribution


def ambiguity_distribution(frame: pd.DataFrame | Mapping[str, Any], max_levels: int = 15) -> Figure:
    """How ambiguous each dataset is: the count of utterances per vote-entropy value (a histogram
    when there are more than ``max_levels`` distinct values), coloured by ambiguity bin. Takes
    manifests ({dataset: Manifest}), a manifest's frame, or scores (one row per utterance is kept)."""
    if isinstance(frame, Mapping):
        parts = []
        for m in frame.values():
            order = {b: i for i, b in enumerate(m.ambiguity_order())}
            parts.append(m.df.assign(ambiguity_rank=m.df["ambiguity"].map(order)))
        frame = pd.concat(parts, ignore_index=True)
    utts = frame.drop_duplicates(["dataset", "utt_id"])
    datasets = sorted(utts["dataset"].unique())
    if "ambiguity_rank" in utts:
        bins = utts[["ambiguity", "ambiguity_rank"]].drop_duplicates().sort_values("ambiguity_rank")["ambiguity"]
    else:
        bins = utts.groupby("ambiguity")["entropy_bits"].mean().sort_values().index
    colour = {b: PALETTE[[4, 1, 0, 5, 6, 2, 3, 7, 8][i % 9]] for i, b in enumerate(bins)}
    with plt.rc_context(RC):
        fig, axes = _grid(1, len(datasets), min(DOUBLE, 0.4 + 2.6 * len(datasets)), 2.0)
        for ax, dataset in zip(axes[0], datasets, strict=True):
            d = utts[utts["dataset"] == dataset]
            h = np.round(d["entropy_bits"].to_numpy(dtype=float), 3)
            distinct = np.unique(h)
            if len(distinct) <= max_levels:
                width = 0.035 * max(float(h.max()), 1.0)  # visible bars; close values may overlap a little
                for b in bins:
                    sub = np.round(d.loc[d["ambiguity"] == b, "entropy_bits"].to_numpy(dtype=float), 3)
                    if sub.size:
                        vals, counts = np.unique(sub, return_counts=True)
                        ax.bar(vals, counts, width=width, color=colour[b], label=b)
            else:
                edges = np.linspace(0, max(h.max(), 1e-6), 21)
                ax.hist(
                    [d.loc[d["ambiguity"] == b, "entropy_bits"] for b in bins],
                    bins=edges,
                    stacked=True,
                    color=[colour[b] for b in bins],
                    label=list(bins),
                )
            ax.set_xlabel("vote entropy (bits)")
            ax.set_ylabel("utterances")
            ax.set_title(f"{dataset} (n = {len(d)}, mean {d['entropy_bits'].mean():.2f} bits)")
        _legend(fig, axes)
    return fig
