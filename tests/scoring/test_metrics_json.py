"""``summary/metrics.json``, what ``dvc metrics show``/``diff`` print: the headline only (per dataset
and model the baseline and the best strategy on JS, beside the uniform and human-ceiling
references), a bounded number of leaves per dataset × model, and the right numbers."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from synthetic import LABELS, PARAMS, cells, manifest_df

from ambiemo import scoring
from ambiemo.scoring.references import reference_predictions


def leaves(doc) -> list:
    return [x for v in doc.values() for x in leaves(v)] if isinstance(doc, dict) else [doc]


def row(dataset, model, strategy, budget, js, r2=0.5, ambiguity="all"):
    return {
        "dataset": dataset,
        "model": model,
        "strategy": strategy,
        "budget": budget,
        "ambiguity": ambiguity,
        "js": js,
        "r2": r2,
    }


def test_the_headline_of_a_hand_made_summary() -> None:
    summary = pd.DataFrame(
        [
            row("d", "m", "baseline", 1, 0.30),
            row("d", "m", "bon", 2, 0.10),  # best of all, but not bon's largest budget: not its headline
            row("d", "m", "bon", 4, 0.26, r2=0.9),
            row("d", "m", "w-bon", 4, 0.22),
            row("d", "m", "self-consistency", 8, 0.22),  # a tie with w-bon@4: the first by name wins
            row("d", "m", "w-bon", 4, 0.01, ambiguity="high"),  # a bin, not the overall row
            row("d", "api", "baseline", 1, 0.40),
            row("d", "api", "bon", 4, float("nan")),  # nothing parsed: cannot be best
            row("d", "reference", "uniform", 1, 0.35),
            row("d", "reference", "label-prior", 1, 0.33),
            row("d", "reference", "human-loo", 1, 0.12),
            row("d", "reference", "human-loo-counts", 1, 0.13),
            row("e", "m", "baseline", 1, float("nan")),
            row("e", "reference", "human-loo-counts", 1, 0.2),
        ]
    )
    doc = scoring.metrics_json(summary)
    assert doc == {
        "d": {
            "m": {"baseline": {"js": 0.30}, "best": {"strategy": "self-consistency@8", "js": 0.22}},
            "api": {"baseline": {"js": 0.40}, "best": {"strategy": "baseline@1", "js": 0.40}},
            "reference": {"uniform": {"js": 0.35}, "human_ceiling": {"js": 0.12}},  # human-loo before counts
        },
        "e": {
            "m": {"baseline": {"js": None}, "best": {"strategy": None, "js": None}},
            "reference": {"uniform": {"js": None}, "human_ceiling": {"js": 0.2}},
        },
    }
    json.dumps(doc, allow_nan=False)
    # the order of the rows does not matter, and another baseline name or a higher-is-better metric is honoured
    assert scoring.metrics_json(summary.iloc[::-1].reset_index(drop=True)) == doc
    other = scoring.metrics_json(summary, baseline="bon", metric="r2")
    assert other["d"]["m"]["baseline"] == {"r2": 0.5} and other["d"]["m"]["best"]["strategy"] == "bon@4"


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    manifest = manifest_df(n=40, seed=3)
    budgets = {"bon": [2, 4], "w-bon": [2, 4, 8]}
    preds = [*cells(manifest, budgets=budgets), reference_predictions(manifest, LABELS)]
    scores = scoring.score_predictions(manifest, pd.concat(preds, ignore_index=True), PARAMS)
    return scoring.summarise(scores, params=PARAMS, per_bin=False)


def test_the_headline_of_a_scored_run_is_small_and_matches_the_summary(summary: pd.DataFrame) -> None:
    doc = scoring.metrics_json(summary)
    models = sorted(set(summary["model"]) - {"reference"})
    assert sorted(doc) == ["demo"] and sorted(doc["demo"]) == sorted([*models, "reference"])
    # bounded: three leaves per dataset x model, two references per dataset, whatever the strategies and budgets
    assert all(len(leaves(doc["demo"][m])) == 3 for m in models)
    assert len(leaves(doc)) == 3 * len(models) + 2 < len(summary)
    for model in models:
        cells_ = summary[summary["model"] == model]
        largest = cells_[cells_["budget"] == cells_.groupby("strategy")["budget"].transform("max")]
        best = largest.loc[largest["js"].idxmin()]
        assert doc["demo"][model]["best"] == {
            "strategy": f"{best['strategy']}@{best['budget']}",
            "js": pytest.approx(best["js"], abs=1e-6),
        }
        base = cells_[cells_["strategy"] == "baseline"]["js"].item()
        assert doc["demo"][model]["baseline"]["js"] == pytest.approx(base, abs=1e-6)
    uniform = summary[(summary["model"] == "reference") & (summary["strategy"] == "uniform")]["js"].item()
    assert doc["demo"]["reference"]["uniform"]["js"] == pytest.approx(uniform, abs=1e-6) and math.isfinite(uniform)
    assert doc["demo"]["reference"]["human_ceiling"] == {"js": None}  # no ceiling rows in this run
