"""The stats stage as a function: read the scores, write every statistics table of the layout.

``stats_run(params)`` writes ``stats/{paired, gains, mixed_model, gee_correctness, power}.parquet``
(CSV beside each), each with ``write_result``: its provenance holds the params sections it
depends on, the scores file and its hash. It returns the tables by name, for the notebook to show.

The paired tests, the gains table (``ambiemo.stats.gains``: the intervals figure 3 draws), the
power table and the regression models compare strategies with a model's baseline and leave the
reference rows (``model == "reference"``) out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ambiemo.core.layout import Layout
from ambiemo.scoring.results import params_subset, write_result
from ambiemo.scoring.run import empty_cells_note, unanswered_table
from ambiemo.scoring.schema import read_scores
from ambiemo.stats.bootstrap import stats_params
from ambiemo.stats.gains import gain_table, without_references

# Defaults of the stats keys this module reads (params ``stats``), stated once.
POWER_DEFAULTS: dict[str, Any] = {"power": 0.8, "power_gains": {"js": 0.02}}


def stats_params_with_power(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``stats`` over the defaults, the power keys included."""
    return {**POWER_DEFAULTS, **stats_params(params)}


def stats_tables(scores: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Every table of the stats stage from a scores table (module docstring)."""
    from ambiemo.stats.paired import paired_comparisons
    from ambiemo.stats.power import power_table
    from ambiemo.stats.regression import correctness_model, interaction_model

    st = stats_params_with_power(params)
    models = without_references(scores)
    return {
        "paired": paired_comparisons(models, params),
        "gains": gain_table(models, params),
        # the regression models leave the reference rows out themselves and say so in their note
        "mixed_model": interaction_model(scores, params),
        "gee_correctness": correctness_model(scores, params),
        "power": power_table(
            models,
            st["paired_metrics"],
            baseline=st["baseline"],
            gains=st["power_gains"],
            power=float(st["power"]),
            alpha=float(st["alpha"]),
        ),
    }


def stats_run(params: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The stats stage (module docstring)."""
    layout = Layout.from_params(params)
    scores, meta = read_scores(layout.scores)
    note = empty_cells_note(unanswered_table(meta))
    if note:  # a cell the run expected and got nothing for: no comparison row, said here
        warnings.warn(f"stats: {note}", UserWarning, stacklevel=2)
    tables = stats_tables(scores, params)
    for name, table in tables.items():
        write_result(table, layout.stats(name), name, params_subset(params, "stats", "scoring"), [layout.scores])
    return tables
