"""The paper's generated tables: reference predictors beside the models, the conventions and power
tables, and the numbers the text quotes about the references."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import r2_score
from synthetic import PARAMS, cells, manifest_df

from ambiemo import scoring
from ambiemo.report import paper, paper_tables
from ambiemo.scoring import literature as L
from ambiemo.stats import power

STRATEGIES = ["baseline", "cot", "bon"]
RUN_PARAMS = {
    **PARAMS,
    "run": {"profile": "demo", "datasets": ["demo"], "models": ["small", "large"], "strategies": STRATEGIES},
    "parsing": {"on_failure": "uniform"},
}


class _Manifest:
    def __init__(self, df):
        self.df, self.labels = df, ["neutral", "happy", "angry", "sad"]

    def ambiguity_order(self):
        return ["clear", "low", "medium", "high"]


def reference_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """Reference predictors' summary rows as the score stage writes them (team interface 3),
    from their definitions applied to the synthetic votes (uniform and hard oracle by hand)."""
    utt = scores.drop_duplicates("utt_id")
    labels = ["neutral", "happy", "angry", "sad"]
    p = utt[[f"true_{x}" for x in labels]].to_numpy()
    uniform = np.full_like(p, 1 / len(labels))
    oracle = np.eye(len(labels))[p.argmax(axis=1)]
    rows = []
    for name, q in (("uniform", uniform), ("hard-oracle", oracle)):
        rows.append({"strategy": name, "js": float(np.mean([jensenshannon(a, b) for a, b in zip(p, q, strict=True)]))})
    rows[1]["accuracy"] = 1.0  # the oracle is right by construction: it must not be bolded as the best
    rows.append({"strategy": "human-loo", "js": 0.05, "accuracy": np.nan})
    return pd.DataFrame(rows).assign(dataset="demo", model="reference", budget=1, ambiguity="all", params_b=np.nan)


@pytest.fixture(scope="module")
def run():
    man = manifest_df(n=24, seed=4)
    scores = scoring.score_predictions(man, cells(man, strategies=STRATEGIES), PARAMS)
    summary = scoring.summarise(scores, params=PARAMS, per_bin=False)
    return {"manifest": man, "scores": scores, "summary": pd.concat([summary, reference_rows(scores)])}


def body_rows(text: str) -> list[str]:
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule")[0]
    return [line for line in body.splitlines() if line.strip()]


def test_main_table_has_the_references_below_a_rule_in_italics(run, tmp_path):
    main, italic, rules = paper.main_table(run["summary"], STRATEGIES)
    assert main["model"].tolist()[-3:] == ["reference"] * 3
    assert main["strategy"].tolist()[-3:] == ["uniform", "hard-oracle", "human-loo"]  # style.REFERENCES order
    assert italic == [False] * 6 + [True] * 3 and rules == [0, 6]
    out = paper.paper_outputs({"demo": _Manifest(run["manifest"])}, _tables(run), {}, RUN_PARAMS, tmp_path)
    text = (tmp_path / "tab_main.tex").read_text()
    rows = body_rows(text)
    assert rows[6] == "\\midrule"
    assert rows[0].startswith("large & baseline & 1 & ")  # a budget is an integer
    oracle = next(r for r in rows if "hard-oracle" in r)
    assert oracle.startswith("\\textit{reference} & \\textit{hard-oracle} & \\textit{--}")
    assert "\\textbf" not in oracle  # a yardstick never wins a column
    human = next(r for r in rows if "human-loo" in r)
    assert "\\textit{0.050}" in human and human.count("\\textit{--}") >= 3  # undefined metrics are --
    uniform_js = reference_rows(run["scores"]).set_index("strategy").loc["uniform", "js"]
    assert f"\\textit{{{uniform_js:.3f}}}" in next(r for r in rows if "uniform" in r)
    assert "natural logarithm" in text and "pooled" in text  # the caption names the headline conventions
    assert {p.name for p in out} >= {"tab_conventions.tex", "tab_power.tex", "macros.tex"}


def _tables(run):
    return {"summary": run["summary"], "compute": scoring.compute_table(run["scores"])}


def test_reference_macros_and_the_baseline_verdict(run, tmp_path):
    paper.paper_outputs({"demo": _Manifest(run["manifest"])}, _tables(run), {}, RUN_PARAMS, tmp_path)
    macros = dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}", (tmp_path / "macros.tex").read_text()))
    refs = reference_rows(run["scores"]).set_index("strategy")["js"]
    assert macros["UniformJS"] == f"{refs['uniform']:.3f}" and macros["HardOracleJS"] == f"{refs['hard-oracle']:.3f}"
    assert macros["LabelPriorJS"] == "--"  # not in this run: said, not guessed
    assert macros["LargestModel"] == "large"  # the reference rows are not a model
    s = run["summary"]
    base = s[(s["model"] == "large") & (s["strategy"] == "baseline")]["js"].iloc[0]
    want = "closer to the annotators than" if base < refs["uniform"] else "no closer to the annotators than"
    assert macros["BaselineVsUniform"] == want
    worse = paper.reference_numbers(pd.DataFrame({"js": [0.3]}, index=["uniform"]), 0.4)
    assert worse["BaselineVsUniform"] == "no closer to the annotators than"


def test_conventions_table_places_each_convention_in_its_column(run, tmp_path):
    s = run["scores"]
    labels = ["neutral", "happy", "angry", "sad"]
    rows = []
    for (model, strategy, budget), g in s.groupby(["model", "strategy", "budget"]):
        p, q = g[[f"true_{x}" for x in labels]].to_numpy(), g[[f"p_{x}" for x in labels]].to_numpy()
        t = L.conventions_table(p, q)
        rows.append(t.assign(dataset="demo", model=model, strategy=strategy, budget=budget))
        # The independent references: scipy's JS (base e and base 2, squared) and sklearn's r2_score.
        row = t.set_index("convention")["value"]
        assert row["js_distance_nat"] == pytest.approx(
            np.mean([jensenshannon(a, b) for a, b in zip(p, q, strict=True)])
        )
        assert row["js_divergence_bits"] == pytest.approx(
            np.mean([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q, strict=True)])
        )
        assert row["r2_label_mean"] == pytest.approx(r2_score(p, q))
    long = pd.concat(rows, ignore_index=True)
    path = paper_tables.conventions_tex(long, {"scoring": {"js_base": 2}}, tmp_path / "c.tex")
    text = path.read_text()
    assert "JS dist.\\ (ln) & JS div.\\ (bits) & $R^2_{\\mathrm{utt}}$" in text
    assert "base 2" in text  # the caption follows scoring.js_base
    want = long[(long["model"] == "large") & (long["strategy"] == "cot")].set_index("convention")["value"]
    line = next(r for r in body_rows(text) if r.startswith("large & cot"))
    cells = [c.strip(" \\") for c in line.split("&")]
    expected = [f"{want[c]:.3f}" for c in paper_tables.CONVENTION_COLUMNS]
    assert cells[3:] == expected
    # A run without the table says so instead of leaving the paper's reference dangling.
    missing = paper_tables.conventions_tex(None, {}, tmp_path / "n.tex").read_text()
    assert "not computed by this run" in missing and "\\label{tab:conventions}" in missing


def test_power_table_shows_the_minimum_detectable_gain(run, tmp_path):
    table = power.power_table(run["scores"], ["js"], gains={"js": 0.05})
    path = paper_tables.power_tex(table, {}, tmp_path / "p.tex")
    text = path.read_text()
    row = table[(table["model"] == "small") & (table["strategy"] == "cot")].iloc[0]
    line = next(r for r in body_rows(text) if r.startswith("small & cot"))
    cells = [c.strip(" \\") for c in line.split("&")]
    assert cells[2] == "1" and cells[4:6] == [str(int(row["n"])), str(int(row["n_clusters"]))]
    assert cells[6] == f"{row['icc']:.2f}" and cells[7] == f"{row['design_effect']:.2f}"
    assert f"{row['mde']:.3f}" in cells and str(int(row["n_needed"])) == cells[-1]
    assert "Power 80\\%" in text
    assert math.isfinite(row["mde"]) and row["mde"] > 0
    assert "not computed by this run" in paper_tables.power_tex(pd.DataFrame(), {}, tmp_path / "q.tex").read_text()


def test_paired_table_shows_the_clustered_test_beside_the_unclustered_one(tmp_path):
    paired = pd.DataFrame(
        {
            "dataset": "demo",
            "model": ["m", "reference"],
            "strategy": ["cot", "uniform"],
            "budget": [1, 1],
            "metric": "js",
            "n_clusters": [8.0, 8.0],
            "mean_diff": [-0.05, 0.1],
            "diff_ci_low": [-0.08, 0.0],
            "diff_ci_high": [-0.02, 0.2],
            "rank_biserial": [-0.6, 0.0],
            "cohens_dz": [-0.9, 0.0],
            "p_wilcoxon_holm": [0.01, 1.0],
            "p_permutation_unclustered": [0.004, 1.0],
            "p_permutation_holm": [0.03, 1.0],
            "significant": [True, False],
        }
    )
    text = paper_tables.paired_tex(paired, ["baseline", "cot"], False, tmp_path / "p.tex").read_text()
    assert "flips whole speakers" in text and "Cohen's $d_z$" in text
    rows = body_rows(text)
    assert rows == ["m & cot & 1 & 8 & -0.050 & -0.080 & -0.020 & -0.600 & -0.900 & 0.010 & 0.004 & 0.030 & yes \\\\"]
    old = paired.drop(columns=["p_permutation_unclustered", "cohens_dz", "n_clusters"])
    text = paper_tables.paired_tex(old, ["baseline", "cot"], False, tmp_path / "o.tex").read_text()
    assert "flips whole speakers" not in text and body_rows(text)[0].startswith("m & cot & 1 & -0.050")


def test_compute_matched_table(tmp_path):
    matched = pd.DataFrame(
        {
            "dataset": "demo",
            "model": "m",
            "multiple": [2.0, 2.0],
            "target_tokens": [400.0, 400.0],
            "strategy": ["w-bon", "alm-v"],
            "budget": [4, 2],
            "tokens_total": [380.0, 452.0],
            "ratio": [1.9, 2.26],
            "flops_est": [1.2e11, 3.4e11],
        }
    )
    rows = body_rows(paper_tables.compute_matched_tex(matched, tmp_path / "c.tex").read_text())
    assert rows == [
        "m & 2.0 & alm-v & 2 & 452 & 2.26 & 3.4e+11 \\\\",
        "m & 2.0 & w-bon & 4 & 380 & 1.90 & 1.2e+11 \\\\",
    ]
    assert "not computed by this run" in paper_tables.compute_matched_tex(None, tmp_path / "n.tex").read_text()
