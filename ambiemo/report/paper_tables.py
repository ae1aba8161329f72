"""The manuscript's tables of comparisons (``\\input`` by ``paper/``), each written by ``paper_outputs``
(``ambiemo.report.paper``) from a stage's table, with a note in place of a table the run did not compute:

    tab_paired.tex           each strategy against the baseline: gain, interval, Holm-corrected p
    tab_compute_matched.tex  the strategies at equal compute (multiples of the baseline's tokens)
    tab_conventions.tex      each cell under every convention row (``ambiemo.scoring.literature``)
    tab_power.tex            the smallest gain each comparison could show
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.report.latex import format_value, headed_table, note_table
from ambiemo.scoring import at_largest_budget
from ambiemo.scoring.references import MODEL as REFERENCE_MODEL  # the model name of the reference rows


def with_order(frame: pd.DataFrame, strategies: list[str]) -> pd.DataFrame:
    """Rows by dataset, model, the run's strategy order, then budget."""
    order = {s: i for i, s in enumerate(strategies)}
    return (
        frame.assign(_o=frame["strategy"].map(order).fillna(len(order)))
        .sort_values(["dataset", "model", "_o", "budget"])
        .drop(columns="_o")
    )


def budget_labels(budgets: pd.Series, reference: list[bool]) -> pd.Series:
    """Budgets as integers, and none (--) for the reference predictors, which have no budget."""
    values = [None if ref else int(b) for b, ref in zip(budgets, reference, strict=True)]
    return pd.Series(values, index=budgets.index, dtype=object)


PAIRED_TABLE = {
    "model": "Model",
    "strategy": "Strategy",
    "budget": "$B$",
    "n_clusters": "Speakers",
    "mean_diff": "$\\Delta$JS",
    "diff_ci_low": "CI low",
    "diff_ci_high": "CI high",
    "rank_biserial": "$r_{rb}$",
    "cohens_dz": "$d_z$",
    "p_wilcoxon_holm": "$p_{W}$",
    "p_permutation_unclustered": "$p_{perm}^{utt}$",
    "p_permutation_holm": "$p_{perm}$",
    "significant": "Sig.",
}


def paired_tex(paired: pd.DataFrame | None, strategies: list[str], multi: bool, path: Path) -> Path:
    """Each strategy against the baseline on per-utterance JS: the difference with its interval,
    effect sizes and Holm-corrected p-values (the columns the stats stage wrote, in this order)."""
    clustered = paired is not None and "p_permutation_unclustered" in paired
    test = (
        "a sign-flip permutation test that flips whole speakers ($p_{perm}$; beside it $p_{perm}^{utt}$, the "
        "same test with every utterance its own cluster, uncorrected, to show what clustering changes)"
        if clustered
        else "a paired permutation test ($p_{perm}$)"
    )
    caption = (
        "Each strategy against the baseline on per-utterance JS distance (negative $\\Delta$ = closer to the "
        f"annotators; reference predictors left out): a Wilcoxon signed-rank test ($p_W$) and {test}, "
        "Holm-corrected within each dataset and model; significance (Sig.) is the permutation test's; "
        "effect sizes: matched-pairs rank-biserial $r_{rb}$"
        + (" and Cohen's $d_z$." if paired is not None and "cohens_dz" in paired else ".")
    )
    if paired is None or paired.empty:
        return note_table(path, "tab:paired", caption, "no paired comparison (one strategy only)")
    js = with_order(paired[(paired["metric"] == "js") & (paired["model"] != REFERENCE_MODEL)], strategies)
    keep = {**({"dataset": "Dataset"} if multi else {}), **{k: v for k, v in PAIRED_TABLE.items() if k in js}}
    if "n_clusters" in js:
        js = js.assign(n_clusters=js["n_clusters"].map(lambda v: None if pd.isna(v) else int(v)))
    return headed_table(js, path, keep, label="tab:paired", caption=caption)


def compute_matched_tex(matched: pd.DataFrame | None, path: Path) -> Path:
    """Compute-matched comparisons: per model and multiple of the baseline's tokens, each strategy at
    the budget whose total tokens come closest (the score stage's ``compute_matched`` table)."""
    caption = (
        "Compute-matched comparison: for each multiple of the baseline's total tokens per utterance, each "
        "strategy at the budget whose total tokens (prompt and generated, model and verifier) come closest, "
        "with the ratio it actually spent and its FLOPs estimate ($2 \\times$ parameters $\\times$ tokens)."
    )
    if matched is None or matched.empty:
        return note_table(path, "tab:compute-matched", caption, "not computed by this run")
    names = {
        "dataset": "Dataset",
        "model": "Model",
        "multiple": "Multiple",
        "strategy": "Strategy",
        "budget": "$B$",
        "tokens_total": "Total tok.",
        "ratio": "Ratio",
        "flops_est": "FLOPs (est.)",
    }
    if "dataset" in matched and matched["dataset"].nunique() < 2:
        names.pop("dataset")
    names = {k: v for k, v in names.items() if k in matched}
    table = matched.sort_values([c for c in ("dataset", "model", "multiple", "strategy") if c in matched])
    table = table.assign(budget=table["budget"].map(lambda v: None if pd.isna(v) else int(v)))
    flops = {"flops_est": lambda v: None if pd.isna(v) else f"{float(v):.3g}"}
    table = table.assign(**{c: table[c].map(f) for c, f in flops.items() if c in table})
    digits = {"Multiple": 1, "Total tok.": 0, "Ratio": 2}
    return headed_table(table, path, names, label="tab:compute-matched", digits=digits, caption=caption)


CONVENTION_COLUMNS = {
    "js_distance_nat": "JS dist.\\ (ln)",
    "js_divergence_bits": "JS div.\\ (bits)",
    "r2_utterance_mean": "$R^2_{\\mathrm{utt}}$",
    "r2_pooled": "$R^2_{\\mathrm{pooled}}$",
    "r2_label_mean": "$R^2_{\\mathrm{label}}$",
}
CELL_KEYS = ("dataset", "model", "strategy", "budget")


def _cells_first(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[bool], list[int]]:
    """Model rows (each strategy at its largest budget) then reference rows in italics, per dataset."""
    frame = at_largest_budget(frame)
    is_ref = frame["model"] == REFERENCE_MODEL
    frame = frame.assign(_r=is_ref.astype(int)).sort_values(["dataset", "_r", "model", "strategy"]).drop(columns="_r")
    italic = (frame["model"] == REFERENCE_MODEL).tolist()
    rules = [
        i
        for i in range(1, len(italic))
        if italic[i] != italic[i - 1] or frame["dataset"].iloc[i] != frame["dataset"].iloc[i - 1]
    ]
    return frame.reset_index(drop=True), italic, rules


def conventions_tex(conventions: pd.DataFrame | None, params: Mapping[str, Any], path: Path) -> Path:
    """The conventions table: per cell, JS as the natural-log distance and as the base-2 divergence,
    R² as the per-utterance mean, the pooled value and the per-label coefficient of determination.
    Takes the score stage's ``conventions`` table, long (``convention``, ``value``) or wide."""
    base = str((params.get("scoring") or {}).get("js_base", "e"))
    headline = "natural-log distance" if base == "e" else f"distance with logarithms to base {base}"
    caption = (
        "The same predictions under each convention of the literature, as ambiemo computes them (the "
        "peers' own code conventions, with their roundings and failure rules, are in Table~\\ref{tab:presets}). "
        "JS: the distance (square root of the divergence) with the natural logarithm "
        "(scipy's jensenshannon), and the divergence in bits; $R^2$: the squared correlation per utterance "
        "averaged over the utterances where it is defined, pooled over all (utterance, label) cells, and "
        "the coefficient of determination per label averaged over labels (scikit-learn's r2\\_score). The "
        f"headline of every other table is the JS {headline} (params scoring.js\\_base) and the pooled $R^2$."
    )
    if conventions is None or conventions.empty:
        return note_table(path, "tab:conventions", caption, "not computed by this run")
    keys = [k for k in CELL_KEYS if k in conventions]
    if "convention" in conventions and "value" in conventions:
        wide = conventions.pivot_table(index=keys, columns="convention", values="value", aggfunc="first").reset_index()
    else:
        wide = conventions
    cols = [c for c in CONVENTION_COLUMNS if c in wide]
    table, italic, rules = _cells_first(wide[[*keys, *cols]])
    multi = table["dataset"].nunique() > 1
    table["budget"] = budget_labels(table["budget"], italic)
    names = {**({"dataset": "Dataset"} if multi else {}), "model": "Model", "strategy": "Strategy", "budget": "$B$"}
    names.update({c: CONVENTION_COLUMNS[c] for c in cols})
    return headed_table(table, path, names, label="tab:conventions", caption=caption, italic=italic, rules=rules)


POWER_COLUMNS = {
    "model": "Model",
    "strategy": "Strategy",
    "budget": "$B$",
    "metric": "Metric",
    "n": "$n$",
    "n_clusters": "Speakers",
    "icc": "ICC",
    "design_effect": "Design eff.",
    "mde": "MDE",
    "gain": "Gain",
    "n_needed": "$n$ needed",
}


def power_tex(power: pd.DataFrame | None, params: Mapping[str, Any], path: Path) -> Path:
    """The power table: per dataset, model, strategy (at its largest budget) and metric, the
    minimum detectable gain and, for a stated gain, the utterances needed to detect it."""
    caption = (
        "Power of each comparison with the baseline: the smallest gain detectable (MDE, in the metric's "
        "units) at the stated power and two-sided $\\alpha$ given the observed per-utterance variance of "
        "the paired difference and its intra-speaker correlation (ICC, through the design effect), and, "
        "for a stated gain, the number of utterances needed to detect it. A null result below the MDE "
        "says nothing."
    )
    if power is None or power.empty or "mde" not in power:
        return note_table(path, "tab:power", caption, "not computed by this run")
    table = at_largest_budget(power[power["model"] != REFERENCE_MODEL])
    table = table.sort_values(["dataset", "model", "strategy", "metric"]).reset_index(drop=True)
    multi = table["dataset"].nunique() > 1
    cols = {**({"dataset": "Dataset"} if multi else {}), **{k: v for k, v in POWER_COLUMNS.items() if k in table}}
    table = table.assign(
        **{
            c: table[c].map(lambda v: None if pd.isna(v) else int(v))
            for c in ("budget", "n", "n_clusters", "n_needed")
            if c in table
        }
    )
    first = table.get("power")
    if first is not None and first.notna().any():
        caption += f" Power {format_value(100 * float(first.dropna().iloc[0]), 0)}\\%."
    digits = {cols[c]: d for c, d in {"icc": 2, "design_effect": 2, "mde": 3, "gain": 3}.items() if c in cols}
    return headed_table(table, path, cols, label="tab:power", digits=digits, caption=caption)
