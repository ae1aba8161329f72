"""Summary and statistics tables as parquet with provenance, and a CSV of the same beside each.

``write_result(df, path, kind, params, inputs)`` writes ``path`` (parquet, through
``ambiemo.core.tables``) with metadata ``{kind, inputs, input_hashes (SHA-256 of each input file),
provenance (the params subset the table depends on, package versions, the code version as
``ambiemo.core.provenance`` gives it), **extra}`` and ``path.with_suffix(".csv")`` for people. Later
stages read the parquet (``read_result``), which keeps dtypes; the CSV is never read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

CSV_FLOAT_FORMAT = "%.6g"


def file_hashes(paths: Iterable[Any]) -> dict[str, str]:
    """SHA-256 of each existing input file (a folder or a missing path is recorded as None)."""
    out: dict[str, Any] = {}
    for path in map(Path, paths):
        out[str(path)] = _sha256(path) if path.is_file() else None
    return out


# A stage writes several tables from the same input (the study's scores: gigabytes): each file is
# read once per process, its digest kept under its identity and version (a rewritten file has
# another size, modification time or inode, and is read again).
_DIGESTS: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def write_result(
    df: pd.DataFrame,
    path: str | Path,
    kind: str,
    params: Mapping[str, Any] | None = None,
    inputs: Iterable[Any] = (),
    **extra: Any,
) -> Path:
    """Write ``df`` to ``path`` (parquet with provenance) and the same table as CSV beside it."""
    from ambiemo.core.provenance import provenance
    from ambiemo.core.tables import write_table

    path = Path(path)
    if path.suffix != ".parquet":
        raise ValueError(f"{path}: a result table is written as .parquet (its CSV goes beside it)")
    inputs = [str(x) for x in inputs]
    plain = df.copy()
    plain.attrs = {}
    meta = {
        "kind": kind,
        "inputs": inputs,
        "input_hashes": file_hashes(inputs),
        "provenance": provenance(dict(params or {}), (params or {}).get("seed")),
        **extra,
    }
    write_table(plain, path, meta)
    plain.to_csv(path.with_suffix(".csv"), index=False, float_format=CSV_FLOAT_FORMAT)
    return path


def read_result(path: str | Path, kind: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A result table and its metadata; ``kind`` checks which table it is."""
    from ambiemo.core.tables import read_table

    df, meta = read_table(path)
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path}: holds a {meta.get('kind')!r} table, not {kind!r}")
    return df, meta


def params_subset(params: Mapping[str, Any] | None, *sections: str) -> dict[str, Any]:
    """The params sections a table depends on (``seed`` always), for its provenance."""
    params = params or {}
    return {k: params[k] for k in ("seed", *sections) if k in params}
