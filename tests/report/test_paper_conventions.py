"""The paper's issue-20 inputs: the presets table, the calibration table and the annotator sentences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ambiemo.report import paper_conventions as PC


def _annotators(tau_by_k, agree_by_k, dataset="planted"):
    rows = []
    for q, values in (("tau", tau_by_k), ("comparisons_agree", agree_by_k)):
        for k, v in enumerate(values, start=1):
            rows.append({"dataset": dataset, "k": k, "quantity": q, "mean": v, "ci_low": v - 0.1, "ci_high": v})
    return pd.DataFrame(rows)


def test_annotator_sentence_names_the_stable_k_and_the_survival(tmp_path):
    # tau -1, 0.95, 0.8, 1, 1: it dips below 0.9 at k = 3, so it is stable from k = 4 only.
    table = _annotators([-1, 0.95, 0.8, 1, 1], [0, 1, 1, 1, 1])
    summary = PC.annotator_summary(table, 0.9)
    assert summary.loc[0, "stable_from"] == 4 and summary.loc[0, "max_k"] == 5
    assert summary.loc[0, "tau_kminus1"] == 1 and summary.loc[0, "comparisons_agree_k1"] == 0
    paths = PC.annotators_tex(table, {"stats": {"annotator_tau_stable": 0.9}}, tmp_path / "t.tex", tmp_path / "a.tex")
    text = paths[1].read_text()
    assert "stable from $k=4$" in text and "comparisons survive" in text
    lost = _annotators([1, 1, 1], [1, 0.5, 1])
    lost.loc[(lost["quantity"] == "comparisons_agree") & (lost["k"] == 2), "mean"] = 0.5
    PC.annotators_tex(lost, {}, tmp_path / "t2.tex", tmp_path / "a2.tex")
    assert "do not all survive" in (tmp_path / "a2.tex").read_text()


def test_presets_and_calibration_tables_print_their_values(tmp_path):
    conv = pd.DataFrame(
        {
            "dataset": "demo",
            "model": "m",
            "strategy": "s",
            "budget": [1, 2, 2],
            "convention": ["aer-llm/js", "scaling-ambiguity-ser/js", "aer-llm/js"],
            "value": [0.111, 0.222, 0.333],
        }
    )
    text = PC.presets_tex(conv, tmp_path / "p.tex").read_text()
    assert "0.333" in text and "0.222" in text and "0.111" not in text  # the largest budget only
    assert "7295fa3" in text and "f419c7e" in text
    cal = pd.DataFrame(
        {
            "dataset": "demo",
            "model": "m",
            "strategy": "s",
            "budget": 1,
            "ambiguity": ["all", "all", "low"],
            "method": ["temperature+prior", "temperature", "temperature+prior"],
            "T": [2.5, 2.0, 2.5],
            "w": [0.1, 0.0, 0.1],
            "js_raw": [0.4, 0.4, 0.5],
            "js_calibrated": [0.3, 0.35, 0.45],
            "gap_closed": [0.5, 0.25, np.nan],
        }
    )
    text = PC.calibration_tex(cal, tmp_path / "c.tex").read_text()
    assert "2.500" in text and "0.500" in text and "0.350" not in text
    assert "not computed" in PC.calibration_tex(None, tmp_path / "n.tex").read_text()


def test_both_presets_side_by_side_get_distinct_headers(tmp_path):
    """Both presets define BC: the table must not give two columns the same header (latex_table refuses that)."""
    from ambiemo.report.latex import latex_table
    from ambiemo.report.paper_conventions import PRESET_COLUMNS, presets_tex

    assert len(set(PRESET_COLUMNS.values())) == len(PRESET_COLUMNS)
    rows = [
        {"dataset": "d", "model": "m", "strategy": "baseline", "budget": 1, "convention": c, "value": 0.5}
        for c in PRESET_COLUMNS
    ]
    text = presets_tex(pd.DataFrame(rows), tmp_path / "t.tex").read_text()
    assert text.count("0.500") == len(PRESET_COLUMNS)
    with pytest.raises(ValueError, match="given twice"):
        latex_table(pd.DataFrame([[1, 2]], columns=["BC", "BC"]), tmp_path / "x.tex")
