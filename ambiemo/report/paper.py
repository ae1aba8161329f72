"""The manuscript's generated inputs: every table it ``\\input``s and every number its text quotes.

``paper_outputs`` writes into ``paper/generated/``:

    macros.tex          \\newcommand for each number quoted in the text (names listed in MACROS)
    tab_datasets.tex    the corpora: utterances, speakers, raters, unanimity, entropy, bins
    tab_main.tex        every metric per model × strategy (each strategy at its largest budget), with the
                        reference predictors as rows below a rule, in italics
    tab_paired.tex      each strategy against the baseline: mean JS difference, effect size, Holm p
    tab_mixed.tex       the mixed model of JS distance on capacity × strategy × entropy
    tab_compute.tex     compute per utterance, per model × strategy × budget (total tokens and the FLOPs
                        estimate where the compute table has them)
    tab_compute_matched.tex  each strategy at the budget closest to a multiple of the baseline's tokens
    tab_conventions.tex JS and R² under each convention of the literature, per model × strategy
    tab_power.tex       the minimum detectable gain at 80% power and the utterances a stated gain needs
    tab_presets.tex, tab_calibration.tex, tab_annotators.tex, annotators.tex
                        the presets, calibration and annotator tables: ``ambiemo.report.paper_conventions``

Inputs are the pipeline's own tables (``results/summary/*``, ``results/stats/*``, read by
``ambiemo.report.latex.read_result``: parquet, or CSV from older runs), so the paper can be rebuilt from
them without rerunning inference. A table the run did not write becomes a one-line note saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.report.latex import format_value, headed_table, latex_escape, latex_table, write_macros
from ambiemo.report.paper_tables import (
    budget_labels,
    compute_matched_tex,
    conventions_tex,
    paired_tex,
    power_tex,
    with_order,
)
from ambiemo.report.style import REFERENCES
from ambiemo.scoring import at_largest_budget, overall
from ambiemo.scoring.references import MODEL as REFERENCE_MODEL  # the model name of the reference rows
from ambiemo.stats.bootstrap import stats_params

# The profile note printed in the abstract and the results; a demo build must never read as a finding.
PROFILE_NOTES = {
    "demo": (
        "These numbers come from the offline demo profile: synthetic speech with simulated annotators, "
        "a 135M-parameter cascade and a randomly initialised tiny ALM. They demonstrate the method "
        "and the pipeline, not the behaviour of real ALMs."
    ),
    "paper": "These numbers come from the study profile: the real corpora and the eight ALMs.",
}

MACROS = (
    "ProfileName",
    "ProfileNote",
    "NumDatasets",
    "NumModels",
    "NumStrategies",
    "NumUtterances",
    "LargestModel",
    "BaselineJS",
    "BestStrategy",
    "BestJS",
    "BaselineParseFail",
    "NumComparisons",
    "NumSignificant",
    "Alpha",
    "InteractionTerm",
    "InteractionCoef",
    "InteractionCILow",
    "InteractionCIHigh",
    "InteractionP",
    "CILevel",
    "BootstrapResamples",
    "JSLog",
    "ParseFailureRule",
    "UniformJS",
    "LabelPriorJS",
    "HardOracleJS",
    "HumanCeilingJS",
    "BaselineVsUniform",
)

# Settings the text states, written from params so that the text follows them.
JS_LOG = {"e": "natural-log", "2": "base-2"}
PARSE_FAILURE_RULES = {
    "uniform": "contributes a uniform distribution (wrong for accuracy)",
    "nan": "is left out of the distributional metrics (and is wrong for accuracy)",
}


def setting_macros(params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings quoted in the manuscript: CI level, bootstrap resamples, JS log base, parse-failure rule."""
    scoring = params.get("scoring") or {}
    base, rule = str(scoring.get("js_base", "e")), str((params.get("parsing") or {}).get("on_failure", "uniform"))
    if base not in JS_LOG or rule not in PARSE_FAILURE_RULES:
        raise ValueError(f"paper: no wording for scoring.js_base={base!r} or parsing.on_failure={rule!r}")
    return {
        "CILevel": format_value(100 * float(scoring.get("ci_level", 0.95)), 0),
        "BootstrapResamples": f"{int(scoring.get('bootstrap_resamples', 1000)):,}",
        "JSLog": JS_LOG[base],
        "ParseFailureRule": PARSE_FAILURE_RULES[rule],
    }


MAIN_COLUMNS = {
    "model": "Model",
    "strategy": "Strategy",
    "budget": "$B$",
    "js": "JS$\\downarrow$",
    "bc": "BC$\\uparrow$",
    "r2": "$R^2\\uparrow$",
    "ece": "ECE$\\downarrow$",
    "accuracy": "Acc$\\uparrow$",
    "f1_weighted": "F1$\\uparrow$",
    "uar": "UAR$\\uparrow$",
    "parse_failure_rate": "Parse fail",
}


def dataset_table(manifests: Mapping[str, Any]) -> pd.DataFrame:
    rows = []
    for name, m in manifests.items():
        df = m.df
        row = {
            "Dataset": name,
            "Labels": len(m.labels),
            "Utterances": len(df),
            "Speakers": df["speaker"].replace("", np.nan).nunique(),
            "Raters/utt.": df["n_raters"].mean(),
            "Unanimous": (df["entropy_bits"] <= 1e-9).mean(),
            "Tied majority": df["majority_tie"].mean(),
            "Entropy (bits)": df["entropy_bits"].mean(),
        }
        for level in m.ambiguity_order():
            row[level.capitalize()] = int((df["ambiguity"] == level).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def headline_numbers(
    summary: pd.DataFrame,
    paired: pd.DataFrame | None,
    mixed: pd.DataFrame | None,
    params: Mapping[str, Any],
    manifests: Mapping[str, Any],
) -> dict[str, Any]:
    """The numbers the text quotes, computed from the pipeline's tables (never typed by hand)."""
    run = params["run"]
    rows = overall(summary)
    dataset = run["datasets"][0]
    refs = rows[(rows["dataset"] == dataset) & (rows["model"] == REFERENCE_MODEL)].set_index("strategy")
    first = rows[(rows["dataset"] == dataset) & (rows["model"] != REFERENCE_MODEL)]
    sizes = first.drop_duplicates("model").set_index("model")["params_b"].astype(float).dropna()
    # The largest model whose capacity is known (API models have none), else the first model of the run.
    largest = sizes.idxmax() if len(sizes) else (first["model"].iloc[0] if len(first) else run["models"][0])
    cell = at_largest_budget(first[first["model"] == largest]) if len(first) else first
    st = stats_params(params)
    base = cell[cell["strategy"] == st["baseline"]]
    scored = cell.dropna(subset=["js"])
    best = scored.loc[scored["js"].idxmin()] if len(scored) else None
    alpha = float(st["alpha"])
    values: dict[str, Any] = {
        "ProfileName": run["profile"],
        "ProfileNote": PROFILE_NOTES.get(run["profile"], ""),
        "NumDatasets": len(run["datasets"]),
        "NumModels": len(run["models"]),
        "NumStrategies": len(run["strategies"]),
        "NumUtterances": int(sum(len(m.df) for m in manifests.values())),
        "LargestModel": largest,
        "BaselineJS": float(base["js"].iloc[0]) if len(base) else float("nan"),
        "BestStrategy": f"{best['strategy']} (B={int(best['budget'])})" if best is not None else "n/a",
        "BestJS": float(best["js"]) if best is not None else float("nan"),
        "BaselineParseFail": 100 * float(base["parse_failure_rate"].iloc[0]) if len(base) else float("nan"),
        "Alpha": alpha,
    }
    values.update(reference_numbers(refs, values["BaselineJS"]))
    js_tests = paired[paired["metric"] == "js"] if paired is not None and len(paired) else pd.DataFrame()
    values["NumComparisons"] = len(js_tests)
    values["NumSignificant"] = int(js_tests["significant"].astype(bool).sum()) if len(js_tests) else 0
    values.update(
        InteractionTerm="(not fitted)",
        InteractionCoef=None,
        InteractionCILow=None,
        InteractionCIHigh=None,
        InteractionP=None,
    )
    if mixed is not None and len(mixed) and "p" in mixed:
        fitted = mixed.dropna(subset=["estimate"])
        # The term the study asks about: capacity x entropy where capacity varies, else a strategy x entropy term.
        terms = fitted["term"].astype(str)
        for hits in (fitted[terms == "log10_capacity × entropy"], fitted[terms.str.endswith(" × entropy")]):
            if len(hits):
                row = hits.iloc[0]
                values.update(
                    InteractionTerm=str(row["term"]),
                    InteractionCoef=row["estimate"],
                    InteractionCILow=row["ci_low"],
                    InteractionCIHigh=row["ci_high"],
                    InteractionP=row["p"],
                )
                break
    return values


def reference_numbers(refs: pd.DataFrame, baseline_js: float) -> dict[str, Any]:
    """The references' mean JS (first dataset, rows indexed by strategy) and how the baseline
    compares with the uniform distribution, for the text; missing references are ``--``."""

    def js(name: str) -> float:
        return float(refs.loc[name, "js"]) if name in refs.index else float("nan")

    uniform = js("uniform")
    if np.isfinite(uniform) and np.isfinite(baseline_js):
        verdict = "closer to the annotators than" if baseline_js < uniform else "no closer to the annotators than"
    else:
        verdict = "not compared with"
    return {
        "UniformJS": uniform,
        "LabelPriorJS": js("label-prior"),
        "HardOracleJS": js("hard-oracle"),
        "HumanCeilingJS": js("human-loo") if "human-loo" in refs.index else js("human-loo-counts"),
        "BaselineVsUniform": verdict,
    }


def main_table(summary: pd.DataFrame, strategies: list[str]) -> tuple[pd.DataFrame, list[bool], list[int]]:
    """The main table's rows: per dataset, every model × strategy at its largest budget, then the
    reference predictors (in ``style.REFERENCES`` order, budget shown as --). Returns the frame,
    the italic flag per row (the references) and the row positions that get a rule above them."""
    rows = at_largest_budget(overall(summary))
    parts, italic, rules = [], [], []
    for _, d in rows.groupby("dataset", sort=True):
        models = with_order(d[d["model"] != REFERENCE_MODEL], strategies)
        refs = d[d["model"] == REFERENCE_MODEL]
        refs = refs.assign(_o=refs["strategy"].map({r: i for i, r in enumerate(REFERENCES)}).fillna(len(REFERENCES)))
        refs = refs.sort_values(["_o", "strategy"]).drop(columns="_o")
        rules.append(sum(len(p) for p in parts))
        parts.append(models)
        italic += [False] * len(models)
        if len(refs):
            rules.append(sum(len(p) for p in parts))
            parts.append(refs)
            italic += [True] * len(refs)
    main = pd.concat(parts, ignore_index=True) if parts else rows
    main["budget"] = budget_labels(main["budget"], italic)
    return main, italic, rules


def _main_caption(params: Mapping[str, Any]) -> str:
    base = str((params.get("scoring") or {}).get("js_base", "e"))
    policy = str((params.get("parsing") or {}).get("on_failure", "uniform"))
    log = "the natural logarithm" if base == "e" else f"logarithms to base {base}"
    failed = (
        "count as a uniform distribution and as wrong for accuracy"
        if policy == "uniform"
        else "are left out of the distributional metrics and count as wrong for accuracy"
    )
    return (
        f"Every metric per model and strategy (each at its largest budget $B$). JS distance uses {log} "
        "(params scoring.js\\_base; Table~\\ref{tab:conventions} gives the base-2 divergence beside it); "
        "$R^2$ is the pooled squared correlation over all (utterance, label) cells. "
        f"Parse failures {failed}. In italics below each rule, the reference predictors: uniform, "
        "the label prior (leave one speaker out), the hard oracle (one-hot majority vote) and the human "
        "ceilings (one annotator against the others); a ceiling defines only JS, BC, TV and Brier (--)."
    )


def paper_outputs(
    manifests: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    stats: Mapping[str, pd.DataFrame],
    params: Mapping[str, Any],
    out_dir: str | Path,
) -> list[Path]:
    """Write every generated input of the manuscript into ``out_dir``; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    strategies = list(params["run"]["strategies"])
    summary = overall(tables["summary"])
    written = []

    datasets = dataset_table(manifests)
    written.append(
        latex_table(
            datasets,
            out / "tab_datasets.tex",
            label="tab:datasets",
            digits=2,
            caption="The corpora of this run: annotators' votes and their ambiguity.",
        )
    )

    main, italic, rules = main_table(tables["summary"], strategies)
    cols = [c for c in MAIN_COLUMNS if c in main]
    metric_cols = [c for c in cols if c not in ("model", "strategy", "budget")]
    main[metric_cols] = main[metric_cols].astype(float)  # a CSV column of 0s and 1s reads back as integers
    multi = main["dataset"].nunique() > 1
    main_cols = (["dataset"] if multi else []) + cols
    written.append(
        latex_table(
            main[main_cols].rename(columns={**MAIN_COLUMNS, "dataset": "Dataset"}),
            out / "tab_main.tex",
            label="tab:main",
            digits=3,
            escape_headers=False,
            caption=_main_caption(params),
            italic=italic,
            rules=rules,
        )
    )

    paired = stats.get("paired")
    written.append(paired_tex(paired, strategies, multi, out / "tab_paired.tex"))

    mixed = stats.get("mixed_model")
    if mixed is not None and len(mixed):
        keep = {"term": "Term", "estimate": "Estimate", "ci_low": "CI low", "ci_high": "CI high", "p": "$p$"}
        table = mixed[list(keep)].rename(columns=keep)
        note = latex_escape(mixed["note"].dropna().iloc[0]) if mixed["note"].notna().any() else None
    else:
        table, note = pd.DataFrame({"Note": ["not fitted"]}), None
    written.append(
        latex_table(
            table,
            out / "tab_mixed.tex",
            label="tab:mixed",
            digits=3,
            notes=note,
            escape_headers=False,
            caption="Linear mixed model of per-utterance JS distance on log capacity, "
            "strategy and vote entropy (centred), random intercept per utterance.",
        )
    )

    compute = with_order(tables["compute"], strategies)
    compute = compute[compute["model"] != REFERENCE_MODEL]
    keep = {
        **({"dataset": "Dataset"} if multi else {}),
        "model": "Model",
        "strategy": "Strategy",
        "budget": "$B$",
        "model_calls": "Calls",
        "verifier_calls": "Verifier calls",
        "prompt_tokens": "Prompt tok.",
        "gen_tokens": "Gen. tok.",
        "wall_s": "Seconds",
        "tokens_total": "Total tok.",
        "flops_est": "FLOPs (est.)",
    }
    keep = {k: v for k, v in keep.items() if k in compute}
    written.append(
        headed_table(
            compute,
            out / "tab_compute.tex",
            keep,
            label="tab:compute",
            digits=2,
            caption="Compute per utterance, per strategy and budget: model calls and verifier calls, the "
            "model's own prompt and generated tokens and seconds; where the run records them, the total "
            "tokens processed (prompt and generated, model and verifier) and an estimate of the FLOPs "
            "($2 \\times$ parameters $\\times$ tokens, each of model and verifier with its own size).",
        )
    )
    written.append(compute_matched_tex(tables.get("compute_matched"), out / "tab_compute_matched.tex"))
    written.append(conventions_tex(tables.get("conventions"), params, out / "tab_conventions.tex"))
    written.append(power_tex(stats.get("power"), params, out / "tab_power.tex"))
    # the peers' presets, the calibration yardstick, annotator counts
    from ambiemo.report.paper_conventions import yardstick_outputs

    written += yardstick_outputs(tables, stats, params, out)

    values = {**headline_numbers(summary, paired, mixed, params, manifests), **setting_macros(params)}
    missing = set(MACROS) - set(values)
    if missing:  # the manuscript uses every name in MACROS
        raise KeyError(f"paper macros not computed: {sorted(missing)}")
    written.append(
        write_macros({k: values[k] for k in MACROS}, out / "macros.tex", digits={"BaselineParseFail": 1, "Alpha": 2})
    )
    return written


__all__ = [
    "MACROS",
    "dataset_table",
    "format_value",
    "headline_numbers",
    "main_table",
    "paper_outputs",
]
