"""The scores table's keys, scoring params and the scores file (write, read, provenance)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from ambiemo.core.config import settings
from ambiemo.inference.predictions import HEAD_COLUMNS

KEYS = ("dataset", "model", "strategy", "budget")
ALL = "all"  # the ambiguity value of a summary row over every bin

COMPUTE_COLUMNS = ("model_calls", "verifier_calls", "prompt_tokens", "gen_tokens", "wall_s")
# The predictions columns scoring needs (ambiemo.inference.predictions names them all), beside the p_<label> ones.
PREDICTION_REQUIRED = (*HEAD_COLUMNS, "parsed_ok", "n_candidates", *COMPUTE_COLUMNS)
# The verifier's own tokens and time (predictions interface); NaN in scores of tables written before them.
VERIFIER_COLUMNS = ("verifier_prompt_tokens", "verifier_gen_tokens", "verifier_wall_s")
_MANIFEST_COLUMNS = (
    "utt_id",
    "dataset",
    "speaker",
    "n_raters",
    "majority",
    "majority_tie",
    "entropy_bits",
    "ambiguity",
)


class ScoringError(ValueError):
    """Predictions and a manifest that cannot be scored together."""


def scoring_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """params ``scoring`` with the schema's defaults (``ambiemo.core.params.Scoring``)."""
    return settings(dict(params or {}), "scoring")


def labels_of(df: pd.DataFrame, prefix: str = "p_") -> list[str]:
    """Label names from a table's ``<prefix><label>`` columns, in column order."""
    return [c[len(prefix) :] for c in df.columns if c.startswith(prefix)]


def levels(
    frame: pd.DataFrame, column: str = "ambiguity", rank: str = "ambiguity_rank", include_all: bool = False
) -> list[str]:
    """The values of an ordered column (such as the ambiguity bins) from least to most."""
    sub = frame[[column, rank]].drop_duplicates().sort_values([rank, column], kind="stable")
    vals = [str(v) for v in sub[column]]
    return vals if include_all else [v for v in vals if v != ALL]


def read_predictions(paths: Iterable[Any]) -> list[Any]:
    """Read prediction tables (``ambiemo.inference.predictions.read_predictions`` where it exists, which
    checks the schema; the bare parquet otherwise)."""
    try:
        from ambiemo.inference.predictions import read_predictions as _read  # type: ignore[attr-defined]
    except ImportError:
        _read = None
    from ambiemo.core.tables import read_table

    frames = []
    for path in paths:
        if _read is not None:
            got = _read(path)
            frames.append(got)  # the Predictions object: scoring reads its candidates table through it
        else:
            frames.append(read_table(path)[0])
    return frames


# --------------------------------------------------------------------------- files


def write_scores(
    scores: pd.DataFrame,
    path: Any,
    params: Mapping[str, Any] | None = None,
    inputs: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Write a scores table with what it was scored with (tie policy, JS base ...), its label set,
    the ambiguity order, the missing-prediction counts, the provenance (with each input's hash)
    and ``extra`` (``score_run``: the unanswered counts, skipped cells, ceiling sources)."""
    from ambiemo.core.provenance import provenance
    from ambiemo.core.tables import write_table
    from ambiemo.scoring.results import file_hashes

    sp = scoring_params(params)
    capacity = {
        k: (v or {}).get("params_b")
        for k, v in ((params or {}).get("models") or {}).items()
        if k in set(scores["model"])
    }
    meta = {
        "kind": "scores",
        "label_set": {"labels": list(scores.attrs.get("labels", labels_of(scores, "true_")))},
        "ambiguity_order": list(scores.attrs.get("ambiguity_order", levels(scores))),
        "missing": dict(scores.attrs.get("missing", {})),
        "parse_failures": int((~scores["parsed_ok"]).sum()),
        "inputs": [str(x) for x in inputs],
        "input_hashes": file_hashes(inputs),
        "provenance": provenance({"scoring": sp, "models": {"params_b": capacity}}, (params or {}).get("seed")),
        **dict(extra or {}),
    }
    plain = scores.copy()
    plain.attrs = {}  # the metadata above carries them; pandas would store them a second time
    return write_table(plain, path, meta)


def read_scores(path: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a scores table and its metadata (``scoring`` params under ``meta["provenance"]``)."""
    from ambiemo.core.tables import read_table

    df, meta = read_table(path)
    if meta.get("kind") != "scores" or "js" not in df.columns:
        raise ScoringError(
            f"{path}: not a scores table; make one with `ambiemo score --manifest ... --predictions ...`"
        )
    df.attrs.update(
        labels=meta["label_set"]["labels"],
        ambiguity_order=meta.get("ambiguity_order", []),
        missing=meta.get("missing", {}),
    )
    return df, meta


def params_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The params a scores table was made with, in params.yaml shape (for ``summarise``)."""
    return {"scoring": dict(meta.get("provenance", {}).get("params", {}).get("scoring", {}))}
