"""``ambiemo cache verify [--repair]`` on any file, damaged ones included: salvage what can be read.

A cache file that SQLite reports malformed (or does not recognise at all: a truncated file, an
overwritten header, a zeroed page) is repaired the way SQLite's own ``.recover`` does it:

1. every row SQLite still reads through the tables, and every row decoded straight from the
   file's leaf pages and write-ahead log (``ambiemo.inference.cache.pages``), is collected;
2. an entry is kept only when it is of this cache format and its value matches its SHA-256, and
   an identity only when its name is the SHA-256 of its value, so nothing misread is ever used;
3. the kept rows go into a fresh file beside the damaged one, which is then moved aside as
   ``generations.sqlite.damaged-<UTC time>`` (never deleted: it is the user's), and the fresh
   file takes its name. The report says how many entries were kept.

Lifetime counters are kept where SQLite can still read them (they are bookkeeping, not results).
One repair at a time: a lock file beside the cache (``filelock``) makes a second one wait.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from ambiemo.inference.cache import pages
from ambiemo.inference.cache.errors import CacheError, is_damage, read_only, writable
from ambiemo.inference.cache.keys import checksum
from ambiemo.inference.cache.schema import DB_NAME, SCHEMA, entry_problem
from ambiemo.inference.cache.store import GenerationCache

log = logging.getLogger(__name__)

ENTRY_COLUMNS = ("key", "identity", "model", "kind", "format", "checksum", "value")


def _sound_entry(row: tuple[Any, ...]) -> bool:
    if len(row) != len(ENTRY_COLUMNS) or not all(isinstance(v, str) for i, v in enumerate(row) if i != 4):
        return False
    return isinstance(row[4], int) and entry_problem(row[4], row[5], row[6]) is None


def _sound_identity(row: tuple[Any, ...]) -> bool:
    return len(row) == 3 and all(isinstance(v, str) for v in row) and checksum(row[1]) == row[0]


def _through_sqlite(path: Path) -> tuple[list[tuple], list[tuple], list[tuple], int]:
    """Entries, identities and counters SQLite still reads (row by row, up to the first damage), and
    how many entry rows it read at all."""
    entries: list[tuple] = []
    identities: list[tuple] = []
    counters: list[tuple] = []
    seen = 0
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return entries, identities, counters, seen
    try:
        for sql, out in (
            (f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries", entries),
            ("SELECT identity, value, keys FROM identities", identities),
            ("SELECT identity, hits, misses, corrupt, stale FROM counters", counters),
        ):
            try:
                for row in conn.execute(sql):
                    out.append(tuple(row))
                    seen += out is entries
            except sqlite3.Error:
                continue  # the rows before the damage are kept; the page scan finds those after it
    finally:
        conn.close()
    return entries, identities, counters, seen


def salvage(folder: str | Path) -> dict[str, Any]:
    """Copy every readable, sound row of ``folder``'s damaged cache file into a fresh file; move the
    damaged file aside. Returns {path, moved_to, entries_kept, entries_dropped, identities_kept,
    counters_kept}."""
    path = Path(folder) / DB_NAME
    if not path.exists():
        raise CacheError(f"{path}: no cache file to repair", path, "gone")
    if not writable(path.parent):
        raise read_only(path, "repairing the cache (a fresh file is written beside the damaged one)")
    with FileLock(str(path) + ".repair.lock"):
        sql_entries, sql_identities, counters, _ = _through_sqlite(path)
        entries = {r[0]: r for r in sql_entries if _sound_entry(r)}
        identities = {r[0]: r for r in sql_identities if _sound_identity(r)}
        dropped = {r[0] for r in sql_entries if not _sound_entry(r)}
        for _, rows in pages.scan(path):
            found = 0
            for row in rows:
                if _sound_entry(row):
                    found += 1
                    entries.setdefault(row[0], row)
                elif _sound_identity(row):
                    identities.setdefault(row[0], row)
                elif len(row) == len(ENTRY_COLUMNS) and isinstance(row[0], str) and len(row[0]) == 64:
                    dropped.add(row[0])
            if found:
                break  # this page size reads the file; the others would only find the same rows
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        fresh = path.with_name(f".{DB_NAME}.salvage-{stamp}.tmp")
        _write_fresh(fresh, entries.values(), identities.values(), counters)
        aside = path.with_name(f"{DB_NAME}.damaged-{stamp}")
        path.rename(aside)
        wal, shm = path.with_name(DB_NAME + "-wal"), path.with_name(DB_NAME + "-shm")
        if wal.exists() and wal.stat().st_size > 0:
            wal.rename(aside.with_name(aside.name + "-wal"))  # it belongs to the damaged file
        wal.unlink(missing_ok=True)
        shm.unlink(missing_ok=True)  # an index of the WAL, rebuilt by SQLite
        fresh.rename(path)
    report = {
        "path": str(path),
        "moved_to": str(aside),
        "entries_kept": len(entries),
        "entries_dropped": len(dropped - set(entries)),
        "identities_kept": len(identities),
        "counters_kept": len(counters),
    }
    log.warning(
        "%s was damaged: %d entries salvaged into a fresh file (%d unreadable rows dropped); the damaged file is %s",
        path,
        report["entries_kept"],
        report["entries_dropped"],
        aside,
    )
    return report


def _write_fresh(fresh: Path, entries: Any, identities: Any, counters: list[tuple]) -> None:
    fresh.unlink(missing_ok=True)
    conn = sqlite3.connect(fresh, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")  # one self-contained file to rename into place
        conn.execute("BEGIN")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        marks = ", ".join("?" * len(ENTRY_COLUMNS))
        conn.executemany(f"INSERT OR REPLACE INTO entries ({', '.join(ENTRY_COLUMNS)}) VALUES ({marks})", entries)
        conn.executemany("INSERT OR REPLACE INTO identities (identity, value, keys) VALUES (?, ?, ?)", identities)
        conn.executemany(
            "INSERT OR REPLACE INTO counters (identity, hits, misses, corrupt, stale) VALUES (?, ?, ?, ?, ?)", counters
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def verify_folder(folder: str | Path, repair: bool = False) -> dict[str, Any]:
    """``GenerationCache.verify`` that also meets a file too damaged to open: without ``repair`` a
    damaged file raises ``CacheError`` (naming the repair command); with it, the file is salvaged
    (``salvage``, reported under ``"salvaged"``) and the fresh file verified."""
    try:
        cache = GenerationCache(folder)
        report = cache.verify(repair=repair)
    except CacheError as e:
        if not repair or e.kind != "damaged":
            raise
        cache = None
        report = {"integrity": str(e)}
    except sqlite3.Error as e:  # pragma: no cover - every path above translates; kept as a last guard
        if not (repair and is_damage(e)):
            raise
        cache, report = None, {"integrity": str(e)}
    if report["integrity"] == "ok" or not repair:
        return {**report, "salvaged": None}
    if cache is not None:
        cache.close()
    salvaged = salvage(folder)
    after = GenerationCache(folder).verify(repair=True)
    return {**after, "salvaged": salvaged}
