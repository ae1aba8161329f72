"""The predictions table: one parquet per model x strategy x dataset cell.

One row per utterance x strategy readout x budget. Columns, in this order:

    utt_id, dataset, model      the utterance, its dataset, the model's params key
    strategy                    the readout: the strategy's name (``self-consistency`` also writes
                                ``self-consistency-vote``, the histogram of its samples' labels)
    budget                      B (beams / candidates), N (samples) or K (prompts); 1 for one-shot strategies
    p_<label> ...               the predicted distribution in label-set order, after the parse-failure
                                policy (params ``parsing.on_failure``: ``uniform`` fills 1/L, ``nan`` leaves NaN)
    pred_label                  argmax of p (ties go to the first label in label-set order); "" when
                                nothing parsed, so that a failure is wrong for accuracy
    parsed_ok                   False when no candidate's answer could be read (or the model failed)
    n_candidates                candidates behind the prediction (label-scoring: options scored; 0 when
                                the model failed)
    model_calls                 requests sent to the model for this row (one request may return many
                                candidates); counted the same whether answered by the model or the cache
    verifier_calls              requests sent to the verifier
    prompt_tokens, gen_tokens   the model's own tokens (Int64, int64) as its routes report them, option
                                scoring included (prompt tokens only: nothing is generated); <NA> where
                                a route reports none
    wall_s                      the model's own seconds, when the calls were made (stored with each
                                candidate and option score, so a rerun from the cache writes the same
                                value); NaN where unknown
    verifier_prompt_tokens      the verifier's prompt tokens (Int64; <NA> where unknown, 0 without one)
    verifier_gen_tokens         the verifier's generated tokens (int64; 0 when it scores options)
    verifier_wall_s             the verifier's seconds (float64; NaN where unknown)

The candidates behind each row are in the candidates table beside this one
(``ambiemo.inference.candidates``: ``<strategy>.candidates.parquet``, one row per candidate);
``Predictions.candidates`` reads it.

Metadata (``ambiemo.core.tables``): ``label_set`` {name, labels}; ``provenance`` (model identity,
strategy, its settings, candidate source ``beam``/``sampled``/``greedy``/``options``, selection
method, prompts, verifier); ``parse_failures`` (rows that did not parse, model failures excluded)
with ``parse_failures_by`` {"<strategy>@<budget>": count}; ``model_failures`` {utt_id: error};
``n_utterances``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.tables import LabelledTable, meta_labels, read_table, row_check, write_table
from ambiemo.inference.candidates import Candidates, candidates_path, read_candidates, write_candidates

HEAD_COLUMNS = ("utt_id", "dataset", "model", "strategy", "budget")
TAIL_COLUMNS = (
    "pred_label",
    "parsed_ok",
    "n_candidates",
    "model_calls",
    "verifier_calls",
    "prompt_tokens",
    "gen_tokens",
    "wall_s",
    "verifier_prompt_tokens",
    "verifier_gen_tokens",
    "verifier_wall_s",
)


def prediction_columns(labels: Sequence[str]) -> list[str]:
    """The columns, in order, for a label set."""
    return [*HEAD_COLUMNS, *(f"p_{x}" for x in labels), *TAIL_COLUMNS]


class PredictionsError(ValueError):
    """A predictions table that does not follow the schema above."""


def predicted_label(p: np.ndarray, parsed_ok: bool, labels: Sequence[str]) -> str:
    """argmax of ``p`` (first label on ties), or "" for a failed answer."""
    if not parsed_ok or not np.isfinite(p).all():
        return ""
    return labels[int(np.argmax(p))]


def _coerce(df: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Fixed dtypes, so that equal content gives byte-identical parquet files."""
    df = df.copy()
    for c in ("utt_id", "dataset", "model", "strategy", "pred_label"):
        df[c] = df[c].astype(str).astype(object)
    for c in ("budget", "n_candidates", "model_calls", "verifier_calls", "verifier_gen_tokens"):
        df[c] = df[c].astype("int64")
    for c in ("prompt_tokens", "gen_tokens", "verifier_prompt_tokens"):
        df[c] = df[c].astype("Int64")
    for c in (*(f"p_{x}" for x in labels), "wall_s", "verifier_wall_s"):
        df[c] = df[c].astype("float64")
    df["parsed_ok"] = df["parsed_ok"].astype(bool)
    return df[prediction_columns(labels)]


def validate(df: pd.DataFrame, meta: Mapping[str, Any], where: str = "predictions") -> None:
    """Raise ``PredictionsError`` naming the file, the column and the rows at fault."""
    labels = meta_labels(meta, where, PredictionsError)
    missing = [c for c in prediction_columns(labels) if c not in df.columns]
    if missing:
        raise PredictionsError(f"{where}: missing column(s) {missing} for label set {labels}")
    if len(df) == 0:
        return

    bad = row_check(df, ["utt_id", "strategy", "budget"], where, PredictionsError)

    bad(df.duplicated(["utt_id", "strategy", "budget"], keep=False), "repeat (utt_id, strategy, budget)")
    bad(df["budget"].to_numpy() < 1, "have a budget below 1")
    p = df[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    finite = np.isfinite(p).all(axis=1)
    ok = df["parsed_ok"].to_numpy(dtype=bool)
    bad(ok & ~finite, "parsed but have NaN in p_*")
    bad(
        finite & ((p < -1e-9).any(axis=1) | ~np.isclose(p.sum(axis=1), 1.0, atol=1e-6)),
        "have p_* that are not a distribution",
    )
    bad(~df["pred_label"].isin([*labels, ""]), f"have a pred_label outside the label set {labels}")
    bad(ok & (df["pred_label"] == "").to_numpy(), "parsed but have no pred_label")


def write_predictions(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    labels: Sequence[str],
    label_set: str,
    provenance: Mapping[str, Any],
    candidates: pd.DataFrame | None = None,
    **meta: Any,
) -> Path:
    """Check ``df`` against the schema and write it atomically with its metadata.

    With ``candidates``, the cell's candidates table is written first, beside it (``candidates_path``),
    under the same label set and provenance (and a skipped cell's reason): so a predictions file that
    exists always has its candidates beside it."""
    full_meta = {"label_set": {"name": label_set, "labels": list(labels)}, "provenance": dict(provenance), **meta}
    if candidates is not None:
        shared = {k: full_meta[k] for k in ("label_set", "provenance", "skipped") if k in full_meta}
        write_candidates(candidates, candidates_path(path), {**shared, "predictions": Path(path).name})
    df = _coerce(df, labels)
    validate(df, full_meta, where=str(path))
    return write_table(df, path, full_meta)


class Predictions(LabelledTable):
    """A predictions table read and checked by ``read_predictions``."""

    @cached_property
    def candidates(self) -> Candidates:
        """The candidates table beside this one (``ambiemo.inference.candidates``), read and checked on first use."""
        if self.path is None:
            raise FileNotFoundError("these predictions were not read from a file, so they have no candidates table")
        return read_candidates(candidates_path(self.path))

    def parse_failure_rate(self) -> pd.Series:
        """Share of rows that did not parse, per (strategy, budget)."""
        return 1.0 - self.df.groupby(["strategy", "budget"])["parsed_ok"].mean()


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read a predictions table and check its schema; the one way stages read predictions."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no predictions here; write them with `ambiemo infer ... --out {path}`")
    df, meta = read_table(path)
    validate(df, meta, where=str(path))
    return Predictions(df, meta, path)
