"""The candidates table: every candidate behind a predictions cell, one row each.

Written by the inference stage beside each predictions table, as
``<strategy>.candidates.parquet`` next to ``<strategy>.parquet`` (``candidates_path``). It holds
what the oracle readout, pass@N, the verifier scores and the weights are read from. Columns, in
this order, with their dtypes:

    utt_id, dataset, model  str      the utterance, its dataset, the model's params key
    strategy                str      the readout the candidate belongs to (as in the predictions table;
                                     ``self-consistency`` and ``self-consistency-vote`` list the same samples)
    budget                  int64    the row's budget (B, N or K; 1 for one-shot strategies)
    index                   int64    the candidate's position in the row, 0-based: the model's order
                                     (best beam first, sample order, paraphrase order, option order)
    text                    str      the candidate's answer (label scoring: the option's written form)
    logprob                 float64  its summed log-probability (label scoring: log p(option)); NaN where
                                     the route gives none
    n_tokens                Int64    generated tokens; <NA> for a scored option (nothing generated)
    p_<label> ...           float64  its parsed distribution in label-set order; NaN when it did not parse
                                     (and for scored options, which have none)
    parsed_ok               bool     whether ``p_*`` holds a distribution
    verifier_score          float64  the verifier's score in [0, 1] (alm-v, w-alm-v); NaN otherwise or unreadable
    weight                  float64  its share in a weighted readout (w-bon, w-alm-v); NaN where none
    selected                bool     whether it entered the answer (the selected candidate, or one of the
                                     parsed candidates that were averaged)
    prompt                  str      the prompt template's id
    label_order             str      the labels in the order the prompt listed them, joined by ","

Rows are ordered as the predictions table's rows (readout, budget, manifest order), then by
``index``; with fixed dtypes, equal content gives byte-identical files whatever the batch size.
Metadata (``ambiemo.core.tables``): ``kind`` "candidates", ``label_set`` {name, labels},
``predictions`` (the file name of the predictions table it belongs to) and ``provenance`` (as
that table's).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.layout import CANDIDATES_SUFFIX
from ambiemo.core.tables import LabelledTable, meta_labels, read_table, row_check, write_table

SUFFIX = CANDIDATES_SUFFIX
KEY_COLUMNS = ("utt_id", "dataset", "model", "strategy", "budget")
HEAD_COLUMNS = (*KEY_COLUMNS, "index", "text", "logprob", "n_tokens")
TAIL_COLUMNS = ("parsed_ok", "verifier_score", "weight", "selected", "prompt", "label_order")
_STR = ("utt_id", "dataset", "model", "strategy", "text", "prompt", "label_order")
_INT = ("budget", "index")
_FLOAT = ("logprob", "verifier_score", "weight")
_BOOL = ("parsed_ok", "selected")


def candidate_columns(labels: Sequence[str]) -> list[str]:
    """The columns, in order, for a label set."""
    return [*HEAD_COLUMNS, *(f"p_{x}" for x in labels), *TAIL_COLUMNS]


# The columns of a label set named by ``p_<label>``; the list above with the labels filled in.
CANDIDATE_COLUMNS = (*HEAD_COLUMNS, "p_<label>", *TAIL_COLUMNS)


class CandidatesError(ValueError):
    """A candidates table that does not follow the schema above."""


def candidates_path(predictions_path: str | os.PathLike) -> Path:
    """Where the candidates of the predictions table ``predictions_path`` live: ``bon.parquet`` ->
    ``bon.candidates.parquet`` beside it."""
    path = Path(predictions_path)
    return path.with_name(path.name.removesuffix(".parquet") + SUFFIX)


def is_candidates_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a candidates table (so that a folder scan of predictions skips it)."""
    return Path(path).name.endswith(SUFFIX)


def _number(x: Any) -> float:
    return math.nan if x is None else float(x)


def candidates_frame(
    rows: Iterable[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]], labels: Sequence[str]
) -> pd.DataFrame:
    """The candidates table from ``(key, candidates)`` pairs: ``key`` holds a prediction row's
    ``utt_id, dataset, model, strategy, budget``; ``candidates`` are its ``Row.candidates`` as the
    strategies record them (``ambiemo.strategies.record``: text, logprob, n_tokens, p,
    verifier_score, weight, selected, prompt, label_order)."""
    out = []
    for key, cands in rows:
        for index, c in enumerate(cands):
            p = c.get("p")
            if p is not None and len(p) != len(labels):
                raise CandidatesError(
                    f"utterance {key['utt_id']!r} ({key['strategy']}@{key['budget']}): candidate {index} has a "
                    f"distribution of {len(p)} values for {len(labels)} labels"
                )
            dist = [math.nan] * len(labels) if p is None else [float(x) for x in p]
            n_tokens = c.get("n_tokens")
            out.append(
                {
                    **{k: key[k] for k in KEY_COLUMNS},
                    "index": index,
                    "text": str(c.get("text", "")),
                    "logprob": _number(c.get("logprob")),
                    "n_tokens": pd.NA if n_tokens is None else int(n_tokens),
                    **{f"p_{x}": v for x, v in zip(labels, dist, strict=True)},
                    "parsed_ok": p is not None,
                    "verifier_score": _number(c.get("verifier_score")),
                    "weight": _number(c.get("weight")),
                    "selected": bool(c.get("selected", False)),
                    "prompt": str(c.get("prompt", "")),
                    "label_order": ",".join(c.get("label_order") or ()),
                }
            )
    return _coerce(pd.DataFrame(out, columns=candidate_columns(labels)), labels)


def _coerce(df: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Fixed dtypes, so that equal content gives byte-identical parquet files."""
    df = df.copy()
    for c in _STR:
        df[c] = df[c].astype(str).astype(object)
    for c in _INT:
        df[c] = df[c].astype("int64")
    df["n_tokens"] = df["n_tokens"].astype("Int64")
    for c in (*_FLOAT, *(f"p_{x}" for x in labels)):
        df[c] = df[c].astype("float64")
    for c in _BOOL:
        df[c] = df[c].astype(bool)
    return df[candidate_columns(labels)].reset_index(drop=True)


def validate(df: pd.DataFrame, meta: Mapping[str, Any], where: str = "candidates") -> None:
    """Raise ``CandidatesError`` naming the file, the column and the rows at fault."""
    labels = meta_labels(meta, where, CandidatesError)
    missing = [c for c in candidate_columns(labels) if c not in df.columns]
    if missing:
        raise CandidatesError(f"{where}: missing column(s) {missing} for label set {labels}")
    expected = {
        **dict.fromkeys(_INT, "int64"),
        "n_tokens": "Int64",
        **dict.fromkeys((*_FLOAT, *(f"p_{x}" for x in labels)), "float64"),
        **dict.fromkeys(_BOOL, "bool"),
    }
    wrong = {c: str(df[c].dtype) for c, t in expected.items() if str(df[c].dtype) != t}
    if wrong:
        raise CandidatesError(f"{where}: column(s) of the wrong dtype {wrong}; expected {expected}")
    if len(df) == 0:
        return

    bad = row_check(df, ["utt_id", "strategy", "budget", "index"], where, CandidatesError)

    bad(
        df.duplicated(["utt_id", "strategy", "budget", "index"], keep=False), "repeat (utt_id, strategy, budget, index)"
    )
    bad(df["index"].to_numpy() < 0, "have a negative index")
    p = df[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    finite = np.isfinite(p).all(axis=1)
    ok = df["parsed_ok"].to_numpy(dtype=bool)
    bad(ok != finite, "have parsed_ok that disagrees with p_* (True needs a distribution, False needs NaN)")
    bad(
        ok & ((p < -1e-9).any(axis=1) | ~np.isclose(np.where(finite[:, None], p, 0).sum(axis=1), 1.0, atol=1e-6)),
        "have p_* that are not a distribution",
    )


def write_candidates(df: pd.DataFrame, path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Check ``df`` against the schema and write it atomically with ``meta`` (its ``label_set``
    {name, labels} and ``provenance``, those of the predictions table it belongs to), stamped
    ``kind: candidates``. ``write_predictions(..., candidates=df)`` writes both tables of a cell."""
    full_meta = {**meta, "kind": "candidates"}
    labels = meta_labels(full_meta, str(path), CandidatesError)
    missing = [c for c in candidate_columns(labels) if c not in df.columns]
    if missing:
        raise CandidatesError(f"{path}: missing column(s) {missing} for label set {list(labels)}")
    df = _coerce(df, labels)
    validate(df, full_meta, where=str(path))
    return write_table(df, path, full_meta)


class Candidates(LabelledTable):
    """A candidates table read and checked by ``read_candidates``."""

    def of(self, utt_id: str, strategy: str, budget: int) -> pd.DataFrame:
        """The candidates of one prediction row, in their order."""
        df = self.df
        return df[(df["utt_id"] == utt_id) & (df["strategy"] == strategy) & (df["budget"] == int(budget))]


def read_candidates(path: str | os.PathLike) -> Candidates:
    """Read a candidates table and check its schema; the one way stages read candidates."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no candidates table here; `ambiemo infer` writes it beside the predictions "
            f"({path.name.removesuffix(SUFFIX)}.parquet): run inference again for that cell"
        )
    df, meta = read_table(path)
    if meta.get("kind") != "candidates":
        raise CandidatesError(f"{path}: not a candidates table (metadata kind {meta.get('kind')!r})")
    validate(df, meta, where=str(path))
    return Candidates(df, meta, path)
