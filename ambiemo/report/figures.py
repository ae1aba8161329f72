"""The study's figures, in one style: headless, fixed sizes, a colour-blind-safe palette.

Each figure function takes the tidy tables of ``ambiemo.scoring`` / ``ambiemo.stats`` and returns a
matplotlib ``Figure``; ``save_figure`` writes it as a vector PDF (for the paper) and a PNG (for a
quick look) into ``figures/``. The six figures:

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
import zlib
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


def gain_intervals(
    scores: pd.DataFrame,
    metric: str = "js",
    params: Mapping[str, Any] | None = None,
    baseline: str = "baseline",
    n_resamples: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """Each strategy's gain over the baseline on the per-utterance score ``metric`` (``js``, ``bc``,
    ``tv``, ``brier``, ``correct`` …) with a speaker-clustered percentile bootstrap interval, per
    dataset × model × strategy × budget × ambiguity level (``"all"`` and each bin).

    The gain is the mean paired difference over the utterances both scored, signed so that positive
    is better; pairs with a NaN on either side are dropped and counted in ``n_dropped``. Whole
    speakers are resampled (``ambiemo.stats.clusters``, the same clusters as every other CI), from a
    generator seeded by the run seed and the group's name, so an interval does not depend on row
    order or on which other cells are present. The reference predictors are left out (no baseline).
    Defaults: params ``scoring.bootstrap_resamples``, ``scoring.ci_level``, ``seed``.
    """
    from ambiemo.scoring import scoring_params
    from ambiemo.stats import clusters, resample_weights

    if metric not in scores.columns:
        raise KeyError(f"gain_intervals: the scores have no per-utterance column {metric!r}")
    sp = scoring_params(params)
    n_resamples = int(n_resamples or sp["bootstrap_resamples"])
    alpha = (1 - float(sp["ci_level"])) / 2
    seed = int(seed if seed is not None else (params or {}).get("seed", 0) or 0)
    sign = 1.0 if (METRICS[metric].higher_is_better if metric in METRICS else True) else -1.0
    rows = []
    for (dataset, model), g in _models_only(scores).groupby(["dataset", "model"], sort=True):
        base = g[g["strategy"] == baseline]
        base = base[base["budget"] == base["budget"].min()].set_index("utt_id")[metric]
        for (strategy, budget), cell in g[g["strategy"] != baseline].groupby(["strategy", "budget"], sort=True):
            cell = cell.set_index("utt_id")
            common = cell.index.intersection(base.index)
            pairs = cell.loc[common].assign(d=sign * (cell.loc[common, metric] - base.loc[common])).reset_index()
            dropped = int(pairs["d"].isna().sum())
            pairs = pairs.dropna(subset=["d"])
            levels = [("all", -1, pairs)] + [
                (b, int(p["ambiguity_rank"].iloc[0]), p) for b, p in pairs.groupby("ambiguity", sort=True)
            ]
            for level, rank, part in levels:
                key = (dataset, model, strategy, budget, level, metric)
                row = dict(zip(("dataset", "model", "strategy", "budget", "ambiguity"), key, strict=False))
                row.update(ambiguity_rank=rank, metric=metric, n_pairs=len(part), n_dropped=dropped)
                row["params_b"] = float(part["params_b"].iloc[0]) if "params_b" in part and len(part) else np.nan
                d = part["d"].to_numpy(dtype=float)
                if d.size == 0:
                    rows.append({**row, "gain": np.nan, "ci_low": np.nan, "ci_high": np.nan})
                    continue
                codes, _ = clusters(part)
                rng = np.random.default_rng([seed, zlib.crc32(repr(key).encode())])
                w = resample_weights(codes, n_resamples, rng)
                boot = (w @ d) / w.sum(axis=1)
                low, high = np.quantile(boot, [alpha, 1 - alpha])
                rows.append({**row, "gain": float(d.mean()), "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows)


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

    Takes ``gain_intervals(scores, metric)`` (error bars from its ``ci_low`` / ``ci_high``) or
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
