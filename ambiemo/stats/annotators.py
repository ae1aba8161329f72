"""Annotator-count sensitivity: how many raters a soft label needs, and whether a ranking survives a
redraw of them.

For each corpus with ratings, ``k`` raters are drawn per utterance for ``k = 1 … max`` (an utterance
with fewer than ``k`` raters keeps all of its own; ``n_with_k`` counts those with at least ``k``),
``repeats`` times, seeded (params ``seed``). A rater is a vote vector over the label set: from the
ratings table (``ambiemo.data.ratings``: a rater's primary ratings, their weights summed per label)
where the corpus has one, else from the manifest's integer vote counts as exchangeable anonymous
raters (one one-hot vector per vote; an utterance with fractional counts cannot be split into raters
and is left out, counted in ``n_fractional``). One random order of each utterance's raters per repeat
gives the nested draws for every ``k`` (each ``k``-subset uniform without replacement).

Per ``k`` and repeat: the soft labels' mean entropy (bits); the split-half ceiling (the mean JS
distance between the soft labels of the first ``⌊k/2⌋`` drawn raters and of the rest, utterances
with at least two drawn raters); every cell's headline metric (mean JS distance of its answers to
the ``k``-rater soft labels; each strategy at its largest budget); Kendall's τ-b of the cells'
ranking against the all-raters ranking (scipy); and the share of the run's main comparisons (each
strategy against the model's baseline) whose sign agrees with the all-raters sign. Each is reported
as the mean over repeats with a percentile interval (params ``stats.ci_level``-free: 2.5–97.5 %).

``stable_from(table)`` names, per corpus, the smallest ``k`` from which the mean τ stays at or above
``TAU_STABLE`` for every larger ``k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ambiemo.core.config import settings
from ambiemo.core.params import Stats
from ambiemo.scoring import metrics as M
from ambiemo.scoring.references import CEILING_REFERENCES
from ambiemo.scoring.schema import scoring_params

# params stats.annotator_repeats and stats.annotator_tau_stable (ambiemo.core.params.Stats), stated there once
REPEATS = Stats.model_fields["annotator_repeats"].default
TAU_STABLE = Stats.model_fields["annotator_tau_stable"].default
COLUMNS = (
    "dataset",
    "k",
    "quantity",
    "model",
    "strategy",
    "budget",
    "mean",
    "ci_low",
    "ci_high",
    "repeats",
    "n_utterances",
    "n_with_k",
)


def raters_from_counts(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(raters, fractional)``: per utterance its votes as one-hot rater vectors, shape
    ``(n, max_raters, L)`` padded with NaN, and the mask of utterances with non-integer counts
    (left out: all NaN)."""
    votes = np.asarray(votes, dtype=float)
    fractional = ~np.isclose(votes, np.round(votes)).all(axis=1)
    counts = np.where(fractional[:, None], 0, np.round(votes)).astype(int)
    n_raters = counts.sum(axis=1)
    width = max(int(n_raters.max(initial=0)), 1)
    out = np.full((len(votes), width, votes.shape[1]), np.nan)
    eye = np.eye(votes.shape[1])
    for i in np.flatnonzero(n_raters):
        out[i, : n_raters[i]] = eye[np.repeat(np.arange(votes.shape[1]), counts[i])]
    return out, fractional


def raters_from_table(ratings: pd.DataFrame, utt_ids, labels) -> np.ndarray:
    """Per utterance of ``utt_ids`` its raters' vote vectors from a ratings table (primary ratings
    with a label; weights summed per rater and label), padded with NaN."""
    r = ratings[(ratings["kind"] == "primary") & ratings["label"].notna() & (ratings["weight"] > 0)]
    r = r[r["label"].isin(labels)]
    wide = r.pivot_table(index=["utt_id", "rater"], columns="label", values="weight", aggfunc="sum", fill_value=0.0)
    wide = wide.reindex(columns=list(labels), fill_value=0.0)
    per = {u: g.to_numpy(dtype=float) for u, g in wide.groupby(level="utt_id")}
    width = max([len(v) for v in per.values()] or [1])
    out = np.full((len(utt_ids), width, len(labels)), np.nan)
    for i, u in enumerate(utt_ids):
        v = per.get(u)
        if v is not None:
            out[i, : len(v)] = v
    return out


def _soft(v: np.ndarray) -> np.ndarray:
    s = v.sum(axis=1, keepdims=True)
    return v / np.where(s > 0, s, 1.0)


class Draws:
    """One repeat's random order of each utterance's raters and the cumulative votes along it."""

    def __init__(self, raters: np.ndarray, rng: np.random.Generator):
        valid = ~np.isnan(raters).any(axis=2)
        self.n = valid.sum(axis=1)
        keys = np.where(valid, rng.random(valid.shape), np.inf)
        order = np.argsort(keys, axis=1, kind="stable")
        shuffled = np.take_along_axis(np.nan_to_num(raters), order[:, :, None], axis=1)
        self.cum = np.cumsum(shuffled, axis=1)

    def votes(self, k: int) -> np.ndarray:
        """The first ``min(k, n_i)`` raters' summed votes per utterance."""
        take = np.clip(np.minimum(k, self.n), 1, None) - 1
        return self.cum[np.arange(len(self.n)), take]

    def halves(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The two halves' votes (first ``⌊k_i/2⌋`` raters, the rest) and the rows with k_i ≥ 2."""
        ki = np.minimum(k, self.n)
        ok = ki >= 2
        h = np.clip(ki // 2, 1, None) - 1
        first = self.cum[np.arange(len(self.n)), h]
        return first, self.votes(k) - first, ok


def _cells(scores: pd.DataFrame, dataset: str, labels) -> dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]:
    """Per cell (model, strategy, budget) at its largest budget: the row positions in the dataset's
    utterance order and the answers, rows with a distribution only."""
    s = scores[(scores["dataset"] == dataset) & ~scores["strategy"].isin(CEILING_REFERENCES)]
    s = s[s["model"] != "reference"]
    top = s.groupby(["model", "strategy"])["budget"].transform("max")
    s = s[s["budget"] == top]
    out = {}
    for (model, strategy, budget), g in s.groupby(["model", "strategy", "budget"], sort=True):
        q = g[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
        ok = np.isfinite(q).all(axis=1)
        out[(str(model), str(strategy), int(budget))] = (g["utt_id"].to_numpy()[ok], q[ok])
    return out


def annotator_curve(
    raters: np.ndarray,
    utt_ids,
    scores: pd.DataFrame,
    dataset: str,
    labels,
    *,
    repeats: int = REPEATS,
    seed: int = 0,
    baseline: str = "baseline",
    base: Any = "e",
) -> pd.DataFrame:
    """The table of the module docstring for one corpus."""
    position = {u: i for i, u in enumerate(utt_ids)}
    has = ~np.isnan(raters).any(axis=2)
    keep = has.sum(axis=1) > 0
    cells = {
        key: (np.array([position[u] for u in ids]), q)
        for key, (ids, q) in _cells(scores, dataset, labels).items()
        if all(u in position for u in ids)
    }
    cells = {key: (rows[keep[rows]], q[keep[rows]]) for key, (rows, q) in cells.items()}
    full = _soft(np.nan_to_num(raters).sum(axis=1))
    full_js = {key: float(M.js_distance(full[rows], q, base=base).mean()) for key, (rows, q) in cells.items()}
    keys = sorted(cells)
    pairs = [(b, key) for key in keys for b in keys if b[0] == key[0] and b[1] == baseline and key[1] != baseline]
    max_k = int(has.sum(axis=1).max(initial=0))
    rng = np.random.default_rng(seed)
    results: dict[tuple, list[float]] = {}
    for _ in range(repeats):
        d = Draws(raters, rng)
        for k in range(1, max_k + 1):
            soft = _soft(d.votes(k))
            results.setdefault((k, "entropy_bits", "", "", -1), []).append(float(M.entropy_bits(soft[keep]).mean()))
            a, b, ok = d.halves(k)
            ok &= keep
            ceiling = float(M.js_distance(_soft(a[ok]), _soft(b[ok]), base=base).mean()) if ok.any() else np.nan
            results.setdefault((k, "ceiling_js", "", "", -1), []).append(ceiling)
            js = {key: float(M.js_distance(soft[rows], q, base=base).mean()) for key, (rows, q) in cells.items()}
            for key, v in js.items():
                results.setdefault((k, "js", *key), []).append(v)
            if len(keys) >= 2:
                tau = stats.kendalltau([js[x] for x in keys], [full_js[x] for x in keys]).statistic
                results.setdefault((k, "tau", "", "", -1), []).append(float(tau))
            if pairs:
                agree = [np.sign(js[b] - js[s]) == np.sign(full_js[b] - full_js[s]) for b, s in pairs]
                results.setdefault((k, "comparisons_agree", "", "", -1), []).append(float(np.mean(agree)))
    n_with = {k: int((has.sum(axis=1) >= k).sum()) for k in range(1, max_k + 1)}
    rows = []
    for (k, quantity, model, strategy, budget), values in results.items():
        v = np.asarray(values, dtype=float)
        finite = v[np.isfinite(v)]
        rows.append(
            {
                "dataset": dataset,
                "k": k,
                "quantity": quantity,
                "model": model,
                "strategy": strategy,
                "budget": budget,
                "mean": float(finite.mean()) if finite.size else np.nan,
                "ci_low": float(np.percentile(finite, 2.5)) if finite.size else np.nan,
                "ci_high": float(np.percentile(finite, 97.5)) if finite.size else np.nan,
                "repeats": int(finite.size),
                "n_utterances": int(keep.sum()),
                "n_with_k": n_with[k],
            }
        )
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    return out.sort_values(["quantity", "model", "strategy", "k"], kind="stable").reset_index(drop=True)


def stable_from(table: pd.DataFrame, threshold: float = TAU_STABLE) -> dict[str, int | None]:
    """Per corpus, the smallest ``k`` from which the mean τ stays ≥ ``threshold`` (None: never)."""
    out: dict[str, int | None] = {}
    for dataset, g in table[table["quantity"] == "tau"].groupby("dataset"):
        g = g.sort_values("k")
        ok = (g["mean"] >= threshold).to_numpy()
        tail = np.flatnonzero(~ok)
        out[str(dataset)] = (
            int(g["k"].iloc[0])
            if not tail.size
            else (int(g["k"].iloc[tail[-1] + 1]) if tail[-1] + 1 < len(g) else None)
        )
    return out


def annotators_table(
    scores: pd.DataFrame, params: Mapping[str, Any], layout: Any, datasets: Sequence[str] | None = None
) -> pd.DataFrame:
    """The stats stage's ``annotators`` table over every dataset of the scores (or ``datasets``)
    whose prepared manifest is there: raters from its ratings table where written, else from the
    manifest's vote counts."""
    from ambiemo.data.manifest import read_manifest
    from ambiemo.data.ratings import read_ratings

    st = settings(dict(params or {}), "stats")
    repeats = int(st["annotator_repeats"])
    seed = int((params or {}).get("seed", 0) or 0)
    base = scoring_params(params)["js_base"]
    parts = []
    for dataset in sorted(scores["dataset"].astype(str).unique()) if datasets is None else datasets:
        path = layout.manifest(dataset)
        if not path.is_file():
            continue
        m = read_manifest(path)
        labels = list(m.labels)
        ids = m.df["utt_id"].astype(str).tolist()
        rpath = layout.ratings(dataset)
        if rpath.is_file():
            raters, source, n_frac = raters_from_table(read_ratings(rpath), ids, labels), "ratings", 0
        else:
            raters, frac = raters_from_counts(m.df[[f"votes_{x}" for x in labels]].to_numpy(dtype=float))
            source, n_frac = "vote counts", int(frac.sum())
        t = annotator_curve(
            raters,
            ids,
            scores,
            dataset,
            labels,
            repeats=repeats,
            seed=seed,
            base=base,
            baseline=str(st.get("baseline", "baseline")),
        )
        parts.append(t.assign(source=source, n_fractional=n_frac))
    if not parts:
        return pd.DataFrame(columns=[*COLUMNS, "source", "n_fractional"])
    return pd.concat(parts, ignore_index=True)
