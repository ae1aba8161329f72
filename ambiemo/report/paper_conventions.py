"""The manuscript's inputs for the conventions, the calibration yardstick and the annotator counts
(called by ``ambiemo.report.paper.paper_outputs``):

    tab_presets.tex      each cell under the peers' own conventions (aer-llm/*, scaling-ambiguity-ser/*),
                         beside ambiemo's headline JS, with the repositories and commits in the caption
    tab_calibration.tex  per cell: the fitted temperature and prior weight, JS raw and calibrated, and
                         the share of the gap to the human ceiling that calibration closes
    tab_annotators.tex   per corpus: raters, from how many annotators the ranking is stable, Kendall's
                         τ and the share of baseline comparisons kept at a few k
    annotators.tex       the sentences the results quote: per corpus, the k from which the ranking is
                         stable and whether the main comparisons survive a redraw of annotators

A table the run did not write becomes a one-line note saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.core.config import settings
from ambiemo.report.latex import headed_table, latex_escape, latex_table, note_table
from ambiemo.scoring.presets import PRESETS
from ambiemo.stats.annotators import TAU_STABLE, stable_from

PRESET_COLUMNS = {
    "aer-llm/js": "JS",
    "aer-llm/bc": "BC",
    "aer-llm/r2": "$R^2$",
    "aer-llm/ece": "ECE",
    "aer-llm/accuracy": "Acc.",
    "aer-llm/f1": "W-F1",
    "scaling-ambiguity-ser/js": "JSD$_2$",
    "scaling-ambiguity-ser/bc": "BC$^{S}$",  # a header of its own: the two presets stand side by side
    "scaling-ambiguity-ser/r2": "$R^2_{lab}$",
    "scaling-ambiguity-ser/ece": "ECE$_{10}$",
}


PRESETS_CAPTION = (
    "The same answers under the peers' own code conventions, reproduced from the facts of that code "
    "(roundings, epsilons, bin edges, tie rules, failure handling; docs/conventions.md). Left: AER-LLM "
    "(truth rounded to two decimals, a failed answer as one-hot neutral, KL terms rounded to four "
    "decimals, five ECE bins $(l, u]$, ties to the first label); right: scaling-ambiguity-SER (JS "
    "divergence in bits, per-label $R^2$, ten ECE bins, failures dropped). Sources: {sources}."
)


def _largest_budget(frame: pd.DataFrame) -> pd.DataFrame:
    top = frame.groupby(["dataset", "model", "strategy"])["budget"].transform("max")
    return frame[frame["budget"] == top]


def presets_tex(conventions: pd.DataFrame | None, path: Path) -> Path:
    sources = "; ".join(f"{name}: \\texttt{{{latex_escape(src.cite())}}}" for name, (src, _) in PRESETS.items())
    caption = PRESETS_CAPTION.format(sources=sources)
    if conventions is None or conventions.empty:
        return note_table(path, "tab:presets", caption, "not computed by this run")
    rows = _largest_budget(conventions[conventions["convention"].isin(PRESET_COLUMNS)])
    wide = rows.pivot_table(
        index=["dataset", "model", "strategy", "budget"], columns="convention", values="value", aggfunc="first"
    ).reset_index()
    cols = [c for c in PRESET_COLUMNS if c in wide]
    multi = wide["dataset"].nunique() > 1
    keep = {**({"dataset": "Dataset"} if multi else {}), "model": "Model", "strategy": "Strategy"}
    keep.update({c: PRESET_COLUMNS[c] for c in cols})
    return headed_table(wide, path, keep, label="tab:presets", caption=caption)


def calibration_tex(calibration: pd.DataFrame | None, path: Path) -> Path:
    caption = (
        "Calibration as a yardstick: each cell's answers reshaped by $q^{1/T}$ mixed with the label prior "
        "(weight $w$), fitted on the other speakers only (speaker folds, seeded), to minimise the JS "
        "distance. Gap closed: the share of the distance between the raw answers and the human ceiling "
        "that this reshaping removes. A strategy whose gain over the baseline shrinks after calibration "
        "gained by flattening its answer."
    )
    if calibration is None or calibration.empty:
        return note_table(path, "tab:calibration", caption, "not computed by this run")
    t = _largest_budget(calibration[(calibration["ambiguity"] == "all")])
    t = t[t["method"] == "temperature+prior"].sort_values(["dataset", "model", "strategy"])
    multi = t["dataset"].nunique() > 1
    keep = {
        **({"dataset": "Dataset"} if multi else {}),
        "model": "Model",
        "strategy": "Strategy",
        "T": "$T$",
        "w": "$w$",
        "js_raw": "JS raw",
        "js_calibrated": "JS cal.",
        "gap_closed": "Gap closed",
    }
    return headed_table(t, path, keep, label="tab:calibration", caption=caption)


def annotator_summary(annotators: pd.DataFrame, threshold: float = TAU_STABLE) -> pd.DataFrame:
    """Per corpus: its largest rater count, the k from which τ stays ≥ ``threshold``, and τ and the
    share of comparisons kept (mean and interval) with one rater and with one rater fewer than all."""
    stable = stable_from(annotators, threshold)
    rows = []
    for dataset, d in annotators.groupby("dataset", sort=True):
        max_k = int(d["k"].max())
        row: dict[str, Any] = {"dataset": dataset, "max_k": max_k, "stable_from": stable.get(str(dataset))}
        for k, tag in ((1, "k1"), (max(max_k - 1, 1), "kminus1")):
            for q in ("tau", "comparisons_agree"):
                hit = d[(d["quantity"] == q) & (d["k"] == k)]
                row[f"{q}_{tag}"] = float(hit["mean"].iloc[0]) if len(hit) else float("nan")
                row[f"{q}_{tag}_low"] = float(hit["ci_low"].iloc[0]) if len(hit) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def annotators_tex(annotators: pd.DataFrame | None, params: Mapping[str, Any], path: Path, text: Path) -> list[Path]:
    threshold = float(settings(dict(params), "stats")["annotator_tau_stable"])
    caption = (
        "Annotator-count sensitivity: $k$ raters redrawn per utterance (seeded, repeated). Stable from: the "
        f"smallest $k$ from which Kendall's $\\tau$ of the model $\\times$ strategy ranking with the all-raters "
        f"ranking stays at or above {threshold:g}; kept: the share of comparisons with the baseline whose sign "
        "survives the redraw (mean over redraws)."
    )
    if annotators is None or annotators.empty:
        text.write_text("No corpus of this run has raters to redraw.\n")
        return [note_table(path, "tab:annotators", caption, "not computed by this run"), text]
    s = annotator_summary(annotators, threshold)
    sentences = []
    for _, r in s.iterrows():
        where = "never within its raters" if pd.isna(r["stable_from"]) else f"from $k={int(r['stable_from'])}$"
        kept = r["comparisons_agree_kminus1"]
        survive = (
            "survive"
            if kept == 1.0
            else ("do not all survive" if pd.notna(kept) else "cannot be checked (one comparison or none)")
        )
        sentences.append(
            f"On \\texttt{{{latex_escape(str(r['dataset']))}}} (up to {int(r['max_k'])} raters per utterance) "
            f"the ranking is stable {where}; the main comparisons {survive} a redraw with one rater fewer."
        )
    text.write_text(" ".join(sentences) + "\n")
    keep = {
        "dataset": "Corpus",
        "max_k": "Raters",
        "stable_from": "Stable from $k$",
        "tau_k1": "$\\tau$ ($k{=}1$)",
        "tau_kminus1": "$\\tau$ (all $-1$)",
        "comparisons_agree_k1": "Kept ($k{=}1$)",
        "comparisons_agree_kminus1": "Kept (all $-1$)",
    }
    table = latex_table(
        s[list(keep)].rename(columns=keep),
        path,
        label="tab:annotators",
        digits=2,
        escape_headers=False,
        caption=caption,
    )
    return [table, text]


def yardstick_outputs(
    tables: Mapping[str, pd.DataFrame | None], stats: Mapping[str, pd.DataFrame | None], params, out: Path
) -> list[Path]:
    """Every file of the module docstring, into ``out``."""
    return [
        presets_tex(tables.get("conventions"), out / "tab_presets.tex"),
        calibration_tex(tables.get("calibration"), out / "tab_calibration.tex"),
        *annotators_tex(stats.get("annotators"), params, out / "tab_annotators.tex", out / "annotators.tex"),
    ]
