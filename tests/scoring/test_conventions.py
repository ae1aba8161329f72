"""Each metric convention reproduces, on a hand-made example, the value the cited code computes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import r2_score

from ambiemo.scoring import literature as L
from ambiemo.scoring import metrics as M

P = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
Q = np.array([[0.5, 0.4, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])


def test_js_natural_distance_is_scipy_default():
    expected = [jensenshannon(p, q) for p, q in zip(P, Q, strict=True)]
    np.testing.assert_allclose(M.js_distance(P, Q, math.e), expected)


def test_js_bits_divergence_is_scipy_base2_squared_and_by_hand():
    expected = [jensenshannon(p, q, base=2) ** 2 for p, q in zip(P, Q, strict=True)]
    np.testing.assert_allclose(L.js_divergence_bits(P, Q), expected)
    # By hand for the disjoint pair (1,0) vs (0,1): m = (0.5, 0.5), JSD = 1 bit.
    assert L.js_divergence_bits([[1.0, 0.0]], [[0.0, 1.0]])[0] == pytest.approx(1.0)


def test_r2_utterance_mean_is_mean_of_numpy_corrcoef_squared():
    # Row 2 of Q is uniform: no correlation; AER-LLM's mean runs over the other rows.
    rows = [0, 2, 3]
    expected = np.mean([np.corrcoef(P[i], Q[i])[0, 1] ** 2 for i in rows])
    value, undefined = L.r2_utterance_mean(P, Q)
    assert value == pytest.approx(expected) and undefined == 1


def test_r2_pooled_and_label_mean_match_numpy_and_sklearn():
    assert M.r2(P, Q) == pytest.approx(np.corrcoef(P.ravel(), Q.ravel())[0, 1] ** 2)
    assert L.r2_label_mean(P, Q) == pytest.approx(r2_score(P, Q))
    # By hand for label 0: mean 0.575; SS_tot = Σ(p−0.575)², SS_res = Σ(p−q)².
    p0, q0 = P[:, 0], Q[:, 0]
    by_hand = 1 - ((p0 - q0) ** 2).sum() / ((p0 - p0.mean()) ** 2).sum()
    assert by_hand == pytest.approx(r2_score(p0, q0))


def test_conventions_table_rows_differ_and_name_their_source():
    table = L.conventions_table(P, Q).set_index("convention")
    assert list(table.index) == [c[0] for c in L.CONVENTIONS]
    assert table.loc["js_divergence_bits", "value"] != pytest.approx(table.loc["js_distance_nat", "value"])
    assert table.loc["r2_utterance_mean", "undefined"] == 1
    assert table["source"].str.len().min() > 0
