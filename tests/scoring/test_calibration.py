"""Calibrated readouts: a planted over-sharp model is undone, and no utterance's speaker is in its fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.spatial.distance import jensenshannon

from ambiemo.scoring import calibration as CAL

LABELS = ("neutral", "happy", "angry", "sad")


def jsd(p, q):
    """scipy's JS distance per row (its sqrt of a -1e-17 rounding residue on equal rows is NaN: 0)."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num([jensenshannon(a, b) for a, b in zip(p, q, strict=True)])


def planted(n=240, speakers=24, power=3.0, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4) * 2, n)
    q = p**power
    q /= q.sum(axis=1, keepdims=True)
    spk = [f"s{i % speakers}" for i in range(n)]
    return p, q, spk


def test_temperature_scale_by_hand():
    # sqrt(0.8) : sqrt(0.2) = 2 : 1, so T = 2 gives (2/3, 1/3); zeros stay zero.
    out = CAL.temperature_scale(np.array([[0.8, 0.2, 0.0]]), 2.0)
    np.testing.assert_allclose(out, [[2 / 3, 1 / 3, 0.0]])


def test_planted_sharpened_model_gets_temperature_three_and_zero_distance():
    p, q, spk = planted()
    for method in CAL.METHODS:
        cal, fitted, note = CAL.cross_fit(p, q, spk, method, folds=5, seed=1)
        assert len(fitted) == 5 and note == ""
        for t, w in fitted:
            assert t == pytest.approx(3.0, rel=0.05)
            assert w == pytest.approx(0.0, abs=0.02)
        js = jsd(p, cal).mean()  # independent JS
        assert js < 0.01
    raw = jsd(p, q).mean()
    assert raw > 0.1  # the planted gap is real


def test_no_utterance_speaker_is_in_its_own_fit(monkeypatch):
    p, q, spk = planted(n=120, speakers=12, seed=2)
    row_of = {tuple(np.round(r, 12)): i for i, r in enumerate(p)}
    seen = []
    real_fit = CAL.fit

    def spy(pp, qq, method, base="e", t0=None):
        seen.append({spk[row_of[tuple(np.round(r, 12))]] for r in pp})
        return real_fit(pp, qq, method, base, t0)

    monkeypatch.setattr(CAL, "fit", spy)
    fold, _ = CAL.speaker_folds(spk, 4, seed=7)
    CAL.cross_fit(p, q, spk, "temperature", folds=4, seed=7)
    assert len(seen) == 4
    for f, train_speakers in zip(np.unique(fold), seen, strict=True):
        test_speakers = {s for s, g in zip(spk, fold, strict=True) if g == f}
        assert test_speakers and not (test_speakers & train_speakers)
        assert train_speakers | test_speakers == set(spk)


def test_folds_depend_on_the_seed_not_on_row_order():
    spk = [f"s{i % 10}" for i in range(50)]
    a, _ = CAL.speaker_folds(spk, 5, seed=3)
    b, _ = CAL.speaker_folds(spk[::-1], 5, seed=3)
    np.testing.assert_array_equal(a, b[::-1])


def _scores(p, q, spk, strategy):
    frame = pd.DataFrame(
        {
            "dataset": "demo",
            "model": "m",
            "strategy": strategy,
            "budget": 1,
            "utt_id": [f"u{i}" for i in range(len(p))],
            "speaker": spk,
        }
    )
    for j, x in enumerate(LABELS):
        frame[f"true_{x}"], frame[f"p_{x}"] = p[:, j], q[:, j]
    frame["js"] = jsd(p, q)
    return frame


def test_table_reports_parameters_calibrated_metric_and_gap_closed():
    p, q, spk = planted(n=120, speakers=12, seed=4)
    ceiling = _scores(p, p, spk, "human-split-half").assign(model="reference")
    ceiling["js"] = 0.05  # a planted ceiling
    scores = pd.concat([_scores(p, q, spk, "baseline"), ceiling], ignore_index=True)
    table, per_utt, _ = CAL.calibration_table(scores, {"seed": 5, "scoring": {"calibration_folds": 3}})
    row = table.set_index("method").loc["temperature"]
    assert row["T"] == pytest.approx(3.0, rel=0.05) and row["folds"] == 3
    assert row["ceiling_js"] == pytest.approx(0.05)
    assert row["gap_closed"] == pytest.approx((row["js_raw"] - row["js_calibrated"]) / (row["js_raw"] - 0.05))
    assert row["gap_closed"] > 0.9
    assert len(per_utt) == 2 * 120 and per_utt["js_calibrated"].mean() == pytest.approx(table["js_calibrated"].mean())
    # The paired tests see the calibrated JS in place of the raw one.
    cal = CAL.calibrated_scores(scores[scores["model"] == "m"], per_utt, "temperature")
    assert cal["js"].mean() == pytest.approx(row["js_calibrated"])


def test_a_cell_with_one_speaker_is_reported_not_calibrated():
    p, q, _ = planted(n=30, seed=5)
    cal, fitted, note = CAL.cross_fit(p, q, ["s0"] * 30, "temperature", folds=5, seed=0)
    assert np.isnan(cal).all() and not fitted and "fewer than two" in note


def test_a_fold_fit_reads_at_most_fit_rows_of_the_other_speakers(monkeypatch):
    """Above ``scoring.calibration_fit_rows`` a fold is fitted on a seeded draw of the other folds'
    utterances (never its own speakers'), said in the note; at or below it, on all of them."""
    p, q, spk = planted(n=900, speakers=45, power=2.0, seed=4)
    sizes, real_fit = [], CAL.fit

    def spy(pp, qq, method, base="e", t0=None):
        sizes.append(len(pp))
        return real_fit(pp, qq, method, base, t0)

    monkeypatch.setattr(CAL, "fit", spy)
    full, fitted_full, note_full = CAL.cross_fit(p, q, spk, "temperature", folds=3, seed=1)
    assert sizes == [600, 600, 600] and note_full == ""
    sizes.clear()
    same, _, note_same = CAL.cross_fit(p, q, spk, "temperature", folds=3, seed=1, fit_rows=600)
    assert sizes == [600, 600, 600] and note_same == ""
    np.testing.assert_array_equal(same, full)
    sizes.clear()
    drawn, fitted, note = CAL.cross_fit(p, q, spk, "temperature", folds=3, seed=1, fit_rows=150)
    assert sizes == [150, 150, 150] and note == "3 fold fit(s) on a draw of 150 utterances"
    again, _, _ = CAL.cross_fit(p, q, spk, "temperature", folds=3, seed=1, fit_rows=150)
    np.testing.assert_array_equal(again, drawn)  # the draw is seeded
    for (t, _), (t_full, _) in zip(fitted, fitted_full, strict=True):
        assert t == pytest.approx(t_full, rel=0.05)  # a planted power 2 is pinned by 150 answers
        assert t == pytest.approx(2.0, rel=0.05)


def test_the_temperature_fit_is_reused_as_the_start_of_temperature_plus_prior(monkeypatch):
    """calibration_table fits each fold's temperature once: the temperature+prior search starts from
    the temperature method's fit of the same rows, as it would from its own, and gets the same answer."""
    rng = np.random.default_rng(6)
    n = 90
    p = rng.dirichlet(np.ones(4), n)
    q = rng.dirichlet(np.ones(4) * 0.5, n)
    spk = [f"s{i % 9}" for i in range(n)]
    alone, fitted_alone, _ = CAL.cross_fit(p, q, spk, "temperature+prior", folds=3, seed=2)
    fits: dict[int, tuple] = {}
    CAL.cross_fit(p, q, spk, "temperature", folds=3, seed=2, fits=fits)
    temperatures = {f: t for f, (t, _, _) in fits.items()}
    calls = []
    real_fit = CAL.fit
    monkeypatch.setattr(CAL, "fit", lambda *a, **k: calls.append(a[2]) or real_fit(*a, **k))
    shared, fitted_shared, _ = CAL.cross_fit(p, q, spk, "temperature+prior", folds=3, seed=2, starts=temperatures)
    assert sorted(temperatures) == [0, 1, 2] and calls == ["temperature+prior"] * 3  # no temperature fit again
    np.testing.assert_array_equal(shared, alone)
    assert fitted_shared == fitted_alone


def test_fold_fits_applied_from_the_table_give_the_fitted_answers():
    """The stats stage applies the aggregate stage's fold fits (``calibration_folds``) instead of
    fitting again: the calibrated answers and table are those of the fits, number for number, and
    a fit it is given is used (a planted temperature changes the answers)."""
    frames = []
    for cell, (strategy, labels) in enumerate((("baseline", LABELS), ("bon", LABELS[:3]))):
        p, q, spk = planted(n=90, speakers=9, seed=cell)
        p, q = p[:, : len(labels)], q[:, : len(labels)]
        p, q = p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True)
        pad = np.full((len(p), len(LABELS) - len(labels)), np.nan)  # a cell of fewer labels: NaN in the others
        frames.append(_scores(np.hstack([p, pad]), np.hstack([q, pad]), spk, strategy))
    scores = pd.concat(frames, ignore_index=True)
    params = {"seed": 5, "scoring": {"calibration_folds": 3}}
    fitted = CAL.calibration_table(scores, params)
    assert len(fitted.folds) == 2 * 2 * 3  # cells × methods × folds
    assert fitted.folds.loc[fitted.folds["strategy"] == "bon", f"prior_{LABELS[3]}"].isna().all()
    stored = pa.Table.from_pandas(fitted.folds).to_pandas()  # as the stats stage reads it back
    applied = CAL.calibration_table(scores, params, folds_table=stored)
    pd.testing.assert_frame_equal(applied.calibrated, fitted.calibrated)
    pd.testing.assert_frame_equal(applied.table, fitted.table)
    pd.testing.assert_frame_equal(applied.folds, fitted.folds)
    planted_t = stored.assign(T=stored["T"] * 2)
    moved = CAL.calibration_table(scores, params, folds_table=planted_t)
    assert not np.allclose(moved.calibrated["js_calibrated"], fitted.calibrated["js_calibrated"])
