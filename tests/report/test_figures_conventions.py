"""Figure 2 with the calibrated markers and figure 7 (annotator counts) draw what their tables hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
from synthetic import LABELS, PARAMS, manifest_df, predictions_df

from ambiemo import scoring
from ambiemo.report import figures as F
from ambiemo.report import figures_conventions as FC
from ambiemo.scoring.calibration import calibration_table
from ambiemo.stats import annotators as A


def _scores():
    m = manifest_df(n=40, n_speakers=8, seed=1)
    preds = [
        predictions_df(m, "small", s, seed=i, fail_rate=0.0, quality=q)
        for i, (s, q) in enumerate((("baseline", 0.3), ("cot", 0.7)))
    ]
    return m, scoring.score_predictions(m, [p.drop(columns=["candidate_records"]) for p in preds], PARAMS)


def test_figure2_markers_are_the_calibration_table(tmp_path):
    _, scores = _scores()
    by_amb = scoring.summarise(scores, params=PARAMS)
    cal = calibration_table(scores, {**PARAMS, "seed": 0}).table
    fig = FC.metric_vs_ambiguity_calibrated(by_amb, cal, "js")
    want = cal[(cal["method"] == "temperature+prior") & (cal["ambiguity"] != "all") & (cal["strategy"] == "cot")]
    dotted = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 2  # one calibrated line per strategy
    ys = {tuple(np.round(ln.get_ydata(), 12)) for ln in dotted}
    order = want.sort_values("js_calibrated")  # the same values, whatever the bin order
    assert any(sorted(y) == sorted(np.round(order["js_calibrated"], 12)) for y in ys)
    paths = F.save_figure(fig, tmp_path / "fig2", {"formats": ["png"], "dpi": 50})
    assert all(p.stat().st_size > 0 for p in paths)


def test_figure7_draws_each_quantity_with_its_interval(tmp_path):
    m, scores = _scores()
    raters, _ = A.raters_from_counts(m[[f"votes_{x}" for x in LABELS]].to_numpy())
    table = A.annotator_curve(raters, m["utt_id"].tolist(), scores, "demo", list(LABELS), repeats=4, seed=0)
    fig = FC.annotator_curves(table)
    assert len(fig.axes) == len(FC.PANELS)
    tau_ax = fig.axes[-1]
    tau = table[table["quantity"] == "tau"].sort_values("k")
    drawn = next(ln for ln in tau_ax.get_lines() if ln.get_label() == "Kendall τ")
    np.testing.assert_allclose(drawn.get_ydata(), tau["mean"])
    paths = F.save_figure(fig, tmp_path / "fig7", {"formats": ["png"], "dpi": 50})
    assert all(p.stat().st_size > 0 for p in paths)
    assert "no corpus" in FC.annotator_curves(pd.DataFrame()).axes[0].texts[0].get_text()
