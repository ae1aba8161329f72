"""Per-utterance scores: predictions joined with the manifest (see ``ambiemo.scoring``)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo import metrics as M
from ambiemo.references import MODEL as REFERENCE_MODEL
from ambiemo.scoring.schema import (
    _MANIFEST_COLUMNS,
    COMPUTE_COLUMNS,
    KEYS,
    PREDICTION_REQUIRED,
    VERIFIER_COLUMNS,
    ScoringError,
    labels_of,
    levels,
    scoring_params,
)

# --------------------------------------------------------------------------- scoring


def score_predictions(manifest: Any, predictions: Any, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per-utterance scores of ``predictions`` against ``manifest`` (see the module docstring).

    ``manifest`` is an ``ambiemo.manifest.Manifest`` or a DataFrame with the manifest's columns;
    ``predictions`` one prediction table or a list of them (for example one per cell), each an
    ``ambiemo.predictions.Predictions`` or a DataFrame. ``params`` is the
    whole params mapping: its ``scoring`` section and ``models.<key>.params_b`` are used.
    Utterances of the manifest that a cell has no prediction for are counted in
    ``scores.attrs["missing"]``; predictions for utterances the manifest lacks are an error.
    """
    sp = scoring_params(params)
    mdf, labels, order = _manifest_frame(manifest)
    preds = _prediction_frame(predictions)
    _check_predictions(preds, labels)

    unknown = ~preds["utt_id"].isin(mdf["utt_id"])
    if unknown.any():
        ids = preds.loc[unknown, "utt_id"].astype(str).unique().tolist()
        raise ScoringError(
            f"{len(ids)} predicted utterance(s) are not in the manifest: {ids[:5]}"
            f"{' ...' if len(ids) > 5 else ''}; were the predictions made from another manifest?"
        )
    datasets = set(mdf["dataset"].astype(str))
    other = sorted(set(preds["dataset"].astype(str)) - datasets)
    if other:
        raise ScoringError(f"predictions name dataset(s) {other} but the manifest holds {sorted(datasets)}")

    df = preds.drop(columns=["dataset"]).merge(mdf, on="utt_id", how="left", validate="many_to_one")
    p_true = df[[f"true_{x}" for x in labels]].to_numpy(dtype=float)
    q = df[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    # params parsing.on_failure "nan" leaves a failed row without a distribution: it has no
    # distributional scores (NaN, left out of the means) but still counts as wrong.
    has_q = np.isfinite(q).all(axis=1)
    parsed = df["parsed_ok"].astype(bool).to_numpy()
    if (parsed & ~has_q).any():
        row = int(np.argmax(parsed & ~has_q))
        raise ScoringError(f"utterance {df.loc[row, 'utt_id']!r} in cell {_cell(df, row)} parsed but has NaN in p_*")
    for name, arr, rows in (("predictions", q, np.flatnonzero(has_q)), ("manifest", p_true, np.arange(len(df)))):
        try:
            M.check_distributions(arr[rows], name)
        except M.DistributionError as err:  # name the utterance and cell, not a row number
            row = rows[err.row]
            raise ScoringError(
                f"{name}: utterance {df.loc[row, 'utt_id']!r} in cell {_cell(df, row)} {err.reason}"
            ) from None

    y_pred = _predicted_index(df, labels)
    y_true = M.majority_label(p_true, sp["tie_policy"], y_pred)
    base = sp["js_base"]
    names = np.asarray([*labels, ""], dtype=object)  # index -1 -> ""

    def per_row(f, *args, **kwargs) -> np.ndarray:
        values = np.full(len(df), np.nan)
        values[has_q] = f(p_true[has_q], q[has_q], *args, **kwargs)
        return values

    out = df[[*KEYS, "utt_id"]].copy()
    out["speaker"] = df["speaker"].fillna("").astype(str)
    for c in ("n_raters", "entropy_bits", "majority", "majority_tie"):
        out[c] = df[c].to_numpy()
    out["ambiguity"], out["ambiguity_rank"] = _ambiguity(df, order, sp["ambiguity_from"])
    out["params_b"] = _capacity(df["model"], params)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["log10_params"] = np.log10(out["params_b"].to_numpy(dtype=float))
    out["parsed_ok"] = parsed
    out["n_candidates"] = df["n_candidates"].to_numpy()
    out = out.join(_compute(df))
    out["pred_label"] = names[y_pred].astype(str)
    out["majority_used"] = names[y_true].astype(str)
    out["js"] = per_row(M.js_distance, base=base)
    out["bc"] = per_row(M.bhattacharyya_coefficient)
    out["kl"] = per_row(M.kl_divergence, eps=float(sp["kl_epsilon"]))
    out["tv"] = per_row(M.total_variation)
    out["brier"] = per_row(M.brier)
    out["r2_utt"] = per_row(M.r2_per_utterance)
    out["pred_entropy_bits"] = per_row(lambda _p, qq: M.entropy_bits(qq))
    out["confidence"] = per_row(lambda _p, qq: M.confidence(qq, y_pred[has_q]))
    out["correct"] = M.correct(y_true, y_pred)
    out["plausible"] = M.plausible(p_true, y_pred).astype(float)
    oracle = _oracle(df, labels, p_true, y_true, base)
    for c in oracle:
        out[c] = oracle[c]
    for j, x in enumerate(labels):
        out[f"true_{x}"] = p_true[:, j]
    for j, x in enumerate(labels):
        out[f"p_{x}"] = q[:, j]

    out = out.sort_values([*KEYS, "utt_id"], kind="stable").reset_index(drop=True)
    out.attrs["labels"] = list(labels)
    out.attrs["ambiguity_order"] = levels(out)
    out.attrs["missing"] = _missing(preds, mdf)
    out.attrs["scoring"] = {k: sp[k] for k in ("js_base", "kl_epsilon", "tie_policy", "ambiguity_from")}
    return out


def _compute(df: pd.DataFrame) -> pd.DataFrame:
    """The compute columns per row; the verifier's are NaN for tables written before the
    verifier was counted on its own."""
    out = pd.DataFrame({c: df[c].astype(float).to_numpy() for c in COMPUTE_COLUMNS}, index=df.index)
    for c in VERIFIER_COLUMNS:
        out[c] = df[c].astype(float).to_numpy() if c in df else np.nan
    return out


def _prediction_frame(predictions: Any) -> pd.DataFrame:
    """One DataFrame from a predictions table, a DataFrame, or a list of either."""
    if isinstance(predictions, pd.DataFrame) or hasattr(predictions, "df"):
        predictions = [predictions]
    frames = [p.df if hasattr(p, "df") else p for p in predictions]
    bad = [type(f).__name__ for f in frames if not isinstance(f, pd.DataFrame)]
    if bad or not frames:
        raise TypeError(
            f"predictions must be ambiemo Predictions or DataFrames (or a list of them), got {bad or 'nothing'}"
        )
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def _cell(df: pd.DataFrame, row: int) -> str:
    return "/".join(str(df.loc[row, k]) for k in KEYS)


def _manifest_frame(manifest: Any) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The manifest's columns scoring needs (p_<L> renamed true_<L>), its labels and bin order."""
    if hasattr(manifest, "df") and hasattr(manifest, "labels"):
        df, labels = manifest.df, list(manifest.labels)
        order = list(manifest.meta.get("ambiguity", {}).get("bins", []))
    elif isinstance(manifest, pd.DataFrame):
        df, labels, order = manifest, labels_of(manifest), []
    else:
        raise TypeError(f"manifest must be an ambiemo Manifest or a DataFrame, not {type(manifest).__name__}")
    missing = [c for c in (*_MANIFEST_COLUMNS, *(f"p_{x}" for x in labels)) if c not in df.columns]
    if missing or not labels:
        raise ScoringError(
            f"manifest lacks column(s) {missing or ['p_<label>']}; read it with ambiemo.manifest.read_manifest"
        )
    if not order:  # a bare DataFrame: order the bins by their entropy
        order = list(df.groupby("ambiguity")["entropy_bits"].mean().sort_values(kind="stable").index)
    out = df[list(_MANIFEST_COLUMNS)].copy()
    for x in labels:
        out[f"true_{x}"] = df[f"p_{x}"].to_numpy(dtype=float)
    return out, labels, order


def _check_predictions(preds: pd.DataFrame, labels: Sequence[str]) -> None:
    missing = [c for c in PREDICTION_REQUIRED if c not in preds.columns]
    if missing:
        raise ScoringError(f"predictions lack column(s) {missing}; write them with ambiemo.predictions")
    plabels = labels_of(preds)
    if set(plabels) != set(labels):
        raise ScoringError(
            f"predictions have labels {plabels} but the manifest {list(labels)}; "
            "score each dataset with the predictions made for its label set"
        )
    dup = preds.duplicated(["utt_id", *KEYS], keep=False)
    if dup.any():
        first = preds.loc[dup].iloc[0]
        raise ScoringError(
            f"{int(dup.sum())} prediction rows repeat an utterance within a cell, e.g. "
            f"{first['utt_id']!r} in {'/'.join(str(first[k]) for k in KEYS)}; "
            "was a prediction file passed twice?"
        )


def _predicted_index(df: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Index of each row's predicted label: ``pred_label`` where given, else the argmax; -1 for
    parse failures, which have no label of their own."""
    q = df[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    idx = np.nan_to_num(q, nan=-1.0).argmax(axis=1)  # rows with NaN are failures, set to -1 below
    if "pred_label" in df.columns:
        lookup = {x: j for j, x in enumerate(labels)}
        given = df["pred_label"].fillna("").astype(str).map(lambda s: lookup.get(s, -2)).to_numpy(dtype=int)
        idx = np.where(given >= 0, given, idx)
    idx[~df["parsed_ok"].astype(bool).to_numpy()] = -1
    return idx


def _ambiguity(df: pd.DataFrame, order: Sequence[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "entropy":  # one bin per distinct vote entropy, as AER-LLM analysed it
        h = np.round(df["entropy_bits"].to_numpy(dtype=float), 3)
        levels = np.unique(h)
        return np.array([f"{x:.3f}" for x in h], dtype=object), np.searchsorted(levels, h)
    rank = {b: i for i, b in enumerate(order)}
    bins = df["ambiguity"].astype(str)
    unknown = sorted(set(bins) - set(rank))
    if unknown:
        raise ScoringError(f"ambiguity bin(s) {unknown} are not in the manifest's order {list(order)}")
    return bins.to_numpy(dtype=object), bins.map(rank).to_numpy(dtype=int)


def _capacity(models: pd.Series, params: Mapping[str, Any] | None) -> np.ndarray:
    """Billions of parameters per row from params ``models.<key>.params_b`` (NaN, with a warning, if absent)."""
    specs = (params or {}).get("models") or {}
    out, absent = {}, []
    for key in models.unique():
        value = (specs.get(key) or {}).get("params_b")
        if value is None and key != REFERENCE_MODEL:  # the reference predictors have no capacity
            absent.append(key)
        out[key] = float(value) if value is not None else float("nan")
    if absent:
        warnings.warn(
            f"params models.<key>.params_b is missing for {sorted(absent)}: their capacity is NaN and "
            "the capacity analyses leave them out; add params_b (billions of parameters)",
            stacklevel=3,
        )
    return models.map(out).to_numpy(dtype=float)


def _missing(preds: pd.DataFrame, mdf: pd.DataFrame) -> dict[str, int]:
    """Manifest utterances with no prediction, per cell (cells with none missing are left out)."""
    n = len(mdf)
    counts = preds.groupby(list(KEYS), sort=True)["utt_id"].nunique()
    return {"/".join(str(k) for k in key): int(n - c) for key, c in counts.items() if c < n}


def parse_candidates(raw: Any) -> list[dict[str, Any]]:
    """The ``candidates`` cell of a prediction row as a list of dicts ([] when absent)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or raw == "":
        return []
    items = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    if not isinstance(items, list):
        raise ScoringError(f"candidates must be a JSON list, got {type(items).__name__}")
    return [c for c in items if isinstance(c, dict)]


def candidate_distribution(cand: Mapping[str, Any], labels: Sequence[str]) -> np.ndarray | None:
    """A candidate's parsed distribution in label order, or None if it did not parse.

    The parsed distribution is stored under ``p`` as a list in label-set order (``ambiemo.predictions``);
    ``parsed`` or ``distribution`` and a {label: probability} mapping are read too. It is renormalised: parsers return
    proportions, and a candidate's probabilities that do not add up are read as proportions.
    """
    d = next((cand[k] for k in ("p", "parsed", "distribution") if k in cand), None)
    if d is None:
        return None
    if isinstance(d, Mapping):
        vec = np.array([float(d.get(x, 0.0) or 0.0) for x in labels])
    else:
        vec = np.asarray(d, dtype=float)
        if vec.shape != (len(labels),):
            return None
    total = vec.sum()
    if not np.isfinite(vec).all() or (vec < 0).any() or total <= 0:
        return None
    return vec / total


def _oracle(
    df: pd.DataFrame, labels: Sequence[str], p_true: np.ndarray, y_true: np.ndarray, base: Any
) -> dict[str, np.ndarray]:
    n = len(df)
    out = {
        "oracle_js": np.full(n, np.nan),
        "oracle_bc": np.full(n, np.nan),
        "oracle_correct": np.full(n, np.nan),
        "oracle_n_parsed": np.zeros(n, dtype=int),
        "pass_at_n": np.full(n, np.nan),
    }
    if "candidates" not in df.columns:
        return out
    for i, raw in enumerate(df["candidates"].to_numpy()):
        dists = [d for d in (candidate_distribution(c, labels) for c in parse_candidates(raw)) if d is not None]
        out["oracle_n_parsed"][i] = len(dists)
        if not dists:
            continue
        cand = np.vstack(dists)
        truth = np.repeat(p_true[i : i + 1], len(cand), axis=0)
        js = M.js_distance(truth, cand, base=base)
        best = int(np.argmin(js))  # first best on a tie: candidate order is the model's
        out["oracle_js"][i] = js[best]
        out["oracle_bc"][i] = M.bhattacharyya_coefficient(truth[:1], cand[best : best + 1])[0]
        if y_true[i] >= 0:
            tops = cand.argmax(axis=1)
            out["oracle_correct"][i] = float(tops[best] == y_true[i])
            out["pass_at_n"][i] = float((tops == y_true[i]).any())
    return out
