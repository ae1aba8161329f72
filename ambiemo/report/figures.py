"""The study's figures, in one style: headless, fixed sizes, a colour-blind-safe palette.

Each figure function takes the tidy tables of ``ambiemo.scoring`` / ``ambiemo.stats`` and returns a
matplotlib ``Figure``; ``save_figure`` writes it as a vector PDF (for the paper) and a PNG (for a
quick look) into ``figures/``. The style, the saving and the shared helpers live here, with figures 1
and 2; figures 3 and 4 (how test-time scaling pays) are in ``figures_scaling``, 5 and 6 (calibration
and the corpora's ambiguity) in ``figures_distributions``, 2's calibrated markers and 7 in
``figures_conventions``. The figures:

1. ``metric_heatmap``: a metric by model × strategy, one panel per dataset (``summarise`` rows
   with ``ambiguity == "all"``; optional ``bootstrap_ci`` table for ± half-widths).
2. ``metric_vs_ambiguity``: a metric against the ambiguity bin, one line per strategy, one panel
   per model (and dataset).
3. ``interaction``: gain over the baseline against model capacity, one panel per ambiguity level
   (``scoring.gain_over_baseline``).
4. ``compute_curves``: a metric against generated tokens and against model calls per utterance,
   one line per strategy through its budgets.
5. ``reliability_diagrams``: accuracy against confidence per model × strategy (``scoring.reliability``).
6. ``ambiguity_distribution``: the annotators' vote entropy per dataset (manifests or scores).

Colours are Okabe & Ito's palette (distinguishable with the common colour-vision deficiencies),
combined with line styles and markers so that nine strategies stay apart in grey scale too;
heatmaps use viridis. Outputs are deterministic: no timestamps in the PDF.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # headless: the pipeline and CI have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ambiemo.report import style
from ambiemo.scoring import at_largest_budget, overall
from ambiemo.scoring.metrics import METRICS
from ambiemo.scoring.references import MODEL as REFERENCE_MODEL  # the model name of the reference rows

# Okabe & Ito (2008), "Color Universal Design", without its black, which marks the baseline.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#999999")
MARKERS = ("s", "^", "D", "v", "P", "X", "*", "h")
LINESTYLES = ("-", "--", "-.", ":")
BASELINE_COLOUR = "#000000"

# Figure widths in inches: one column and two columns of a two-column paper.
SINGLE, DOUBLE = 3.5, 7.2


RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,  # embed TrueType: editable text, accepted by publishers
    "svg.hashsalt": "ambiemo",
    "figure.dpi": 100,
    "savefig.bbox": "tight",
}


def figure_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``figures`` with the schema's defaults (``ambiemo.core.params.Figures``)."""
    from ambiemo.core.config import settings

    return settings(dict(params or {}), "figures")


def use_style() -> None:
    """Apply the figures' style to every later matplotlib figure (for a notebook's own plots);
    the figure functions here apply it themselves."""
    plt.rcParams.update(RC)


def save_figure(
    fig: Figure,
    stem: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
    *,
    folder: str | os.PathLike | None = None,
    formats: Sequence[str] | None = None,
    dpi: int | None = None,
) -> list[Path]:
    """Write ``fig`` as ``<folder>/<stem>.<format>`` for each format (PDF and PNG by default) and
    close it. Returns the paths written.

    ``params`` is the params mapping or its ``figures`` section; arguments left out come from it
    (``folder``, ``formats``, ``dpi``). A ``stem`` with a folder in it (``figures/fig1``) is
    written there.
    """
    from ambiemo.core.params import Figures

    section = params is not None and bool(params) and set(params) <= set(Figures.model_fields)
    fp = figure_params({"figures": params} if section else params)
    stem = Path(stem)
    if stem.parent != Path("."):
        folder, stem = stem.parent, Path(stem.name)
    folder = Path(folder if folder is not None else fp["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats or fp["formats"]:
        path = folder / f"{stem}.{fmt}"
        # No creation date or software version in the file: an unchanged rerun is byte-identical.
        meta = {
            "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
            "png": {"Software": None},
            "svg": {"Date": None, "Creator": None},
        }.get(fmt)
        with plt.rc_context(RC):
            fig.savefig(path, format=fmt, dpi=int(dpi or fp["dpi"]), metadata=meta, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- helpers


def _label(metric: str) -> str:
    info = METRICS.get(metric)
    if info is None:
        return metric
    return f"{info.label} ({'↑' if info.higher_is_better else '↓'})"


def _model_order(frame: pd.DataFrame) -> list[str]:
    """Models from smallest to largest capacity (name order among equals or unknowns)."""
    cap = frame.groupby("model")["params_b"].first() if "params_b" in frame else pd.Series(dtype=float)
    models = sorted(frame["model"].unique())
    return sorted(models, key=lambda m: (np.nan_to_num(cap.get(m, np.nan), nan=np.inf), m))


def _strategy_order(frame: pd.DataFrame, baseline: str = "baseline") -> list[str]:
    names = sorted(frame["strategy"].unique())
    return ([baseline] if baseline in names else []) + [s for s in names if s != baseline]


def _styles(strategies: Sequence[str], baseline: str = "baseline") -> dict[str, dict[str, Any]]:
    """Encodings by strategy name (``ambiemo.report.style``): colour by family, marker and line style by
    variant, the same in every figure; ``baseline`` (if renamed) keeps the baseline's look."""
    out = style.encodings([s for s in strategies if s != baseline])
    out[baseline] = style.encoding("baseline")
    return out


def _columns(frame: pd.DataFrame) -> list[tuple[str, Any]]:
    """Heatmap columns: (strategy, budget), baseline first; budgets shown only where a strategy has several."""
    out = []
    for s in _strategy_order(frame):
        out += [(s, b) for b in sorted(frame.loc[frame["strategy"] == s, "budget"].unique())]
    return out


def _grid(n_rows: int, n_cols: int, width: float, panel_h: float, **kw) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, panel_h * n_rows + 0.6), squeeze=False, **kw)
    return fig, axes


# --------------------------------------------------------------------------- 1. heatmap


def metric_heatmap(summary: pd.DataFrame, metric: str = "js", ci: pd.DataFrame | None = None) -> Figure:
    """``metric`` for every model (rows, by capacity) × strategy (columns), one panel per dataset.

    Brighter is better whichever way the metric points. With a ``bootstrap_ci`` table, each cell
    also shows the half-width of its interval.
    """
    data = _models_only(overall(summary))
    datasets = sorted(data["dataset"].unique())
    higher = METRICS[metric].higher_is_better if metric in METRICS else True
    with plt.rc_context(RC):
        cols_all = _columns(data)
        width = min(DOUBLE, 1.6 + 0.62 * len(cols_all))
        n_models = data["model"].nunique()
        fig, axes = _grid(len(datasets), 1, width, 0.45 * n_models + 1.1)
        values = data[metric].to_numpy(dtype=float)
        vmin, vmax = (np.nanmin(values), np.nanmax(values)) if np.isfinite(values).any() else (0, 1)
        image = None
        for ax, dataset in zip(axes[:, 0], datasets, strict=True):
            d = data[data["dataset"] == dataset]
            models, cols = _model_order(d), _columns(d)
            grid = np.full((len(models), len(cols)), np.nan)
            half = np.full_like(grid, np.nan)
            for i, m in enumerate(models):
                for j, (s, b) in enumerate(cols):
                    hit = d[(d["model"] == m) & (d["strategy"] == s) & (d["budget"] == b)]
                    if len(hit):
                        grid[i, j] = hit[metric].iloc[0]
                    if ci is not None:
                        c = ci[
                            (ci["dataset"] == dataset)
                            & (ci["model"] == m)
                            & (ci["strategy"] == s)
                            & (ci["budget"] == b)
                            & (ci["metric"] == metric)
                        ]
                        if "ambiguity" in c:
                            c = c[c["ambiguity"] == "all"]
                        if len(c):
                            half[i, j] = (c["ci_high"].iloc[0] - c["ci_low"].iloc[0]) / 2
            image = ax.imshow(grid, cmap="viridis" if higher else "viridis_r", vmin=vmin, vmax=vmax, aspect="auto")
            multi = {s for s, _ in cols if sum(1 for t, _ in cols if t == s) > 1}
            ax.set_xticks(
                range(len(cols)), [f"{s}\nB={b}" if s in multi else s for s, b in cols], rotation=45, ha="right"
            )
            ax.set_yticks(range(len(models)), models)
            ax.grid(False)
            ax.set_title(dataset)
            mid = (vmin + vmax) / 2
            for (i, j), v in np.ndenumerate(grid):
                if np.isnan(v):
                    continue
                text = f"{v:.2f}" + (f"\n±{half[i, j]:.2f}" if np.isfinite(half[i, j]) else "")
                dark = (v < mid) if higher else (v > mid)
                ax.text(j, i, text, ha="center", va="center", fontsize=6, color="white" if dark else "black")
        if image is not None:
            fig.colorbar(image, ax=axes[:, 0].tolist(), label=_label(metric), shrink=0.9)
    return fig


# --------------------------------------------------------------------------- 2. metric vs ambiguity


def _models_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of real models: the reference predictors (``model == "reference"``) left out."""
    return frame[frame["model"] != REFERENCE_MODEL] if "model" in frame else frame


def _with_ci(frame: pd.DataFrame, ci: pd.DataFrame | None, metric: str) -> pd.DataFrame:
    """``frame`` with the ``ci_low`` / ``ci_high`` of ``metric`` from a ``bootstrap_ci`` table
    (NaN where it has none), matched on the cell and the ambiguity bin."""
    if ci is None or ci.empty:
        return frame.assign(ci_low=np.nan, ci_high=np.nan)
    keys = [k for k in ("dataset", "model", "strategy", "budget", "ambiguity") if k in frame and k in ci]
    rows = ci[ci["metric"] == metric][[*keys, "ci_low", "ci_high"]].drop_duplicates(keys)
    return frame.drop(columns=["ci_low", "ci_high"], errors="ignore").merge(rows, on=keys, how="left")


def _band(ax, x, line: pd.DataFrame, colour: str, alpha: float = 0.15) -> None:
    """The confidence band of a line, where its interval is known."""
    lo, hi = line["ci_low"].to_numpy(dtype=float), line["ci_high"].to_numpy(dtype=float)
    if np.isfinite(lo).any():
        ax.fill_between(np.asarray(x, dtype=float), lo, hi, color=colour, alpha=alpha, linewidth=0)


def metric_vs_ambiguity(
    summary: pd.DataFrame, metric: str = "js", baseline: str = "baseline", ci: pd.DataFrame | None = None
) -> Figure:
    """``metric`` per ambiguity bin (least to most ambiguous), one line per strategy (at its largest
    budget), one panel per model; one row of panels per dataset.

    With a per-bin ``bootstrap_ci`` table (``per_bin=True``) each line has its confidence band.
    The reference predictors (rows with ``model == "reference"``: uniform, label-prior,
    hard-oracle, the human ceilings) are drawn in every panel of their dataset as thin grey lines,
    labelled at their right end; a reference that does not define ``metric`` (the human ceilings
    define JS, BC, TV and Brier only) is left out. When JS is plotted and the summary holds no
    uniform reference, each panel says so: the free slope of a near-uniform answer would be unseen.
    """
    data = _with_ci(at_largest_budget(summary[summary["ambiguity"] != "all"]), ci, metric)
    refs = data[data["model"] == REFERENCE_MODEL]
    data = _models_only(data)
    datasets = sorted(data["dataset"].unique())
    models = _model_order(data)
    strategies = _strategy_order(data, baseline)
    styles = _styles(strategies, baseline)
    ref_styles = style.encodings(sorted(refs["strategy"].unique()))
    with plt.rc_context(RC):
        fig, axes = _grid(len(datasets), len(models), min(DOUBLE, 0.6 + 2.4 * len(models)), 1.9, sharey=True)
        for r, dataset in enumerate(datasets):
            d = data[data["dataset"] == dataset]
            ref_d = refs[refs["dataset"] == dataset]
            bins = pd.concat([d, ref_d])[["ambiguity", "ambiguity_rank"]].drop_duplicates()
            pos = {b: i for i, b in enumerate(bins.sort_values("ambiguity_rank")["ambiguity"])}
            for c, model in enumerate(models):
                ax = axes[r, c]
                for s in strategies:
                    line = d[(d["model"] == model) & (d["strategy"] == s)].sort_values("ambiguity_rank")
                    if len(line):
                        x = line["ambiguity"].map(pos)
                        ax.plot(x, line[metric], label=s, **styles[s])
                        _band(ax, x, line, styles[s]["color"])
                _reference_lines(ax, ref_d, metric, pos, ref_styles)
                if metric == "js" and "uniform" not in set(ref_d["strategy"]):
                    ax.text(0.02, 0.02, "uniform reference missing", transform=ax.transAxes, fontsize=6, color="red")
                ax.set_xticks(range(len(pos)), list(pos))
                ax.set_xlim(-0.2, len(pos) - 1 + 0.9)  # room for the reference labels at the right
                ax.set_title(f"{model}" + (f" · {dataset}" if len(datasets) > 1 else ""))
                ax.set_xlabel("ambiguity (vote entropy bin)")
                if c == 0:
                    ax.set_ylabel(_label(metric))
        _legend(fig, axes)
    return fig


def _reference_lines(ax, refs: pd.DataFrame, metric: str, pos: Mapping[str, int], styles) -> None:
    """Each reference predictor as a labelled grey line (with its band) over the bins."""
    for name in sorted(refs["strategy"].unique()):
        line = refs[refs["strategy"] == name].sort_values("ambiguity_rank")
        line = line[np.isfinite(line[metric].to_numpy(dtype=float))]
        if line.empty:
            continue  # a human ceiling does not define this metric
        x = line["ambiguity"].map(pos).to_numpy(dtype=float)
        y = line[metric].to_numpy(dtype=float)
        ax.plot(x, y, label=name, zorder=1, **styles[name])
        _band(ax, x, line, styles[name]["color"], alpha=0.08)
        ax.annotate(
            name,
            (x[-1], y[-1]),
            xytext=(3, 0),
            textcoords="offset points",
            fontsize=5.5,
            color=styles[name]["color"],
            va="center",
        )


def _legend(fig: Figure, axes: np.ndarray, ncol: int = 5) -> None:
    handles, labels = {}, []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles and not lab.startswith("_"):
                handles[lab] = h
                labels.append(lab)
    if handles:
        fig.legend(
            [handles[x] for x in labels],
            labels,
            loc="lower center",
            ncol=min(len(labels), ncol),
            bbox_to_anchor=(0.5, 1.0),
        )
    fig.tight_layout()


# --------------------------------------------------------------------------- 3. interaction


def _message_figure(text: str) -> Figure:
    """A small figure that says why there is nothing to plot (the pipeline still writes the file)."""
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(SINGLE, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig
