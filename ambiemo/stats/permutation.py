"""Paired comparisons that respect the design: speakers, not utterances, are the unit of chance.

Utterances of one speaker share a voice, a recording set-up and often a script, so a strategy's
gain over the baseline is correlated within a speaker. A test that treats utterances as
independent then finds "significant" gains that are only one speaker's luck. The CIs already
resample whole speakers (``ambiemo.stats``); these tests permute at the same level.

**Cluster sign-flip test.** For paired differences ``d_i`` (strategy − baseline, per utterance)
in clusters ``c`` (speakers), the statistic is the mean difference ``T = Σ_c S_c / n`` with
``S_c`` the sum of ``d`` over cluster ``c``. Under the null hypothesis that each speaker's summed
difference is symmetric about zero (the two arms are exchangeable within a speaker), flipping the
sign of whole ``S_c`` leaves the distribution of ``T`` unchanged. The two-sided p-value is the
share of sign patterns with ``|T*| ≥ |T|``: over all ``2^C`` patterns when ``2^C ≤ n_resamples``
(exact), else over ``n_resamples`` random patterns plus the observed one,
``(1 + #{|T*| ≥ |T|}) / (1 + n_resamples)``. With ``C`` clusters no p-value is below
``2 / 2^C``: 5 speakers cannot show significance at 0.05, and the table says so (``min_p``).
The unclustered test is the same with every utterance its own cluster.

**Many clusters: the normal approximation.** From params ``stats.sign_flip_normal_from`` clusters
(5,000; the unclustered test of a corpus at its real size, or a corpus without speakers), drawing
``n_resamples`` patterns costs patterns × clusters random signs per comparison, which at the
study's size was most of the stats stage. There the p-value comes from the sign-flip
distribution's normal approximation instead: ``T*`` has mean 0 and variance ``V = Σ_c S_c²``
exactly, and a sum of thousands of independent symmetric terms is normal to O(1/C) (the
distribution is symmetric, so the skewness term of its Edgeworth expansion vanishes). ``p = 2 Φ̄((|T|
− δ) / √V)`` with the continuity correction ``δ`` the smallest non-zero ``|S_c|`` (half the lattice
step where the ``S_c`` take the values ``{−a, 0, a}``, as a difference of correctness does;
negligible, and conservative, otherwise). ``tests/stats/test_permutation.py`` bounds it against
the exact binomial distribution and against 40,000 random patterns. The paired table's note says
which rows it served, and their ``min_p`` is 0 (no floor of 1 / (1 + n_resamples)).

**Effect sizes**: the mean difference; Cohen's ``d_z`` (mean / SD of the differences); the
matched-pairs rank-biserial correlation (Kerby 2014); and ``gain``, the mean difference signed so
that positive means better (``ambiemo.scoring.metrics.METRICS`` says which way each metric points).

**Holm correction** (``holm``: statsmodels' ``multipletests`` arithmetic) within each family: by default the
comparisons of one dataset × model × metric (every strategy and budget against the baseline).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ambiemo.scoring.gains import HIGHER_IS_BETTER, KEY_COLUMNS, direction
from ambiemo.stats.gains import paired_differences

N_RESAMPLES = 10_000
ALPHA = 0.05
# Differences closer than this to the observed statistic count as equal (rounding in sums).
_TIE_RTOL = 1e-10


COLUMNS = [
    *KEY_COLUMNS,
    "n_pairs",
    "n_dropped",
    "n_clusters",
    "mean_diff",
    "gain",
    "cohens_dz",
    "rank_biserial",
    "p_clustered",
    "p_unclustered",
    "min_p",
    "exact",
    "family",
    "p_clustered_holm",
    "p_unclustered_holm",
    "significant",
]


# Sign draws held at once by the random test: (patterns in a chunk) × clusters ≤ this, so that an
# unclustered test of many utterances never holds a patterns × utterances matrix.
_MAX_SIGNS = 1 << 21


def sign_flip_pvalues(
    sums: np.ndarray, n_resamples: int = N_RESAMPLES, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, bool]:
    """Two-sided sign-flip p-values for many datasets at once.

    ``sums`` is (datasets, clusters): each dataset's per-cluster sums of differences (for one
    dataset pass shape (1, C)). The same sign patterns serve every row, which changes nothing for
    any single row's test. Random patterns are drawn in chunks (the generator's stream is the
    same as one draw of them all). Returns the p-values and whether they are exact.
    """
    sums = np.atleast_2d(np.asarray(sums, dtype=float))
    rng = rng or np.random.default_rng(0)
    observed = np.abs(sums.sum(axis=1))
    threshold = observed[:, None] * (1 - _TIE_RTOL) - 1e-300
    n_clusters = sums.shape[1]
    if n_clusters <= 20 and 2**n_clusters <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n_clusters)))
        return (np.abs(sums @ signs.T) >= threshold).sum(axis=1) / len(signs), True
    hits = np.zeros(len(sums), dtype=np.int64)
    step = max(1, _MAX_SIGNS // max(n_clusters, 1))
    total = sums.sum(axis=1)
    for start in range(0, n_resamples, step):
        flips = sign_flips(rng, min(step, n_resamples - start), n_clusters)
        # Σ s_c S_c with s = 1 − 2·flip: the total less twice the flipped sums
        hits += (np.abs(total[:, None] - 2.0 * (sums @ flips.T)) >= threshold).sum(axis=1)
    return (1 + hits) / (1 + n_resamples), False


def sign_flips(rng: np.random.Generator, n_patterns: int, n_clusters: int) -> np.ndarray:
    """(patterns, clusters) float array, 1.0 where a sign is flipped: exactly the patterns
    ``rng.choice((1.0, -1.0), size=(n_patterns, n_clusters)) == -1.0`` draws, and the generator left
    in the same state, without ``choice``'s index array (a 16,000-utterance test with 2,000 patterns:
    0.26 s with ``choice``, 0.15 s with these).

    ``choice`` of two values draws ``integers(0, 2)``: for each sign one 32-bit output of the bit
    generator (the low half of a 64-bit output, then its high half, the high half kept for the next
    call when one is left over), of which Lemire's method keeps the top bit. Drawing the 64-bit
    outputs at once and reading those bits gives the same signs without a Python-level call per
    sign; ``tests/stats/test_permutation.py`` checks it against ``choice`` itself.
    """
    count = n_patterns * n_clusters
    state = rng.bit_generator.state
    bits = np.empty(count, dtype=np.uint8)
    done = 0
    if count and state.get("has_uint32"):  # a high half left over from an earlier 32-bit draw
        bits[0] = (int(state["uinteger"]) >> 31) & 1
        rng.bit_generator.state = {**state, "has_uint32": 0}
        done = 1
    words = rng.bit_generator.random_raw((count - done + 1) // 2)
    halves = np.empty(2 * len(words), dtype=np.uint8)
    halves[0::2] = (words >> np.uint64(31)) & np.uint64(1)
    halves[1::2] = words >> np.uint64(63)
    bits[done:] = halves[: count - done]
    if len(words):  # the last word's high half is kept, for the next draw where it was not used
        state = rng.bit_generator.state
        high = int(words[-1] >> np.uint64(32))
        rng.bit_generator.state = {**state, "has_uint32": int((count - done) % 2), "uinteger": high}
    return bits.reshape(n_patterns, n_clusters).astype(float)


def sign_flip_normal(sums: np.ndarray) -> np.ndarray:
    """Two-sided sign-flip p-values from the normal approximation (module docstring), per row of
    ``sums`` (datasets × clusters, as ``sign_flip_pvalues`` takes them)."""
    sums = np.atleast_2d(np.asarray(sums, dtype=float))
    magnitude = np.abs(sums)
    step = np.where(magnitude > 0, magnitude, np.inf).min(axis=1)
    step = np.where(np.isfinite(step), step, 0.0)
    variance = (sums**2).sum(axis=1)
    excess = np.maximum(np.abs(sums.sum(axis=1)) - step, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(variance > 0, excess / np.sqrt(variance), 0.0)
    return np.minimum(1.0, 2.0 * sps.norm.sf(z))


def cluster_sums(d: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Sum of ``d`` per cluster (clusters in sorted order, so that the sums, and the sign patterns
    drawn for them, do not depend on the order of the rows)."""
    codes, uniques = pd.factorize(np.asarray(clusters), sort=True)
    return np.bincount(codes, weights=np.asarray(d, dtype=float), minlength=len(uniques))


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of ``d`` (zeros left out, as in Wilcoxon)."""
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    r = sps.rankdata(np.abs(d))
    return float((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def _rng(seed: int, *key: object) -> np.random.Generator:
    """A generator per comparison, so that a p-value does not depend on which others ran."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, key)).encode())])


def paired_test(
    d: np.ndarray,
    clusters: np.ndarray,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    key: Sequence = (),
    normal_from: int | None = None,
) -> dict[str, Any]:
    """Clustered and unclustered sign-flip tests and effect sizes of one set of differences;
    a test over ``normal_from`` clusters or more takes the normal approximation (module docstring),
    said in ``normal`` (the tests that did: ``clustered``, ``unclustered``)."""
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        return {"n_pairs": 0, "n_clusters": 0}
    sums = cluster_sums(d, clusters)
    normal = (
        []
        if normal_from is None
        else [k for k, n in (("clustered", sums.size), ("unclustered", d.size)) if n >= normal_from]
    )
    if "clustered" in normal:
        p_c, exact = sign_flip_normal(sums), False
    else:
        p_c, exact = sign_flip_pvalues(sums[None, :], n_resamples, _rng(seed, "clustered", *key))
    if "unclustered" in normal:
        p_u = sign_flip_normal(d)
    else:
        p_u, _ = sign_flip_pvalues(d[None, :], n_resamples, _rng(seed, "unclustered", *key))
    sd = d.std(ddof=1) if d.size > 1 else np.nan
    return {
        "n_pairs": int(d.size),
        "n_clusters": int(sums.size),
        "mean_diff": float(d.mean()),
        "cohens_dz": float(d.mean() / sd) if sd and np.isfinite(sd) else np.nan,
        "rank_biserial": rank_biserial(d),
        "p_clustered": float(p_c[0]),
        "p_unclustered": float(p_u[0]),
        "min_p": float(2.0 / 2**sums.size) if exact else 0.0 if "clustered" in normal else 1.0 / (1 + n_resamples),
        "exact": bool(exact),
        "normal": normal,
    }


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
    """Holm-adjusted p-values; NaN stays NaN. The project's only Holm correction (``ambiemo.stats.paired``
    uses it too).

    The same arithmetic as statsmodels' ``multipletests(p, method="holm")`` (the sorted p-values
    times m, m − 1, ..., 1, their running maximum, capped at 1), which the tests compare it with:
    ``multipletests`` runs ``gc.collect()`` on every call, which at the study's size (one family per
    dataset × model × metric, a heap of millions of score rows) cost more than the tests it corrects.
    ``alpha`` does not change an adjusted p-value; it is kept for the callers that pass it.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        order = np.argsort(p[ok])
        ranked = p[ok][order] * np.arange(int(ok.sum()), 0, -1)
        adjusted = np.empty_like(ranked)
        adjusted[order] = np.minimum(np.maximum.accumulate(ranked), 1.0)
        out[ok] = adjusted
    return out


def _comparisons(scores, metrics, baseline, cluster, n_resamples, seed):
    for key, d, clusters, dropped in paired_differences(scores, metrics, baseline, cluster):
        row = paired_test(d, clusters, n_resamples=n_resamples, seed=seed, key=key)
        sign = direction(key[-1])
        yield {
            **dict(zip(KEY_COLUMNS, key, strict=True)),
            **row,
            "n_dropped": dropped,
            "gain": sign * row.get("mean_diff", np.nan),
        }


def clustered_comparisons(
    scores: pd.DataFrame,
    metrics: Sequence[str] = ("js",),
    *,
    baseline: str = "baseline",
    cluster: str = "speaker",
    family: Sequence[str] = ("dataset", "model", "metric"),
    alpha: float = ALPHA,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Every strategy × budget against the baseline (its smallest budget), per dataset × model,
    on the utterances both have; pairs with a NaN on either side are dropped and counted.

    ``scores`` is the per-utterance scores table (``dataset, model, strategy, budget, utt_id``,
    the ``cluster`` column and the ``metrics`` columns). ``significant`` is the clustered test
    after Holm at ``alpha``. Columns: ``COLUMNS``.
    """
    missing = [c for c in ("dataset", "model", "strategy", "budget", "utt_id", cluster, *metrics) if c not in scores]
    if missing:
        raise KeyError(f"clustered_comparisons: the scores have no column(s) {missing}")
    unknown = [m for m in metrics if m not in HIGHER_IS_BETTER]
    if unknown:
        raise KeyError(f"clustered_comparisons: no direction known for metric(s) {unknown}")
    out = pd.DataFrame(list(_comparisons(scores, metrics, baseline, cluster, n_resamples, seed)))
    if out.empty:
        return pd.DataFrame(columns=COLUMNS)
    out["family"] = out[list(family)].astype(str).agg("/".join, axis=1)
    for col in ("p_clustered", "p_unclustered"):
        out[f"{col}_holm"] = np.nan
        for idx in out.groupby("family").groups.values():
            out.loc[idx, f"{col}_holm"] = holm(out.loc[idx, col], alpha)
    out["significant"] = out["p_clustered_holm"] < alpha
    return out.reindex(columns=COLUMNS)


def false_positive_rates(
    n_datasets: int = 500,
    n_speakers: int = 10,
    per_speaker: int = 20,
    speaker_sd: float = 1.0,
    noise_sd: float = 1.0,
    alpha: float = ALPHA,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Mapping[str, float]:
    """Simulated null datasets with speaker effects: the share each test calls significant.

    Each dataset's differences are ``u_speaker + e_utterance`` with both zero-mean normal: no
    true gain, but utterances of a speaker move together (ICC = speaker_sd² / total variance).
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, speaker_sd, (n_datasets, n_speakers, 1))
    d = u + rng.normal(0.0, noise_sd, (n_datasets, n_speakers, per_speaker))
    p_c, exact = sign_flip_pvalues(d.sum(axis=2), n_resamples, rng)
    p_u, _ = sign_flip_pvalues(d.reshape(n_datasets, -1), n_resamples, rng)
    return {
        "n_datasets": n_datasets,
        "icc": speaker_sd**2 / (speaker_sd**2 + noise_sd**2),
        "clustered": float((p_c < alpha).mean()),
        "unclustered": float((p_u < alpha).mean()),
        "clustered_exact": exact,
    }
