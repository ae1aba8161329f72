"""The peers' conventions, each fact of their code as a hand-computed case, and the five places where
ambiemo's own numbers differ from AER-LLM's code (each of which the previous conventions table hid).

Facts come from mHealthUnimelb/AER-LLM at commit 7295fa342d04ad6ad980aa224510adc5bd4dc9bd and from
WendaZhang08/scaling-ambiguity-SER at commit f419c7e277c4334ecc59590b0440c9734430ff39 (files named
per test); no code of theirs is used here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from ambiemo.core.failures import FAILURE_POLICIES, apply_failure_policy
from ambiemo.data import labels as L
from ambiemo.scoring import literature as C
from ambiemo.scoring import metrics as M
from ambiemo.scoring import presets as P
from ambiemo.scoring.summaries import conventions as conventions_summary

FOUR = ["neutral", "happy", "angry", "sad"]  # AER-LLM's order (prediction_processing.py emo_labels)
OK2 = np.array([True, True])


def aer(p, q, ok=None, labels=FOUR):
    ok = np.ones(len(p), bool) if ok is None else np.asarray(ok)
    return {k: v.value for k, v in P.aer_llm(np.asarray(p, float), np.asarray(q, float), ok, labels).items()}


def sas(p, q, ok=None, labels=FOUR):
    ok = np.ones(len(p), bool) if ok is None else np.asarray(ok)
    return P.scaling_ambiguity_ser(np.asarray(p, float), np.asarray(q, float), ok, labels)


# --- mismatch 1: R² per utterance (Evaluation/eval_metrics.py `R`: + 1e-10, rounded to 4 dp) -------


def test_mismatch_r2_constant_row_scores_zero_and_stays_in_the_mean():
    p = q = [[1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]]
    # By hand: row 0 cov = var = 0.1875, 0.1875^2 / (0.1875^2 + 1e-10) = 0.99999999716 -> 1.0 (4 dp);
    # row 1 is constant: 0 / (0 + 1e-10) = 0. Mean over both rows: 0.5.
    assert aer(p, q)["r2"] == 0.5
    value, undefined = C.r2_utterance_mean(p, q)  # ambiemo: one row, the constant one left out
    assert value == 1.0 and undefined == 1


def test_aer_r2_rounds_to_four_decimals():
    a, b = np.array([[0.7, 0.2, 0.1, 0.0]]), np.array([[0.5, 0.3, 0.1, 0.1]])
    r = np.corrcoef(a[0], b[0])[0, 1] ** 2  # the same statistic without epsilon and rounding
    assert P.aer_r2(a, b)[0] == round(r, 4) and P.aer_r2(a, b)[0] != r


# --- mismatch 2: JS (eval_metrics.py `js_distance` / `KL`: KL rounded to 4 dp, 1e-8 added to m) ---


def test_mismatch_js_disjoint_pair_by_hand():
    p, q = [[1, 0, 0, 0]], [[0, 1, 0, 0]]
    # m = (0.5, 0.5, 0, 0); KL(p, m + 1e-8) = ln(1 / 0.50000001) = 0.69314716 -> 0.6931, twice.
    assert aer(p, q)["js"] == round(math.sqrt(0.6931), 6)
    assert M.js_distance(p, q)[0] == pytest.approx(jensenshannon(p[0], q[0]))  # sqrt(ln 2) = 0.832555
    assert abs(M.js_distance(p, q)[0] - aer(p, q)["js"]) > 2.5e-5


def test_mismatch_js_near_identical_pair_rounds_to_zero():
    p, q = [[0.5, 0.5, 0, 0]], [[0.508, 0.492, 0, 0]]
    # m = (0.504, 0.496): both KL terms are 3.2e-5, below 5e-5, so each rounds to 0.0000.
    assert aer(p, q)["js"] == 0.0
    assert M.js_distance(p, q)[0] == pytest.approx(jensenshannon(p[0], q[0]))
    assert M.js_distance(p, q)[0] == pytest.approx(math.sqrt(3.2e-5), rel=0.01)  # 0.0057 apart


# --- mismatch 3: ECE bins (eval_metrics.py `ECE`: (lower, upper], argmax ties first) ------------


def test_mismatch_ece_bin_edges():
    q = [[0.6, 0.4, 0, 0], [0.5, 0.3, 0.2, 0]]
    p = [[1, 0, 0, 0], [0, 1, 0, 0]]
    # AER-LLM: 0.6 and 0.5 both in (0.4, 0.6]: |0.55 - 0.5| * 1 = 0.05.
    assert aer(p, q)["ece"] == pytest.approx(0.05)
    # ambiemo [lower, upper): 0.6 in [0.6, 0.8) correct, 0.5 in [0.4, 0.6) wrong: 0.2 + 0.25.
    y = M.majority_label(p)
    conf = M.confidence(q, M.argmax_label(q))
    assert M.expected_calibration_error(conf, M.correct(y, M.argmax_label(q)), 5) == pytest.approx(0.45)


def test_mismatch_tied_top_label_argmax_first_versus_excluded():
    p, q = [[0.5, 0.5, 0, 0]], [[0.4, 0.4, 0.2, 0]]
    # AER-LLM: argmax takes the first of the tie on both sides: neutral == neutral, correct.
    assert aer(p, q)["accuracy"] == 1.0
    assert M.majority_label(p)[0] == -1  # ambiemo's default leaves the tie out


def test_label_order_decides_the_tie_as_each_peer_does():
    # A tie between neutral and angry: AER-LLM's order (neutral first) and scaling-ambiguity-SER's
    # (lib/evaluation_lib.py IEMOCAP_EMOTIONS: Anger, Happiness, Neutral state, Sadness) disagree.
    p, q = [[0.5, 0, 0.5, 0]], [[0, 0, 1, 0]]
    assert aer(p, q)["accuracy"] == 0.0
    assert sas(p, q)["accuracy"].value == 1.0
    # The same holds when ambiemo's label set lists the labels in another order.
    order = ["sad", "angry", "happy", "neutral"]
    perm = [FOUR.index(x) for x in order]
    assert aer(np.array(p)[:, perm], np.array(q)[:, perm], labels=order)["accuracy"] == 0.0


# --- mismatch 4: IEMOCAP labels (data_processing/preprocessing.py `get_label_prob`) ---------------


def test_mismatch_iemocap_excited_goes_to_others_and_is_dropped():
    votes = [[["excited"], ["neutral"], ["happy"]]]
    ours = L.tally_votes(votes, L.LabelSet("four", tuple(FOUR), {"excited": "happy"}), "drop_utterance")
    theirs = L.tally_votes(votes, L.LabelSet("aer-llm", tuple(FOUR)), "drop_votes")
    np.testing.assert_allclose(L.soft_labels(ours.votes), [[1 / 3, 2 / 3, 0, 0]])
    np.testing.assert_allclose(L.soft_labels(theirs.votes), [[0.5, 0.5, 0, 0]])
    assert theirs.dropped_votes == 1.0


def test_aer_truth_is_rounded_to_two_decimals_and_not_renormalised():
    # Three raters split three ways: round(1/3, 2) = 0.33 per label, summing to 0.99.
    p = [[1 / 3, 1 / 3, 1 / 3, 0]]
    q = [[0.33, 0.33, 0.33, 0.01]]
    # BC on the rounded truth: 3 * sqrt(0.33 * 0.33) = 0.99 exactly; on the exact truth 0.995.
    assert aer(p, q)["bc"] == 0.99
    assert M.bhattacharyya_coefficient(p, q)[0] == pytest.approx(3 * math.sqrt(0.33 / 3))


def test_aer_kl_is_model_from_human_with_epsilon_on_the_human_side():
    # Evaluation/eval_framework.py calls KL(pred, truth): sum over the model's nonzero labels.
    p, q = [[1, 0, 0, 0]], [[0.5, 0.5, 0, 0]]
    # 0.5 ln(0.5/(1+1e-8)) + 0.5 ln(0.5/1e-8) = 0.5 (-0.693147) + 0.5 (17.727534) = 8.5172 (4 dp).
    assert aer(p, q)["kl"] == pytest.approx(8.5172)


# --- mismatch 5: parse failures (prediction_processing.py: one-hot neutral; evaluation_lib.py: dropped)


def test_mismatch_failures_neutral_for_aer_llm_dropped_for_scaling():
    p = [[1, 0, 0, 0], [0, 1, 0, 0]]
    q = [[0.25] * 4, [0.1, 0.8, 0.1, 0]]  # row 0 failed; ambiemo's default policy wrote uniform
    ok = [False, True]
    got = aer(p, q, ok)
    assert got["accuracy"] == 1.0  # the failure became neutral, which is row 0's majority
    assert got["bc"] == pytest.approx((1.0 + round(math.sqrt(0.8), 4)) / 2)
    s = sas(p, q, ok)
    assert s["bc"].n == 1 and s["bc"].excluded == 1
    assert s["bc"].value == pytest.approx(math.sqrt(0.8))


def test_failure_policies_neutral_and_drop():
    assert {"uniform", "nan", "neutral", "drop"} <= set(FAILURE_POLICIES)
    dist, ok = apply_failure_policy(None, 4, "neutral", labels=("happy", "neutral", "sad", "angry"))
    np.testing.assert_array_equal(dist, [0, 1, 0, 0])
    assert not ok
    dist, ok = apply_failure_policy(None, 4, "drop")
    assert np.isnan(dist).all() and not ok
    with pytest.raises(ValueError, match="neutral"):
        apply_failure_policy(None, 3, "neutral", labels=("happy", "sad", "angry"))


# --- scaling-ambiguity-SER facts (lib/evaluation_lib.py) -------------------------------------------


def test_scaling_js_is_base2_divergence_without_square_root():
    p, q = [[1, 0, 0, 0]], [[0, 1, 0, 0]]
    assert sas(p, q)["js"].value == pytest.approx(1.0)  # m = (.5, .5): 1 bit, no square root
    assert sas(p, q)["js"].value == pytest.approx(jensenshannon(p[0], q[0], base=2) ** 2)


def test_scaling_r2_is_sklearn_per_label_mean_with_constant_columns():
    p = [[1, 0, 0, 0], [0, 1, 0, 0]]
    q = [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0]]
    # By hand per label (truth first): neutral 1 - 0.5/0.5 = 0, happy 0, angry and sad constant and
    # predicted exactly (r2_score gives 1.0): mean 0.5.
    assert sas(p, q)["r2"].value == pytest.approx(0.5)


def test_scaling_ece_ten_bins_lower_edge_inclusive():
    p = [[1, 0, 0, 0], [0, 1, 0, 0]]
    q = [[0.6, 0.4, 0, 0], [0.5, 0.3, 0.2, 0]]
    # bin(0.6) = 6, correct: |1 - 0.6|; bin(0.5) = 5, wrong (argmax neutral vs happy): |0 - 0.5|.
    assert sas(p, q)["ece"].value == pytest.approx(0.5 * 0.4 + 0.5 * 0.5)


# --- the conventions table ------------------------------------------------------------------------


def _scores(n=40, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4), n)
    q = rng.dirichlet(np.ones(4) * 0.5, n)
    ok = rng.random(n) > 0.1
    frame = pd.DataFrame(
        {"dataset": "demo", "model": "m", "strategy": "s", "budget": 1, "utt_id": [f"u{i}" for i in range(n)]}
    )
    for j, x in enumerate(FOUR):
        frame[f"true_{x}"], frame[f"p_{x}"] = p[:, j], q[:, j]
    frame["parsed_ok"] = ok
    return frame, p, q, ok


def test_conventions_table_has_every_preset_row_with_its_source():
    frame, p, q, ok = _scores()
    table = conventions_summary(frame).set_index("convention")
    want = [
        *(f"aer-llm/{m}" for m in ("js", "bc", "r2", "ece", "accuracy", "f1")),
        *(f"scaling-ambiguity-ser/{m}" for m in ("js", "bc", "r2", "ece")),
        "lewidi-2025/manhattan",
        "js_distance_nat",
    ]
    assert set(want) <= set(table.index)
    assert (
        "7295fa3" in table.loc["aer-llm/js", "source"] and "f419c7e" in table.loc["scaling-ambiguity-ser/js", "source"]
    )
    # No row of ambiemo's own claims to be a peer's code ("as X").
    own = table[~table.index.str.contains("/")]
    assert not own["source"].str.contains(r"^AER-LLM|as AER-LLM", regex=True).any()
    # Manhattan by hand; the scaling rows drop the failures and count them.
    assert table.loc["lewidi-2025/manhattan", "value"] == pytest.approx(np.abs(p - q).sum(axis=1).mean())
    assert table.loc["scaling-ambiguity-ser/js", "undefined"] == int((~ok).sum())
    assert table.loc["scaling-ambiguity-ser/js", "value"] == pytest.approx(
        np.mean([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p[ok], q[ok], strict=True)])
    )
