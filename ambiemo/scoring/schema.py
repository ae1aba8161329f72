"""The scores table's keys, scoring params and the scores file (write, read, provenance)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ambiemo.core.config import settings
from ambiemo.inference.predictions import HEAD_COLUMNS

T = TypeVar("T")

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
    from ambiemo.core.tables import write_table

    meta = scores_record(
        params,
        labels=scores.attrs.get("labels", labels_of(scores, "true_")),
        ambiguity_order=scores.attrs.get("ambiguity_order", levels(scores)),
        missing=scores.attrs.get("missing", {}),
        parse_failures=int((~scores["parsed_ok"]).sum()),
        models=set(scores["model"].unique()),
        inputs=inputs,
        extra=extra,
    )
    plain = scores.copy()
    plain.attrs = {}  # the metadata above carries them; pandas would store them a second time
    return write_table(plain, path, meta)


def scores_record(
    params: Mapping[str, Any] | None,
    *,
    labels: Sequence[str],
    ambiguity_order: Sequence[str],
    missing: Mapping[str, int],
    parse_failures: int,
    models: set[str],
    inputs: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata of a scores table (``write_scores``; the streamed writer of ``score_run`` too)."""
    from ambiemo.core.provenance import provenance
    from ambiemo.scoring.results import file_hashes

    sp = scoring_params(params)
    capacity = {k: (v or {}).get("params_b") for k, v in ((params or {}).get("models") or {}).items() if k in models}
    return {
        "kind": "scores",
        "label_set": {"labels": list(labels)},
        "ambiguity_order": list(ambiguity_order),
        "missing": dict(missing),
        "parse_failures": int(parse_failures),
        "inputs": [str(x) for x in inputs],
        "input_hashes": file_hashes(inputs),
        "provenance": provenance({"scoring": sp, "models": {"params_b": capacity}}, (params or {}).get("seed")),
        **dict(extra or {}),
    }


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


def chunk_keys(path: Any) -> list[tuple[str, str]]:
    """The (dataset, model) pairs of a scores table, in the table's sort order."""
    return list(chunk_rows(path))


def chunk_rows(path: Any) -> dict[tuple[str, str], int]:
    """The rows of each (dataset, model) pair of a scores table, the pairs in the table's sort order."""
    import pyarrow.parquet as pq

    scores_meta(path)  # checks that it is a scores table
    # dictionary-encoded: the study's 23.6 M rows of two string columns would be 650 MB of buffers,
    # and a parent process's memory is shared by each of its chunk processes
    keys = pq.read_table(path, columns=["dataset", "model"], read_dictionary=["dataset", "model"])
    counts = keys.unify_dictionaries().group_by(["dataset", "model"]).aggregate([([], "count_all")]).to_pandas()
    counts[["dataset", "model"]] = counts[["dataset", "model"]].astype(str)
    counts = counts.sort_values(["dataset", "model"], kind="stable")
    return {(d, m): int(n) for d, m, n in counts[["dataset", "model", "count_all"]].itertuples(index=False)}


def read_chunk(path: Any, dataset: str, model: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of one dataset × model, as ``read_scores`` would give them (without attrs: pandas
    deep-copies them on every operation, which dominates a per-cell reduction; ``scores_meta`` has
    them). Row groups whose statistics exclude the pair are skipped unread."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    parts = []
    for i in range(source.num_row_groups):
        if not _may_hold(source.metadata.row_group(i), source.schema_arrow, dataset, model):
            continue
        group = source.read_row_group(i, columns=list(columns) if columns else None)
        parts.append(group.filter(pc.and_(pc.equal(group["dataset"], dataset), pc.equal(group["model"], model))))
    return pa_concat(parts).to_pandas()


def score_chunks(path: Any, columns: Sequence[str] | None = None) -> Iterable[pd.DataFrame]:
    """The scores table one dataset × model at a time (``read_chunk``), in the table's sort order.
    The aggregate and stats stages reduce per cell, so no whole-table frame is held. ``columns``:
    read only those."""
    for dataset, model in chunk_keys(path):
        yield read_chunk(path, dataset, model, columns)


def map_score_chunks(fn: Callable[[pd.DataFrame], T], path: Any, columns: Sequence[str] | None = None) -> list[T]:
    """``[fn(chunk) for chunk in score_chunks(path, columns)]``, the chunks read and reduced in
    ``ambiemo.core.workers`` processes where the table is large: the results, in the chunks' order,
    are the same whatever the number of processes. ``fn`` must be picklable (a module-level function
    or a ``functools.partial`` of one)."""
    from ambiemo.core.workers import ordered_map, worker_count

    sizes = chunk_rows(path)
    workers = worker_count(sum(sizes.values()), len(sizes))
    return ordered_map(functools.partial(apply_to_chunk, fn, path, columns), list(sizes), workers)


def apply_to_chunk(fn: Callable[[pd.DataFrame], T], path: Any, columns: Sequence[str] | None, key: tuple) -> T:
    """``fn`` of one dataset × model (``key``) of the scores, read in the process that reduces it."""
    return fn(read_chunk(path, *key, columns))


def rows_at_one_budget(
    path: Any, columns: Sequence[str], how: str = "max", dataset: str | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``(frame, left_out)``: the model rows of a scores table (not the reference predictors, model
    ``reference``) at one budget per dataset × model × strategy (its largest, or its smallest where
    ``how`` is ``"min"``), of ``dataset`` only where given, ``columns`` only, in the file's order;
    read one row group at a time, so that no more than those rows and one row group are held. ``left_out``
    counts the ``reference`` rows and the rows at ``other_budgets`` (of ``dataset`` where given)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ambiemo.scoring.references import MODEL as REFERENCE

    cells = ["dataset", "model", "strategy"]
    keys = pq.read_table(path, columns=[*cells, "budget"], read_dictionary=cells)
    keys = keys.unify_dictionaries()  # each row group has its own dictionary
    if dataset is not None:
        keys = keys.filter(pc.equal(keys["dataset"].cast(pa.string()), dataset))
    reference = pc.equal(keys["model"].cast(pa.string()), REFERENCE)
    pick = keys.filter(pc.invert(reference)).group_by(cells).aggregate([("budget", how)]).to_pandas()
    pick[cells] = pick[cells].astype(str)
    index, target = pd.MultiIndex.from_frame(pick[cells]), pick[f"budget_{how}"].to_numpy(dtype=float)
    wanted = list(dict.fromkeys([*cells, "budget", *columns]))
    source, parts, other = pq.ParquetFile(path), [], 0
    for i in range(source.num_row_groups):
        group = source.read_row_group(i, columns=wanted).to_pandas()
        keep = (group["model"].astype(str) != REFERENCE).to_numpy()
        if dataset is not None:
            keep = keep & (group["dataset"].astype(str) == dataset).to_numpy()
        cell = index.get_indexer(pd.MultiIndex.from_frame(group[cells].astype(str)))
        at = keep & (cell >= 0) & (group["budget"].to_numpy(dtype=float) == target[np.maximum(cell, 0)])
        other += int((keep & ~at).sum())
        parts.append(group.loc[at, list(columns)])
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(columns))
    n_reference = int(pc.sum(reference).as_py() or 0)
    del keys, reference, parts
    pa.default_memory_pool().release_unused()  # the row groups' buffers, kept by arrow's allocator otherwise
    return frame, {"reference": n_reference, "other_budgets": other}


def pa_concat(parts: list[Any]) -> Any:
    import pyarrow as pa

    return pa.concat_tables(parts)


def _may_hold(row_group: Any, schema: Any, dataset: str, model: str) -> bool:
    """Whether a row group's min/max statistics allow rows of this dataset × model (the table is
    sorted by them, so most row groups are skipped unread)."""
    for name, value in (("dataset", dataset), ("model", model)):
        col = row_group.column(schema.get_field_index(name))
        st = col.statistics
        if st is None or not st.has_min_max:
            continue
        if name == "dataset" and not (st.min <= value <= st.max):
            return False
        if name == "model":
            ds = row_group.column(schema.get_field_index("dataset")).statistics
            # the model range only bounds the rows when the row group holds one dataset
            if ds is not None and ds.has_min_max and ds.min == ds.max == dataset and not (st.min <= value <= st.max):
                return False
    return True


def scores_meta(path: Any) -> dict[str, Any]:
    """The metadata of a scores table, checked as ``read_scores`` checks it, without its rows."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from ambiemo.core.tables import read_meta

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such table; has the score stage run?")
    meta = read_meta(path)
    if meta.get("kind") != "scores" or "js" not in pq.read_schema(path).names:
        raise ScoringError(
            f"{path}: not a scores table; make one with `ambiemo score --manifest ... --predictions ...`"
        )
    return meta
