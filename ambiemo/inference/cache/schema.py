"""The cache file's layout: its tables, its name, and the transaction every write is."""

from __future__ import annotations

import contextlib
import sqlite3

from ambiemo.inference.cache.keys import CACHE_FORMAT, checksum

__all__ = ["BUSY_TIMEOUT_S", "CACHE_FORMAT", "DB_NAME", "SCHEMA", "V1_TABLES", "entry_problem", "transaction"]

DB_NAME = "generations.sqlite"
# Seconds a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 120.0


SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key      TEXT PRIMARY KEY,   -- sha256 of the canonical JSON of everything that determines the value
    identity TEXT NOT NULL,      -- identity_sha of the model identity (see the identities table)
    model    TEXT NOT NULL,      -- the params key that wrote it: for messages only, never for lookups
    kind     TEXT NOT NULL,      -- 'generate' (one candidate) or 'score_options'
    format   INTEGER NOT NULL,   -- CACHE_FORMAT when written
    checksum TEXT NOT NULL,      -- sha256 of value
    value    TEXT NOT NULL       -- JSON
);
CREATE INDEX IF NOT EXISTS entries_identity ON entries (identity);
CREATE TABLE IF NOT EXISTS identities (
    identity TEXT PRIMARY KEY,   -- identity_sha
    value    TEXT NOT NULL,      -- the identity, canonical JSON
    keys     TEXT NOT NULL       -- JSON list of the params keys that have used it
);
CREATE TABLE IF NOT EXISTS counters (
    identity TEXT PRIMARY KEY,
    hits     INTEGER NOT NULL DEFAULT 0,
    misses   INTEGER NOT NULL DEFAULT 0,
    corrupt  INTEGER NOT NULL DEFAULT 0,
    stale    INTEGER NOT NULL DEFAULT 0
);
"""
# Tables of a format-1 file, renamed aside so they are never read.
V1_TABLES = ("entries", "counters")


def entry_problem(fmt: int, digest: str, value: str) -> str | None:
    """None for a sound entry; 'stale' (another format) or 'corrupt' (value does not match its checksum)."""
    if fmt != CACHE_FORMAT:
        return "stale"
    if not isinstance(value, str) or not isinstance(digest, str) or checksum(value) != digest:
        return "corrupt"
    return None


class transaction:  # noqa: N801 - used like a function, in a with statement
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error): takes the write lock up front, so
    two writers queue on ``busy_timeout`` instead of deadlocking on a lock upgrade."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
            return
        # The error that got here says more (a damaged file may refuse the rollback too).
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")
