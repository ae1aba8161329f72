"""Parquet tables that cross a stage boundary, with their metadata.

Every table the pipeline writes carries a JSON document under the parquet schema
metadata key ``ambiemo``: the label set (name and order) and the provenance of the
run that wrote it. ``write_table`` and ``read_table`` are the only way stages write and
read such tables; schema checks for each kind of table live beside their column lists
(``ambiemo.manifest`` for manifests, ``ambiemo.predictions`` for predictions).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"ambiemo"


def write_table(df: pd.DataFrame, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``df`` atomically to ``path`` with ``meta`` stored in the parquet metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    existing = table.schema.metadata or {}
    table = table.replace_schema_metadata(
        {**existing, META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()}
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``ambiemo`` metadata of a parquet file ({} if it has none)."""
    md = pq.read_schema(path).metadata or {}
    raw = md.get(META_KEY)
    return json.loads(raw) if raw else {}


def read_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table and its ``ambiemo`` metadata."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such table; has the stage that writes it run?")
    return pd.read_parquet(path), read_meta(path)


@dataclass
class LabelledTable:
    """A checked table and its metadata whose per-label columns (``p_<label>``, ...) follow the
    label set recorded in ``meta["label_set"]``. Manifests and predictions are such tables."""

    df: pd.DataFrame
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.meta["label_set"]["labels"])

    @property
    def label_set(self) -> str:
        return self.meta["label_set"]["name"]

    def matrix(self, prefix: str) -> np.ndarray:
        """The columns ``<prefix><label>`` as an (n_rows, n_labels) array in label-set order."""
        return self.df[[f"{prefix}{x}" for x in self.labels]].to_numpy(dtype=float)

    def distributions(self) -> np.ndarray:
        """The ``p_<label>`` distributions, shape (n_rows, n_labels), in label-set order."""
        return self.matrix("p_")

    def __len__(self) -> int:
        return len(self.df)
