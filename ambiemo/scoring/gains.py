"""The gain over the baseline: what it is, in one place.

A strategy's **gain** is its difference from the baseline (params ``stats.baseline``, at its
smallest budget, per dataset × model), signed so that positive means better (``direction``):

- ``gain_over_baseline(summary, metric)``: from the summary rows (a set-level metric such as R²
  or ECE has no per-utterance difference): the strategy's value minus the baseline's.
- ``paired_cells(scores)``: per dataset × model × strategy × budget, the strategy's rows beside
  the baseline's on the utterances both answered; ``PairedCell.pairs(metric)`` gives the values
  and which pairs have both (a NaN on either side drops the pair, and callers count it).

Everything that shows a gain reads it from here: the summaries, the paired tests and power
(``ambiemo.stats.paired``, ``ambiemo.stats.permutation``, ``ambiemo.stats.power``), and the gains
table with its intervals (``ambiemo.stats.gains``), which figure 3 draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.scoring import metrics as M
from ambiemo.scoring.references import MODEL as REFERENCE_MODEL
from ambiemo.scoring.schema import KEYS

# Per-utterance score columns and summary metrics, and which way is better.
HIGHER_IS_BETTER = {
    **{k: m.higher_is_better for k, m in M.METRICS.items()},
    "correct": True,
    "plausible": True,
    "oracle_js": False,
    "pass_at_n": True,
    "r2_utt": True,
}
KEY_COLUMNS = ("dataset", "model", "strategy", "budget", "metric")


def direction(metric: str) -> float:
    """+1 where higher is better, -1 where lower is (JS, KL, TV, Brier, ECE ...)."""
    if metric not in HIGHER_IS_BETTER:
        raise KeyError(f"no direction known for metric {metric!r}; known: {sorted(HIGHER_IS_BETTER)}")
    return 1.0 if HIGHER_IS_BETTER[metric] else -1.0


def without_references(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows of real models: the reference predictors and human ceilings
    (``model == "reference"``) have no baseline to be compared with."""
    return scores[scores["model"] != REFERENCE_MODEL] if "model" in scores else scores


def baseline_rows(frame: pd.DataFrame, baseline: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """The baseline's rows at its smallest budget (per group of ``by``)."""
    base = frame[frame["strategy"] == baseline]
    smallest = base.groupby(list(by))["budget"].transform("min") if by else base["budget"].min()
    return base[base["budget"] == smallest]


def gain_over_baseline(
    summary: pd.DataFrame,
    metric: str = "js",
    baseline: str = "baseline",
    by: Sequence[str] = ("dataset", "model", "ambiguity"),
) -> pd.DataFrame:
    """Each strategy's improvement over the baseline in a summary table, per ``by``.

    ``gain`` is signed so that positive means better (baseline minus strategy for a metric where
    lower is better, such as JS). If the baseline ran at several budgets, its smallest is used.
    """
    if metric not in M.METRICS:
        raise KeyError(f"unknown metric {metric!r}; choose from {list(M.METRICS)}")
    if baseline not in set(summary["strategy"]):
        raise ValueError(
            f"no {baseline!r} rows in the summary: cannot compute gains over the baseline "
            "(params stats.baseline names the reference strategy)"
        )
    by = list(by)
    base = baseline_rows(summary, baseline, by)[[*by, metric]].rename(columns={metric: "baseline_value"})
    rest = summary[summary["strategy"] != baseline]
    out = rest.merge(base, on=by, how="inner", validate="many_to_one")
    out["value"] = out[metric]
    out["gain"] = direction(metric) * (out["value"] - out["baseline_value"])
    out["metric"] = metric
    keep = [
        c
        for c in (*KEYS, "ambiguity", "ambiguity_rank", "params_b", "metric", "value", "baseline_value", "gain")
        if c in out.columns
    ]
    return out[keep].reset_index(drop=True)


@dataclass
class PairedCell:
    """One strategy × budget of a dataset × model beside its baseline, on the utterances both
    answered (sorted by utterance id, so that row order never moves a number)."""

    dataset: Any
    model: Any
    strategy: Any
    budget: Any
    base: pd.DataFrame  # baseline rows, indexed by utt_id
    cell: pd.DataFrame  # the strategy's rows, same index

    def pairs(self, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Strategy values, baseline values, and the mask of pairs with both."""
        x, y = self.cell[metric].to_numpy(dtype=float), self.base[metric].to_numpy(dtype=float)
        return x, y, ~np.isnan(x) & ~np.isnan(y)


def paired_cells(scores: pd.DataFrame, baseline: str = "baseline") -> Iterator[tuple[Any, Any, PairedCell | None]]:
    """Per dataset × model (reference rows left out): ``(dataset, model, None)`` once where the
    model has no baseline rows, else ``(dataset, model, PairedCell)`` per strategy × budget."""
    for (dataset, model), g in without_references(scores).groupby(["dataset", "model"], sort=True):
        base = baseline_rows(g, baseline)
        if base.empty:
            yield dataset, model, None
            continue
        base = base.set_index("utt_id")
        for (strategy, budget), cell in g[g["strategy"] != baseline].groupby(["strategy", "budget"], sort=True):
            cell = cell.set_index("utt_id")
            common = cell.index.intersection(base.index).sort_values()
            yield dataset, model, PairedCell(dataset, model, strategy, budget, base.loc[common], cell.loc[common])
