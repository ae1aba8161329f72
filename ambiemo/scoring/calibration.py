"""Calibrated readouts as a yardstick: how much of a cell's distance to the annotators is calibration.

Zero-shot answer distributions are narrower than human ones, so a strategy that only flattens its
answer "gains" on JS without knowing more. Each cell's answers are recalibrated by a monotone
reshaping fitted on *other speakers only*, and the calibrated metric is reported beside the raw one:

- ``temperature``: ``q_T ∝ q^(1/T)`` (power scaling of the probabilities; ``T > 1`` flattens, so an
  answer that is the truth sharpened as ``p³`` is undone by ``T = 3``);
- ``temperature+prior``: ``(1 − w)·q_T + w·π``, a mixture of the scaled answer with the label prior
  ``π`` (the mean human distribution of the fitting speakers).

Both keep each answer's label ranking (``q^(1/T)`` is monotone; the mixture adds the same ``π`` to
every answer), and are fitted to minimise the mean headline metric (the JS distance at params
``scoring.js_base``) with scipy's bounded optimisers.

Cross-fitting: the speakers are shuffled (params ``seed``) and dealt into ``folds`` groups; each
group's utterances are calibrated with the parameters fitted on the other groups' utterances, so no
utterance's own speaker is in its fit. Without speakers each utterance is its own group (counted in
``note``). A cell needs at least two speaker groups; else it is reported with NaN and a note. A fold's
two parameters are fitted on at most params ``scoring.calibration_fit_rows`` of the other folds'
utterances (a uniform draw without replacement, seeded by params ``seed`` and the fold; all of them
in a smaller cell): two parameters are pinned by a few thousand answers, and a fit on every row of a
study-size cell would cost minutes per cell. The draw is counted in ``note``.

``calibration_table`` has one row per cell × method × ambiguity (``all``, then each bin): ``js_raw``,
``js_calibrated``, the fitted parameters (``T``, ``w``: the mean over folds, with ``T_min``/``T_max``),
``ceiling_js`` (the human split-half, else leave-one-out, ceiling of the dataset and bin from the
scores) and ``gap_closed`` =
``(js_raw − js_calibrated) / (js_raw − ceiling_js)``, the share of the gap to the human ceiling that
calibration closes. ``calibrated_scores`` gives the per-utterance calibrated JS for the paired tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize

from ambiemo.core.params import Scoring
from ambiemo.scoring import metrics as M
from ambiemo.scoring.references import CEILING_REFERENCES
from ambiemo.scoring.schema import ALL, KEYS, labels_of, scoring_params

# The number of speaker folds is params scoring.calibration_folds (ambiemo.core.params.Scoring).
FOLDS = Scoring.model_fields["calibration_folds"].default
METHODS = ("temperature", "temperature+prior")
LOG_T_BOUNDS = (np.log(0.05), np.log(50.0))  # T from 1/20 (sharper) to 50 (nearly uniform)
_TINY = 1e-300  # q^(1/T) of a zero stays zero; this only guards 0/0 in the renormalisation


def temperature_scale(q: np.ndarray, t: float, logq: np.ndarray | None = None) -> np.ndarray:
    """``q^(1/T)`` renormalised per row; zeros stay zero. ``logq``: ``_log(q)``, where a fit has it."""
    z = (_log(q) if logq is None else logq) / t
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / np.maximum(e.sum(axis=1, keepdims=True), _TINY)


def _log(q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), -np.inf)


def apply(q: np.ndarray, t: float, w: float, prior: np.ndarray, logq: np.ndarray | None = None) -> np.ndarray:
    return (1.0 - w) * temperature_scale(q, t, logq) + w * prior


def fit(
    p: np.ndarray, q: np.ndarray, method: str, base: Any = "e", t0: float | None = None
) -> tuple[float, float, np.ndarray]:
    """``(T, w, prior)`` minimising the mean JS distance of ``apply(q, …)`` to ``p``. The
    ``temperature+prior`` search starts from the ``temperature`` fit's T: ``t0`` where the caller
    has it (the same rows' fit), else fitted here."""
    prior = p.mean(axis=0)
    p, q = M.check_distributions(p, "p (human)"), M.check_distributions(q, "q (model)")
    logq, scale = _log(q), math.log(M.log_base(base))  # once per fit, not once per step of the search

    def loss(t: float, w: float) -> float:  # the inputs were checked once above, not at every step
        return float(M.js_distance_checked(p, apply(q, t, w, prior, logq), scale).mean())

    if method == "temperature":
        res = optimize.minimize_scalar(lambda lt: loss(np.exp(lt), 0.0), bounds=LOG_T_BOUNDS, method="bounded")
        return float(np.exp(res.x)), 0.0, prior
    if method == "temperature+prior":
        if t0 is None:
            t0, _, _ = fit(p, q, "temperature", base)
        res = optimize.minimize(
            lambda x: loss(np.exp(x[0]), x[1]),
            x0=[np.log(t0), 0.05],
            bounds=[LOG_T_BOUNDS, (0.0, 1.0)],
            method="Nelder-Mead",  # the mean JS *distance* has no usable gradient where it nears 0
            options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 2000},
        )
        return float(np.exp(res.x[0])), float(res.x[1]), prior
    raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")


def speaker_folds(speakers: Sequence[str], folds: int, seed: int) -> tuple[np.ndarray, str]:
    """Fold index per utterance: the speakers shuffled by ``seed`` and dealt round-robin. Utterances
    without a speaker are each their own group (said in the returned note)."""
    spk = np.asarray([str(s) for s in speakers], dtype=object)
    missing = spk == ""
    note = ""
    if missing.any():
        spk = spk.copy()
        spk[missing] = [f"\0utt{i}" for i in np.flatnonzero(missing)]
        note = f"{int(missing.sum())} utterance(s) without a speaker are their own group"
    groups = np.unique(spk)  # sorted: the shuffle, not the input order, decides the folds
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of = {g: i % folds for i, g in zip(range(len(groups)), groups[order], strict=True)}
    return np.array([fold_of[s] for s in spk], dtype=int), note


def cross_fit(
    p: np.ndarray,
    q: np.ndarray,
    speakers: Sequence[str],
    method: str,
    folds: int = FOLDS,
    seed: int = 0,
    base="e",
    fit_rows: int | None = None,
    fits: dict[int, tuple[float, float, np.ndarray]] | None = None,
    starts: Mapping[int, float] | None = None,
) -> tuple[np.ndarray, list[tuple[float, float]], str]:
    """The calibrated answers, each from a fit on the other folds' speakers (at most ``fit_rows`` of
    them, a draw seeded by ``seed`` and the fold); the per-fold ``(T, w)``. ``fits``: each fold's
    ``(T, w, prior)``; a fold it holds (fitted before on the same rows with the same settings: the
    aggregate stage's ``calibration_folds``) is applied, not fitted again, and each fold fitted here
    is put there. ``starts``: each fold's T to start a search from (``fit``'s ``t0``: the
    ``temperature`` fits of the same rows, for ``temperature+prior``)."""
    fold, note = speaker_folds(speakers, folds, seed)
    out = np.full_like(q, np.nan)
    fitted = []
    present = np.unique(fold)
    if len(present) < 2:
        return out, fitted, (note + "; " if note else "") + "fewer than two speaker groups: not calibrated"
    drawn = 0
    for f in present:
        test = fold == f
        train = np.flatnonzero(~test)
        drawn += int(fit_rows is not None and len(train) > fit_rows)
        if fits is not None and int(f) in fits:
            t, w, prior = fits[int(f)]
        else:
            if fit_rows is not None and len(train) > fit_rows:
                train = np.sort(np.random.default_rng([seed, int(f)]).choice(train, fit_rows, replace=False))
            t, w, prior = fit(p[train], q[train], method, base, (starts or {}).get(int(f)))
            if fits is not None:
                fits[int(f)] = (t, w, prior)
        out[test] = apply(q[test], t, w, prior)
        fitted.append((t, w))
    if drawn:
        note = (note + "; " if note else "") + f"{drawn} fold fit(s) on a draw of {fit_rows} utterances"
    return out, fitted, note


def ceilings(scores: pd.DataFrame) -> dict[tuple[str, str], float]:
    """The human ceiling's mean JS per (dataset, ambiguity bin or "all"): split-half where the scores
    have it, else leave-one-out."""
    out: dict[tuple[str, str], float] = {}
    for name in reversed(CEILING_REFERENCES):  # split-half overrides loo, loo overrides loo-counts
        rows = scores[(scores["strategy"] == name) & scores["js"].notna()]
        for dataset, g in rows.groupby("dataset"):
            out[(str(dataset), ALL)] = float(g["js"].mean())
            if "ambiguity" in g:
                for level, b in g.groupby("ambiguity"):
                    out[(str(dataset), str(level))] = float(b["js"].mean())
    return out


def calibration_table(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    ceiling: dict | None = None,
    methods: Sequence[str] = METHODS,
    folds_table: pd.DataFrame | None = None,
) -> Calibration:
    """``(table, calibrated, folds)``: one row per cell × method (module docstring), the
    per-utterance calibrated JS per cell × method (``KEYS``, ``utt_id``, ``speaker``, ``method``,
    ``js_calibrated``), and each fold's fit (``FOLD_COLUMNS`` and ``prior_<label>``).
    ``ceiling``: the human ceilings where ``scores`` holds no reference rows (a chunk of one model);
    ``methods``: those of ``METHODS`` wanted (the stats stage's paired test needs one);
    ``folds_table``: an earlier ``folds`` of the same scores and settings, whose fits are applied
    instead of fitted again (the stats stage reads the aggregate stage's)."""
    sp = scoring_params(params)
    base = sp["js_base"]
    folds = int(sp["calibration_folds"])
    seed = int((params or {}).get("seed", 0) or 0)
    ceiling = ceilings(scores) if ceiling is None else ceiling
    cells = scores[~scores["strategy"].isin(CEILING_REFERENCES) & (scores["model"] != "reference")]
    rows, per_utt, fold_rows = [], [], []
    known = _known_fits(folds_table)
    for key, g in cells.groupby(list(KEYS), sort=True):
        labels = [x for x in labels_of(g, "true_") if g[f"true_{x}"].notna().all()]
        p = g[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
        q = g[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
        has = np.isfinite(q).all(axis=1)
        p, q, sub = p[has], q[has], g[has]
        raw_utt = M.js_distance(p, q, base=base)
        levels = sub["ambiguity"].astype(str).to_numpy() if "ambiguity" in sub else np.full(len(sub), ALL)
        fitted_by: dict[str, dict] = {}  # per method, each fold's fit
        for method in methods:
            speakers, fit_rows = sub["speaker"].astype(str).tolist(), int(sp["calibration_fit_rows"])
            fits = {
                f: (t, w, np.array([pr[f"prior_{x}"] for x in labels]))
                for f, (t, w, pr) in known.get((*key, method), {}).items()
            }
            # temperature+prior starts from each fold's temperature fit where that method ran first
            starts = {f: t for f, (t, _, _) in fitted_by.get("temperature", {}).items()}
            fitted_by[method] = fits
            cal, fitted, note = cross_fit(p, q, speakers, method, folds, seed, base, fit_rows, fits, starts)
            fold_rows += [
                {**dict(zip(KEYS, key, strict=True)), "method": method, "fold": f, "T": t, "w": w}
                | {f"prior_{x}": float(v) for x, v in zip(labels, prior, strict=True)}
                for f, (t, w, prior) in sorted(fits.items())
            ]
            ok = np.isfinite(cal).all(axis=1)
            js = np.full(len(p), np.nan)
            js[ok] = M.js_distance(p[ok], cal[ok], base=base)
            ts = [t for t, _ in fitted] or [np.nan]
            fit_cols = {
                "method": method,
                "T": float(np.mean(ts)),
                "T_min": float(np.min(ts)),
                "T_max": float(np.max(ts)),
                "w": float(np.mean([w for _, w in fitted])) if fitted else np.nan,
                "folds": len(fitted),
                "note": note,
            }
            for level in [ALL, *sorted(set(levels) - {ALL})]:
                at = np.ones(len(p), bool) if level == ALL else levels == level
                rows.append(
                    {
                        **dict(zip(KEYS, key, strict=True)),
                        "ambiguity": level,
                        **fit_cols,
                        **_gap(raw_utt[at], js[at], ceiling.get((str(key[0]), level), np.nan)),
                        "n_without_distribution": int((~has).sum()) if level == ALL else 0,
                    }
                )
            per_utt.append(
                sub[[*KEYS, "utt_id", "speaker"]].assign(method=method, js_calibrated=js).reset_index(drop=True)
            )
    table = pd.DataFrame(rows)
    calibrated = pd.concat(per_utt, ignore_index=True) if per_utt else pd.DataFrame()
    return Calibration(table, calibrated, pd.DataFrame(fold_rows, columns=_fold_columns(fold_rows)))


def _gap(raw: np.ndarray, calibrated: np.ndarray, ceiling: float) -> dict[str, float]:
    """Raw and calibrated mean JS over the same rows, and the share of the gap to ``ceiling`` closed."""
    n = len(raw)
    r = float(raw.mean()) if n else np.nan
    c = float(calibrated.mean()) if n and np.isfinite(calibrated).all() else np.nan
    closed = (r - c) / (r - ceiling) if np.isfinite(ceiling) and np.isfinite(c) and r > ceiling else np.nan
    return {"n": n, "js_raw": r, "js_calibrated": c, "ceiling_js": ceiling, "gap_closed": closed}


def calibrated_scores(
    scores: pd.DataFrame, calibrated: pd.DataFrame, method: str = "temperature+prior"
) -> pd.DataFrame:
    """The scores with ``js`` replaced by its calibrated value (``method``), for the paired tests:
    a strategy's gain over the baseline after calibration (``ambiemo.stats.paired_comparisons``)."""
    cal = calibrated[calibrated["method"] == method][[*KEYS, "utt_id", "js_calibrated"]]
    out = scores.merge(cal, on=[*KEYS, "utt_id"], how="inner", validate="one_to_one")
    out["js"] = out.pop("js_calibrated")
    out.attrs = dict(scores.attrs)
    return out


class Calibration(NamedTuple):
    """``calibration_table``'s three tables."""

    table: pd.DataFrame
    calibrated: pd.DataFrame
    folds: pd.DataFrame


FOLD_COLUMNS = [*KEYS, "method", "fold", "T", "w"]


def _fold_columns(rows: list[dict]) -> list[str]:
    priors = dict.fromkeys(k for r in rows for k in r if k.startswith("prior_"))
    return [*FOLD_COLUMNS, *priors]


def _known_fits(folds_table: pd.DataFrame | None) -> dict[tuple, dict[int, tuple[float, float, dict]]]:
    """``{(*cell, method): {fold: (T, w, {prior column: value})}}`` from a ``folds`` table (a prior
    has values in its cell's labels' columns only)."""
    out: dict[tuple, dict[int, tuple[float, float, dict]]] = {}
    if folds_table is None or folds_table.empty:
        return out
    priors = [c for c in folds_table.columns if c.startswith("prior_")]
    values = folds_table[priors].to_numpy(dtype=float)
    for i, row in enumerate(folds_table[FOLD_COLUMNS].itertuples(index=False)):
        prior = {c: v for c, v in zip(priors, values[i], strict=True) if not np.isnan(v)}
        out.setdefault(tuple(row[: len(KEYS) + 1]), {})[int(row.fold)] = (float(row.T), float(row.w), prior)
    return out
