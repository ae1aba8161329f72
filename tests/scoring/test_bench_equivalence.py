"""The fast paths behind the speed targets give the values of the slow ones they replaced.

Each test computes the same thing two ways on random data (ties, missing predictions and absent
classes included): the faster code in ``ambiemo`` and the library it stands in for (scipy,
scikit-learn) or the straightforward code it replaced, kept here as the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, recall_score

from ambiemo.scoring import metrics as M
from ambiemo.stats import bootstrap as B


def _rows(rng: np.random.Generator, n: int, k: int, ties: bool) -> np.ndarray:
    if ties:  # vote shares of 3 raters: many equal rows, hence equal entropies
        votes = rng.multinomial(3, np.ones(k) / k, size=n).astype(float)
        return votes / votes.sum(axis=1, keepdims=True)
    return rng.dirichlet(np.ones(k), size=n)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_entropy_spearman_equals_scipy(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(3, 3000)), int(rng.integers(2, 9))
    p, q = _rows(rng, n, k, ties), _rows(rng, n, k, not ties)
    hp, hq = M.entropy_for_ranking(p), M.entropy_for_ranking(q)
    np.testing.assert_array_equal(M.average_ranks(hp), stats.rankdata(hp))
    expected = stats.spearmanr(hp, hq).statistic
    assert M.entropy_spearman(p, q) == pytest.approx(expected, abs=1e-12)


def _labels(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """True labels with excluded ties (-1) and a class that never occurs; predictions with parse
    failures (-1) and the absent class."""
    y_true = rng.choice([-1, *range(k - 1)], size=n)
    y_pred = rng.integers(-1, k, size=n)
    return y_true, y_pred


@pytest.mark.parametrize("seed", range(10))
def test_f1_and_uar_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 5000)), int(rng.integers(2, 9))
    y_true, y_pred = _labels(rng, n, k)
    keep = y_true >= 0
    if not keep.any():
        assert np.isnan(M.weighted_f1(y_true, y_pred)) and np.isnan(M.uar(y_true, y_pred))
        return
    t = y_true[keep]
    pr = np.where(y_pred[keep] >= 0, y_pred[keep], 10**6)  # a parse failure is always wrong
    classes = np.unique(t)
    f1 = f1_score(t, pr, labels=classes, average="weighted", zero_division=0)
    rec = recall_score(t, pr, labels=classes, average="macro", zero_division=0)
    assert M.weighted_f1(y_true, y_pred) == pytest.approx(f1, abs=1e-12)
    assert M.uar(y_true, y_pred) == pytest.approx(rec, abs=1e-12)


def _check_rowwise(arr: np.ndarray) -> None:
    """The row-wise check that ``check_distributions`` ran on every call before its fast path."""
    for bad, what in (
        (~np.isfinite(arr).all(axis=1), "NaN or infinite"),
        ((arr < 0).any(axis=1), "negative"),
        (np.abs(arr.sum(axis=1) - 1) > M._SUM_ATOL, "sums to"),
    ):
        if bad.any():
            raise M.DistributionError("p", int(np.argmax(bad)), what)


@pytest.mark.parametrize("seed", range(20))
def test_check_distributions_accepts_and_rejects_as_before(seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.dirichlet(np.ones(4), size=200)
    kind = seed % 5
    row = int(rng.integers(200))
    if kind == 1:
        arr[row, 1] = np.nan
    elif kind == 2:
        arr[row, 2] = -1e-9
    elif kind == 3:  # off by more or less than the tolerance, on either side of it
        arr[row] *= 1 + rng.choice([-1, 1]) * rng.choice([2e-6, 9e-7, 1.1e-6, 4e-7])
    elif kind == 4:
        arr[rng.integers(200, size=3)] *= 1 + 3e-6
    try:
        _check_rowwise(arr)
        expected = None
    except M.DistributionError as e:
        expected = e.row
    if expected is None:
        assert M.check_distributions(arr, "p") is not None
    else:
        with pytest.raises(M.DistributionError) as info:
            M.check_distributions(arr, "p")
        assert info.value.row == expected


# --------------------------------------------------------------------------- bootstrap


def _wranks_onehot(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The bootstrap's weighted average ranks as first written: a (rows x distinct values) one-hot product."""
    uniq, inv = np.unique(x, return_inverse=True)
    onehot = np.zeros((len(x), len(uniq)))
    onehot[np.arange(len(x)), inv] = 1
    wu = w @ onehot
    below = np.cumsum(wu, axis=1) - wu
    return (below + (wu + 1) / 2)[:, inv]


@pytest.mark.parametrize("seed", range(8))
def test_bootstrap_ranks_equal_the_one_hot_ranks_and_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 600))
    x = M.entropy_for_ranking(_rows(rng, n, 4, ties=bool(seed % 2)))
    codes = rng.integers(0, max(1, n // 5), size=n)
    w = B.cluster_counts(int(codes.max()) + 1, 50, rng)[:, codes].astype(float)
    fast = B._wranks(w, x)
    np.testing.assert_array_equal(fast, _wranks_onehot(w, x))
    # and what the docstring promises: rankdata on the rows repeated w times
    reps = w[0].astype(int)
    if reps.sum():
        np.testing.assert_array_equal(
            fast[0][reps > 0], stats.rankdata(np.repeat(x, reps))[np.cumsum(reps)[reps > 0] - 1]
        )


@pytest.mark.parametrize("seed", range(4))
def test_bootstrap_weighted_means_equal_the_copying_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    w = B.cluster_counts(n, 40, rng).astype(float)
    x = rng.random(n)
    if seed % 2:
        x[rng.random(n) < 0.2] = np.nan
    ok = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = w[:, ok] @ x[ok] / w[:, ok].sum(axis=1)
    # BLAS may sum a fresh copy in another order (its alignment differs): 1e-16, not bit-for-bit
    np.testing.assert_allclose(B._wmean(w, x, w.sum(axis=1)), expected, rtol=0, atol=1e-12)
