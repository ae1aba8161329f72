"""The interaction models fitted from per-utterance sums, for studies too large for statsmodels' loops.

statsmodels' ``MixedLM`` and ``GEE`` visit every group in Python at each step: at the ladder's
full size (about 47,500 utterances, millions of rows) one fit takes hours. For the two models the
stats stage fits at that size, every quantity the estimators need is a sum over groups of small
per-group terms, and with one random intercept (or an exchangeable working correlation) those terms
are closed forms of the group's row count and column sums. This module computes them with a few
matrix products over all rows and ``bincount`` sums per group, and follows statsmodels' own
algorithms step for step, so the estimates are the same model's (``tests/stats/test_grouped_fit.py``
compares them with statsmodels on the demo's scores and on a planted simulation):

- ``reml_intercept``: the linear mixed model with a random intercept per group, by REML. The
  profiled REML criterion is minimised over the one variance ratio ``γ = var(group) / var(residual)``
  (a bounded scalar search on ``log1p γ``); the fixed effects are the GLS solution at ``γ``; their
  standard errors come from the inverse of the same observed Hessian statsmodels inverts (fixed
  effects and ``γ`` jointly), in closed form for a random intercept.
- ``gee_exchangeable_logit``: the binomial GEE with a logit link and an exchangeable working
  correlation: statsmodels' Fisher-scoring iterations, its moment update of the correlation, its
  stopping rule (score norm below ``ctol`` after one correlation update) and its robust (sandwich)
  covariance, started from the independence (GLM) fit.

Both return a ``GroupedFit``, which answers what ``ambiemo.stats.regression`` reads of a statsmodels
result (``model.exog_names``, ``params``, ``bse``, ``pvalues``, ``conf_int``, ``cov_re``, ``vcomp``,
``scale``). Standard errors and intervals are normal-theory (z), as statsmodels' are for both models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ambiemo.core.blas import one_blas_thread


@dataclass
class GroupedFit:
    """A fitted model, read like a statsmodels result by ``ambiemo.stats.regression``."""

    exog_names: list[str]
    params: pd.Series
    bse: pd.Series
    scale: float = 1.0
    cov_re: np.ndarray = field(default_factory=lambda: np.zeros((1, 1)))
    vcomp: np.ndarray = field(default_factory=lambda: np.zeros(0))
    converged: bool = True

    @property
    def model(self) -> SimpleNamespace:
        return SimpleNamespace(exog_names=self.exog_names)

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(2 * stats.norm.sf(np.abs(self.params / self.bse)), index=self.exog_names)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        z = stats.norm.ppf(1 - alpha / 2)
        return pd.DataFrame({0: self.params - z * self.bse, 1: self.params + z * self.bse}, index=self.exog_names)


BLOCK_ROWS = 250_000  # rows per block of the design and of every sum over rows: bounded temporaries


def design(formula: str, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``y``, ``X`` and the column names of ``formula`` on ``data``, built by the formula engine
    statsmodels itself uses, so that columns and names are the ones its models would fit. Built
    ``BLOCK_ROWS`` rows at a time into one array, with the coding (factor levels) of the whole data,
    so that the engine's temporaries stay the size of a block."""
    from statsmodels.formula._manager import FormulaManager

    manager = FormulaManager()
    if len(data) <= BLOCK_ROWS or manager.engine != "patsy":
        endog, exog = manager.get_matrices(formula, data, pandas=True)
        _no_missing(len(data) - len(exog), formula)
        return endog.to_numpy(dtype=float).ravel(), exog.to_numpy(dtype=float), list(exog.columns)
    # every level of every factor, in a small frame, fixes the coding (patsy's DesignInfo) the blocks share
    factors = [
        c
        for c in data.columns
        if not pd.api.types.is_numeric_dtype(data[c]) and re.search(rf"\b{re.escape(str(c))}\b", formula)
    ]
    levels = data.drop_duplicates(factors) if factors else data.iloc[:1]
    _, spec = manager.get_matrices(formula, levels, pandas=True)
    outcome = formula.split("~")[0].strip()
    y, X = data[outcome].to_numpy(dtype=float), np.empty((len(data), spec.shape[1]))
    for rows in _blocks(len(data)):
        exog = manager.get_matrices(spec.design_info, data.iloc[rows], pandas=True)
        _no_missing(len(data.iloc[rows]) - len(exog), formula)
        X[rows] = exog.to_numpy(dtype=float)
    _no_missing(int(np.isnan(y).sum()), formula)
    return y, X, list(spec.columns)


def _no_missing(dropped: int, formula: str) -> None:
    if dropped:
        raise ValueError(f"{dropped} rows with missing values in {formula!r}")


def _blocks(n: int):
    return (slice(start, start + BLOCK_ROWS) for start in range(0, n, BLOCK_ROWS))


class _Groups:
    """Rows' group codes and the per-group sums every fit below is made of."""

    def __init__(self, groups: np.ndarray):
        self.codes, uniques = pd.factorize(pd.Series(groups), sort=False)
        if (self.codes < 0).any():
            raise ValueError("a row has no group")
        self.k = len(uniques)
        self.n = np.bincount(self.codes, minlength=self.k).astype(float)

    def sum(self, values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Per-group sums of a vector (``k``) or of each column of a matrix (``k × p``), each row
        times ``weights`` where given (one column at a time: no weighted copy of the matrix)."""
        if values.ndim == 1:
            return np.bincount(self.codes, weights=values if weights is None else values * weights, minlength=self.k)
        return np.column_stack(
            [
                np.bincount(self.codes, weights=col if weights is None else col * weights, minlength=self.k)
                for col in values.T
            ]
        )


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(a) @ b


# --------------------------------------------------------------------------- mixed model (REML)


@one_blas_thread  # ambiemo.core.blas: small products, many of them
def reml_intercept(y: np.ndarray, X: np.ndarray, names: list[str], groups: np.ndarray) -> GroupedFit:
    """REML fit of ``y = Xβ + u_group + e`` with ``u ~ N(0, σ²γ)``, ``e ~ N(0, σ²)`` (module docstring).

    With ``V_i = I + γ 11ᵀ`` for a group of ``n_i`` rows, ``V_i⁻¹ = I - w_i 11ᵀ`` where
    ``w_i = γ / (1 + n_i γ)`` and ``log|V_i| = log(1 + n_i γ)``; so ``XᵀV⁻¹X``, ``XᵀV⁻¹y`` and
    ``yᵀV⁻¹y`` need only ``XᵀX``, ``Xᵀy``, ``yᵀy``, the group sizes and the groups' column sums.
    """
    g = _Groups(groups)
    N, p = X.shape
    xtx, xty, yty = X.T @ X, X.T @ y, float(y @ y)
    S, t = g.sum(X), g.sum(y)  # per-group column sums of X and y

    def gls(gamma: float):
        w = gamma / (1 + g.n * gamma)
        xvx = xtx - (S * w[:, None]).T @ S
        xvy = xty - (S * w[:, None]).T @ t
        beta = _solve(xvx, xvy)
        rvr = yty - float(w @ t**2) - 2 * float(beta @ xvy) + float(beta @ xvx @ beta)
        return beta, xvx, rvr

    def criterion(theta: float) -> float:  # minus twice the profiled REML log-likelihood, up to a constant
        gamma = np.expm1(theta)
        beta, xvx, rvr = gls(gamma)
        return (N - p) * np.log(rvr) + float(np.log1p(g.n * gamma).sum()) + np.linalg.slogdet(xvx)[1]

    theta = _bounded_minimum(criterion, upper=np.log1p(1e6))
    gamma = float(np.expm1(theta))
    beta, xvx, rvr = gls(gamma)
    scale = rvr / (N - p)
    cov = np.linalg.inv(-_reml_hessian(g, S, y - X @ beta, X, xvx, rvr, gamma, N - p))
    bse = np.sqrt(np.diag(cov)[:p])
    return GroupedFit(
        exog_names=names,
        params=pd.Series(beta, index=names),
        bse=pd.Series(bse, index=names),
        scale=float(scale),
        cov_re=np.array([[gamma * scale]]),
    )


def _bounded_minimum(f, upper: float) -> float:
    """The minimiser of a smooth criterion of one variable on ``[0, upper]``: a grid to bracket
    the best region, then Brent's bounded search within it; the boundary where it is best."""
    grid = np.linspace(0.0, upper, 41)
    values = np.array([f(x) for x in grid])
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    found = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    return float(found.x) if found.fun <= values[i] else float(grid[i])


def _reml_hessian(g: _Groups, S, resid, X, xvx, rvr, gamma, fac) -> np.ndarray:
    """statsmodels' ``MixedLM.hessian`` (REML, one random intercept, covariance parametrised
    directly) in closed form: per group, ``V⁻¹1 = 1 / (1 + nγ)`` makes each of its sums a
    weighted sum of the groups' ``s sᵀ``, ``s r`` and ``r²`` (``s``: X's column sums, ``r``:
    the residuals' sum)."""
    n, a = g.n, 1 / (1 + g.n * gamma)
    r = g.sum(resid)
    fere = -fac * ((S * (r * a**2)[:, None]).sum(axis=0)) / rvr
    B = float((r**2 * a**2).sum())
    D = float((2 * n * r**2 * a**3).sum())
    re = float((n**2 * a**2).sum()) / 2 - 0.5 * fac * (D / rvr - B**2 / rvr**2)
    xtax = (S * (a**2)[:, None]).T @ S
    F = 2 * (S * (n * a**3)[:, None]).T @ S
    ql = np.linalg.solve(xvx, xtax)
    re += 0.5 * (float(np.sum(ql.T * ql)) - float(np.trace(np.linalg.solve(xvx, F))))
    p = X.shape[1]
    hess = np.zeros((p + 1, p + 1))
    hess[:p, :p] = -fac * xvx / rvr
    hess[:p, p] = hess[p, :p] = fere
    hess[p, p] = re
    return hess


# --------------------------------------------------------------------------- GEE (binomial, exchangeable)


@one_blas_thread  # ambiemo.core.blas: small products, many of them
def gee_exchangeable_logit(
    y: np.ndarray, X: np.ndarray, names: list[str], groups: np.ndarray, maxiter: int = 200, ctol: float = 1e-6
) -> GroupedFit:
    """statsmodels' ``GEE(family=Binomial(), cov_struct=Exchangeable()).fit(maxiter)`` from
    per-group sums (module docstring). For a group of ``k`` rows with correlation ``α``,
    ``R⁻¹ = (I - c 11ᵀ) / (1 - α)`` with ``c = α / (1 + α (k - 1))``; with ``a = sqrt(μ(1-μ))``
    every ``DᵀV⁻¹(·)`` is a weighted cross-product over all rows minus ``c``-weighted products of
    the groups' sums of ``a·X`` and of the Pearson residuals."""
    g = _Groups(groups)
    N, p = X.shape
    beta = _logit_irls(y, X)
    alpha, score_norm = 0.0, np.inf
    for step in range(maxiter):
        bmat, score, _ = _gee_terms(y, X, g, beta, alpha)
        beta = beta + _solve(bmat, score)
        score_norm = float(np.sqrt(np.sum(score**2)))
        if score_norm < ctol and step > 0:  # not before the correlation was updated once
            break
        alpha = _exchangeable_alpha(y, X, g, beta, p)
    bmat, _, cmat = _gee_terms(y, X, g, beta, alpha)
    try:
        bmati = np.linalg.inv(bmat)
    except np.linalg.LinAlgError:
        bmati = np.linalg.pinv(bmat)
    cov = bmati @ cmat @ bmati
    return GroupedFit(
        exog_names=names,
        params=pd.Series(beta, index=names),
        bse=pd.Series(np.sqrt(np.diag(cov)), index=names),
        converged=score_norm < ctol,
    )


def _mean(X: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = 1 / (1 + np.exp(-(X @ beta)))
    return mu, mu * (1 - mu)  # the mean and, for the logit link, both dμ/dη and the variance


def _gee_terms(y, X, g: _Groups, beta, alpha):
    """``Σ DᵀV⁻¹D``, ``Σ DᵀV⁻¹(y - μ)`` and ``Σ uuᵀ`` with ``u = DᵀV⁻¹(y - μ)`` per group.
    ``D / sdev`` is ``a·x`` (for the logit link ``dμ/dη`` is the variance), the residuals are
    Pearson's; the cross-product is summed over row blocks."""
    mu, v = _mean(X, beta)
    a = np.sqrt(v)
    pr = (y - mu) / a  # Pearson residuals
    c = alpha / (1 - alpha) / (1 + alpha * (g.n - 1))  # per group
    sax, spr = g.sum(X, a), g.sum(pr)
    xtax = sum(X[b].T @ (X[b] * v[b, None]) for b in _blocks(len(y)))
    bmat = xtax / (1 - alpha) - (sax * c[:, None]).T @ sax
    u = g.sum(X, a * pr / (1 - alpha)) - sax * (c * spr)[:, None]
    return bmat, u.sum(axis=0), u.T @ u


def _exchangeable_alpha(y, X, g: _Groups, beta, ddof: int) -> float:
    """statsmodels' ``Exchangeable.update``: the moment estimate of the within-group correlation
    from the Pearson residuals, each sum scaled by its degrees of freedom."""
    mu, v = _mean(X, beta)
    pr = (y - mu) / np.sqrt(v)
    N = len(y)
    ssr = pr @ pr
    scale = ssr / (N * (N - ddof) / N)
    cross = float(((g.sum(pr) ** 2 - g.sum(pr**2)) / 2).sum()) / scale
    pairs = float((0.5 * g.n * (g.n - 1)).sum())
    return cross / (pairs * (pairs - ddof) / pairs)


def _logit_irls(y: np.ndarray, X: np.ndarray, tol: float = 1e-8, maxiter: int = 100) -> np.ndarray:
    """The independence (GLM) fit GEE starts from: iteratively reweighted least squares, stopped
    as statsmodels' GLM stops, when the deviance changes by less than ``tol`` (relative)."""
    mu = (y + 0.5) / 2  # GLM's binomial starting mean
    eta = np.log(mu / (1 - mu))
    dev = np.inf
    beta = np.zeros(X.shape[1])
    for _ in range(maxiter):
        w = mu * (1 - mu)
        z = eta + (y - mu) / w
        xtwx = sum(X[b].T @ (X[b] * w[b, None]) for b in _blocks(len(y)))
        beta = _solve(xtwx, X.T @ (w * z))
        eta = X @ beta
        mu = 1 / (1 + np.exp(-eta))
        with np.errstate(divide="ignore", invalid="ignore"):
            new = -2 * np.sum(np.where(y > 0, y * np.log(mu), 0) + np.where(y < 1, (1 - y) * np.log1p(-mu), 0))
        if np.abs(dev - new) <= tol * (np.abs(new) + tol):
            break
        dev = new
    return beta
