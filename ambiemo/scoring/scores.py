"""Per-utterance scores: predictions joined with the manifest (see ``ambiemo.scoring``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.failures import failure_label_index
from ambiemo.core.tables import isin
from ambiemo.scoring import metrics as M
from ambiemo.scoring.references import MODEL as REFERENCE_MODEL
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


def score_predictions(
    manifest: Any, predictions: Any, params: Mapping[str, Any] | None = None, candidates: Any = None
) -> pd.DataFrame:
    """Per-utterance scores of ``predictions`` against ``manifest`` (see the module docstring).

    ``manifest`` is an ``ambiemo.data.manifest.Manifest`` or a DataFrame with the manifest's columns;
    ``predictions`` one prediction table or a list of them (for example one per cell), each an
    ``ambiemo.inference.predictions.Predictions`` or a DataFrame. ``params`` is the
    whole params mapping: its ``scoring`` section and ``models.<key>.params_b`` are used.
    The oracle readout and pass@N come from the candidates tables (``ambiemo.inference.candidates``): those of
    predictions read from files (``Predictions.candidates``) and ``candidates`` (a table or a list
    of them, for predictions given as DataFrames); rows without candidates get NaN there.
    Utterances of the manifest that a cell has no prediction for are counted in
    ``scores.attrs["missing"]``; predictions for utterances the manifest lacks are an error.
    """
    sp = scoring_params(params)
    mdf, labels, order = _manifest_frame(manifest)
    preds = _prediction_frame(predictions)
    _check_predictions(preds, labels)

    unknown = ~isin(preds["utt_id"], mdf["utt_id"])
    if unknown.any():
        ids = preds.loc[unknown, "utt_id"].astype(str).unique().tolist()
        raise ScoringError(
            f"{len(ids)} predicted utterance(s) are not in the manifest: {ids[:5]}"
            f"{' ...' if len(ids) > 5 else ''}; were the predictions made from another manifest?"
        )
    datasets = set(mdf["dataset"].astype(str).unique())
    other = sorted(set(preds["dataset"].astype(str).unique()) - datasets)
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
    on_failure = str(((params or {}).get("parsing") or {}).get("on_failure", "uniform"))
    _failures_predict(y_pred, on_failure, labels, ~parsed & has_q)  # the parse-failure policy
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
    _drop_failures(out, on_failure, parsed)  # the parse-failure policy
    oracle = _oracle(df, _candidate_frames(predictions, candidates), labels, p_true, y_true, base)
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


# --- params parsing.on_failure beyond the distribution --------------------------------------------


def _failures_predict(y_pred: np.ndarray, on_failure: str, labels: Sequence[str], failed: np.ndarray) -> None:
    """``neutral``: a failed answer predicts neutral, as its distribution says (AER-LLM's rule)."""
    neutral = failure_label_index(on_failure, labels)
    if neutral is not None:
        y_pred[failed] = neutral


def _drop_failures(out: pd.DataFrame, on_failure: str, parsed: np.ndarray) -> None:
    """``drop``: a failed answer has no hard label either; it stays counted as a parse failure."""
    if on_failure == "drop":
        out.loc[~parsed, ["correct", "plausible"]] = np.nan


# --- end parse-failure policy ---------------------------------------------------------------------


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
            f"manifest lacks column(s) {missing or ['p_<label>']}; read it with ambiemo.data.manifest.read_manifest"
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
        raise ScoringError(f"predictions lack column(s) {missing}; write them with ambiemo.inference.predictions")
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
        given = pd.Index(list(labels)).get_indexer(df["pred_label"].fillna("").astype(str))  # -1: none of them
        idx = np.where(given >= 0, given, idx)
    idx[~df["parsed_ok"].astype(bool).to_numpy()] = -1
    return idx


def _ambiguity(df: pd.DataFrame, order: Sequence[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "entropy":  # one bin per distinct vote entropy, as AER-LLM analysed it
        h = np.round(df["entropy_bits"].to_numpy(dtype=float), 3)
        levels = np.unique(h)
        return np.array([f"{x:.3f}" for x in h], dtype=object), np.searchsorted(levels, h)
    bins = df["ambiguity"].astype(str)
    rank = pd.Index(list(order)).get_indexer(bins)
    if (rank < 0).any():
        unknown = sorted(bins[rank < 0].unique())
        raise ScoringError(f"ambiguity bin(s) {unknown} are not in the manifest's order {list(order)}")
    return bins.to_numpy(dtype=object), rank.astype(int)


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


def _candidate_frames(predictions: Any, candidates: Any) -> pd.DataFrame | None:
    """The candidates tables to read the oracle from: ``candidates`` (a table, a ``Candidates``, or a
    list of either) and that of every ``Predictions`` read from a file (``Predictions.candidates``).
    None when there are none (bare DataFrames without ``candidates``)."""
    items = [] if candidates is None else candidates if isinstance(candidates, (list, tuple)) else [candidates]
    preds = predictions if isinstance(predictions, (list, tuple)) else [predictions]
    items = [*items, *(p.candidates for p in preds if getattr(p, "path", None) is not None and hasattr(p, "meta"))]
    frames = [c.df if hasattr(c, "df") else c for c in items]
    bad = [type(f).__name__ for f in frames if not isinstance(f, pd.DataFrame)]
    if bad:
        raise TypeError(f"candidates must be ambiemo Candidates or DataFrames (or a list of them), got {bad}")
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def candidate_distributions(cands: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The parsed candidates of a candidates table (``ambiemo.inference.candidates``) and their distributions in
    label order, renormalised (parsers return proportions; the table stores them as parsed)."""
    missing = [c for c in ("utt_id", *KEYS, "index", "parsed_ok", *(f"p_{x}" for x in labels)) if c not in cands]
    if missing:
        raise ScoringError(
            f"candidates lack column(s) {missing}; read them with ambiemo.inference.candidates.read_candidates"
        )
    parsed = cands[cands["parsed_ok"].astype(bool)]
    q = parsed[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    total = q.sum(axis=1)
    usable = np.isfinite(q).all(axis=1) & (q >= 0).all(axis=1) & (total > 0)
    return parsed[usable].reset_index(drop=True), q[usable] / total[usable, None]


def _oracle(
    df: pd.DataFrame,
    cands: pd.DataFrame | None,
    labels: Sequence[str],
    p_true: np.ndarray,
    y_true: np.ndarray,
    base: Any,
) -> dict[str, np.ndarray]:
    """The best parsed candidate of each prediction row by JS distance to the humans (the first in
    the model's order on a tie), and pass@N: whether any parsed candidate's top label is the majority."""
    n = len(df)
    out = {
        "oracle_js": np.full(n, np.nan),
        "oracle_bc": np.full(n, np.nan),
        "oracle_correct": np.full(n, np.nan),
        "oracle_n_parsed": np.zeros(n, dtype=int),
        "pass_at_n": np.full(n, np.nan),
    }
    if cands is None:
        return out
    parsed, q = candidate_distributions(cands, labels)
    if not len(parsed):
        return out
    keys = [*KEYS, "utt_id"]
    where = pd.Series(np.arange(n), index=pd.MultiIndex.from_frame(df[keys].astype(str)))
    at = pd.MultiIndex.from_frame(parsed[keys].astype(str))
    known = at.isin(where.index)
    if not known.all():
        stray = "/".join(at[int(np.argmax(~known))])
        raise ScoringError(
            f"{int((~known).sum())} candidate(s) belong to no prediction row, e.g. {stray}; "
            "were the candidates and predictions written by different runs?"
        )
    row = where.reindex(at).to_numpy(dtype=int)
    js = M.js_distance(p_true[row], q, base=base)
    bc = M.bhattacharyya_coefficient(p_true[row], q)
    tops = q.argmax(axis=1)
    order = pd.DataFrame({"row": row, "js": js, "index": parsed["index"].to_numpy(dtype=int)})
    best = order.sort_values(["row", "js", "index"], kind="stable").drop_duplicates("row").index.to_numpy()
    out["oracle_n_parsed"] = np.bincount(row, minlength=n)
    out["oracle_js"][row[best]] = js[best]
    out["oracle_bc"][row[best]] = bc[best]
    hard = y_true[row] >= 0
    correct = np.where(hard, (tops == y_true[row]).astype(float), np.nan)
    out["oracle_correct"][row[best]] = correct[best]
    hits = np.bincount(row[hard], weights=correct[hard], minlength=n)
    rows_hard = np.bincount(row[hard], minlength=n) > 0
    out["pass_at_n"][rows_hard] = (hits[rows_hard] > 0).astype(float)
    return out
