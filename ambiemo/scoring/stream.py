"""The score stage at study scale: ``score_run`` written one dataset × model at a time.

``write_score_run(params, path)`` scores the same cells with the same references as
``score_run(params).write(params, path)`` and writes the same file (rows, order, column types and
metadata), but never holds more than one dataset × model of score rows: each is scored, sorted and
put aside as a part file beside the output; then the parts are written, in the table's sort order
and with the column types the whole table would have had, into one parquet, and removed. Memory is
bounded by the largest dataset × model (31 strategy × budget readouts of a corpus), not by the study.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.core.blas import one_blas_thread
from ambiemo.core.layout import Layout
from ambiemo.core.tables import isin
from ambiemo.scoring import references as R
from ambiemo.scoring.run import (
    SKIPPED_COLUMNS,
    UNANSWERED_COLUMNS,
    _records,
    human_ceilings,
    n_cells,
    run_cells,
    score_cell,
)
from ambiemo.scoring.schema import KEYS, ScoringError, scores_record
from ambiemo.scoring.scores import score_predictions


@dataclass
class WrittenScores:
    """What ``write_score_run`` wrote: the file, its row and cell counts, and the tables
    ``ScoreRun`` carries beside the scores."""

    path: Path
    n_rows: int
    parse_failures: int
    unanswered: pd.DataFrame
    skipped: pd.DataFrame
    ceilings: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: pd.DataFrame = field(default_factory=pd.DataFrame)  # the distinct KEYS of the rows

    @property
    def n_cells(self) -> int:
        return n_cells(self.keys, self.unanswered)


class _Parts:
    """Score frames put aside per dataset × model, with what the whole table's metadata needs."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.files, self.heads, self.keys = folder, {}, [], []
        self.attrs: dict[str, Any] | None = None
        self.missing: dict[str, int] = {}
        self.n_rows = self.parse_failures = 0
        self.models: set[str] = set()

    def put(self, dataset: str, model: str, frames: list[pd.DataFrame]) -> None:
        df = pd.concat(frames, ignore_index=True).sort_values([*KEYS, "utt_id"], kind="stable")
        df = df.reset_index(drop=True)
        if self.attrs is None:
            self.attrs = dict(frames[0].attrs)
        for f in frames:
            self.missing.update(f.attrs.get("missing", {}))
        self.n_rows += len(df)
        self.parse_failures += int((~df["parsed_ok"].astype(bool)).sum())
        self.models.add(model)
        self.heads.append(df.head(1))
        self.keys.append(df[list(KEYS)].drop_duplicates())
        path = self.folder / f"{len(self.files):05d}.parquet"
        df.to_parquet(path, index=False)
        self.files[(dataset, model)] = path


@one_blas_thread
def write_score_run(params: Mapping[str, Any], path: str | Path | None = None) -> WrittenScores:
    """Score every cell of the active run with its references and write the scores (module
    docstring); the same file as ``score_run(params).write(params, path)``."""
    from ambiemo.data.manifest import read_manifest

    layout = Layout.from_params(params)
    path = Path(path) if path is not None else layout.scores
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.parts."))
    try:
        parts = _Parts(folder)
        unanswered, skipped, inputs, ceilings, ratings = [], [], [], {}, []
        cells = run_cells(params)
        for dataset in dict.fromkeys(d for d, _, _, _ in cells):
            manifest = read_manifest(layout.manifest(dataset))
            inputs.append(str(layout.manifest(dataset)))
            asked: set[str] = set()
            for model in dict.fromkeys(m for d, m, _, _ in cells if d == dataset):
                frames = []
                for _, _, strategy, file in (c for c in cells if c[0] == dataset and c[1] == model):
                    cell = (dataset, model, strategy)
                    scored = score_cell(manifest, cell, file, params, inputs, skipped, unanswered)
                    if scored is not None:
                        frames.append(scored)
                        asked |= set(scored["utt_id"].astype(str).to_numpy(dtype=object))
                if frames:
                    parts.put(dataset, model, frames)
            if asked:  # the references answer exactly the utterances the run's cells answer
                keep = isin(manifest.df["utt_id"].astype(str), list(asked))
                sub = replace(manifest, df=manifest.df[keep].reset_index(drop=True))
                refs = score_predictions(sub, R.reference_predictions(sub.df, sub.labels), params)
                ceiling, source, used = human_ceilings(sub, layout.ratings(dataset), params)
                ceilings[dataset] = {"source": source, "excluded": ceiling.attrs["excluded"], "utterances": len(asked)}
                ratings += used  # after every cell's files, as score_run lists them
                parts.put(dataset, R.MODEL, [refs, ceiling])
        if not parts.files or parts.attrs is None:
            raise ScoringError(
                f"no cell of the run has a scored row: {len(skipped)} skipped (no model of run.models can serve "
                "run.strategies; see the reasons in the skipped table), the others wrote no rows"
            )
        inputs += ratings
        unanswered_df = pd.concat(unanswered, ignore_index=True)[UNANSWERED_COLUMNS]
        skipped_df = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
        meta = scores_record(
            params,
            labels=parts.attrs["labels"],
            ambiguity_order=parts.attrs["ambiguity_order"],
            missing=parts.missing,
            parse_failures=parts.parse_failures,
            models=parts.models,
            inputs=inputs,
            extra={"unanswered": _records(unanswered_df), "skipped": _records(skipped_df), "ceilings": ceilings},
        )
        _join(parts, path, meta)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return WrittenScores(
        path=path,
        n_rows=parts.n_rows,
        parse_failures=parts.parse_failures,
        unanswered=unanswered_df,
        skipped=skipped_df,
        ceilings=ceilings,
        keys=pd.concat(parts.keys, ignore_index=True),
    )


def _join(parts: _Parts, path: Path, meta: Mapping[str, Any]) -> None:
    """The parts, in the table's sort order (dataset, then model), with the column types of their
    concatenation, into one parquet written atomically with ``meta``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ambiemo.core.tables import META_KEY, user_file_mode

    like = pd.concat(parts.heads, ignore_index=True)  # the whole table's columns and types
    columns, dtypes = list(like.columns), like.dtypes
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    writer = None
    try:
        for key in sorted(parts.files):
            df = pd.read_parquet(parts.files[key]).reindex(columns=columns).astype(dtypes)
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                extra = {META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()}
                schema = table.schema.with_metadata({**(table.schema.metadata or {}), **extra})
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.cast(writer.schema))
        writer.close()
        os.chmod(tmp, user_file_mode())  # mkstemp's 0600 would outlive the rename
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
