"""The store: one SQLite file in WAL mode, safe across threads and processes, that names itself in every error.

Every write is one ``BEGIN IMMEDIATE`` transaction, so a crash (even ``kill -9``) leaves either
the whole entry or none; writers queue on ``busy_timeout``. Any SQLite error becomes a
``CacheError`` naming the file (``ambiemo.inference.cache.errors``).

Read-only. A cache file or folder that may not be written is opened read-only (an SQLite
``mode=ro`` URI, ``immutable`` unless a WAL is left to replay): a fully cached
rerun works, since a hit writes nothing there (lookups are counted in this object only, not in
the file's lifetime counters). A miss raises ``CacheError`` naming the file and its permission
before the model is called (``require_writable``).

Gone. The file's identity (device, inode) is taken when it is opened; every write checks it, and
``check_present`` does at the end of a run, so a cache deleted or replaced during a run is
reported (``lost``) instead of writing into an unlinked file that nobody will read again.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ambiemo.inference.cache.errors import CacheError, read_only, translate, writable
from ambiemo.inference.cache.keys import canonical_json, checksum, identity_sha, key_identity
from ambiemo.inference.cache.maintenance import Maintenance
from ambiemo.inference.cache.schema import (
    BUSY_TIMEOUT_S,
    CACHE_FORMAT,
    DB_NAME,
    SCHEMA,
    V1_TABLES,
    entry_problem,
    transaction,
)

log = logging.getLogger(__name__)

# Bad entries reported one by one per cache object; after that only the counters grow (and a last warning).
MAX_ENTRY_WARNINGS = 20

# Connections a forked child inherited from its parent, kept referenced so they are never closed.
_INHERITED: list[sqlite3.Connection] = []


class GenerationCache(Maintenance):
    """A key -> JSON store in one SQLite file, safe across threads and processes.

    ``stats()`` reports this object's lookups (``hits``, ``misses``), the bad entries it met
    (``corrupt``: checksum mismatch; ``stale``: another format) and the store's size (``entries``,
    ``bytes`` on disk). Lifetime counts per model identity are kept in the file too
    (``identity_stats()``); ``ambiemo cache stats`` shows them. ``read_only``: the file or folder
    may not be written (see the module docstring); ``lost``: why the file is no longer the one
    opened, or None.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.hits = self.misses = self.corrupt = self.stale = 0
        self.lost: str | None = None
        self._warned = 0
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the counters above
        self._file_id: tuple[int, int] | None = None
        self.read_only = False
        self._connect()  # create the file and schema now, so errors surface here

    # -- connection ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """One connection per thread and per process (a forked child opens its own)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            if self._local.pid == os.getpid():
                return conn
            # Inherited through fork: never close it here. Closing it would let this process think it is
            # the file's last user (it does not hold the parent's locks) and checkpoint or delete the WAL.
            _INHERITED.append(conn)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(
                f"cannot create the generation cache folder {self.folder}: {e}; set paths.cache_dir "
                "in params.yaml or the environment variable AMBIEMO_CACHE_DIR to a writable folder"
            ) from e
        exists = self.path.exists()
        self.read_only = (exists and not writable(self.path)) or not writable(self.folder)
        if self.read_only and not exists:
            raise read_only(self.path, "creating a new cache")
        try:
            conn = self._open()
            deadline = time.monotonic() + BUSY_TIMEOUT_S
            while True:
                try:
                    self._setup(conn)
                    break
                except sqlite3.OperationalError as e:
                    # Processes that create the file at the same moment can see "locked" while switching it to
                    # WAL, which SQLite reports at once instead of waiting: wait and try again.
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(random.uniform(0.01, 0.1))
        except sqlite3.Error as e:
            raise translate(self.path, e, "opening the cache") from e
        if self._file_id is None:
            st = self.path.stat()
            self._file_id = (st.st_dev, st.st_ino)
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            wal = self.path.with_name(DB_NAME + "-wal")
            # Nobody may write the file, and it has no WAL to replay: read it as it is, creating nothing beside it
            # (a plain read-only open would still create the WAL's index file).
            immutable = not (wal.exists() and wal.stat().st_size > 0)
            uri = f"{self.path.absolute().as_uri()}?mode=ro{'&immutable=1' if immutable else ''}"
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        else:
            # isolation_level=None: no implicit transactions; every write below is its own explicit one.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
            # NORMAL is durable against application crashes in WAL mode; only a power cut may lose the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        if self.read_only:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
            if not {"entries", "identities", "counters"} <= tables or "checksum" not in columns:
                raise read_only(self.path, "bringing an older or empty cache file to this format")
            return
        # The journal mode is a property of the file: the first connection switches it, later ones see "wal".
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise CacheError(
                f"{self.path}: SQLite refused WAL mode (got {mode!r}); is the cache on a network "
                "file system? Point AMBIEMO_CACHE_DIR at a local folder",
                self.path,
            )
        with transaction(conn):
            columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
            if columns and "checksum" not in columns:
                self._set_aside_v1(conn)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def _set_aside_v1(self, conn: sqlite3.Connection) -> None:
        """A format-1 file: rename its tables so that nothing reads them, and say so."""
        n = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        for table in V1_TABLES:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
                conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
        conn.execute("DROP INDEX IF EXISTS entries_model")
        log.warning(
            "%s was written by an older ambiemo (cache format 1, without checksums): its %d entries are "
            "ignored and will be recomputed as needed; `ambiemo cache verify --repair` deletes them",
            self.path,
            n,
        )

    def _sql(self, doing: str):
        """A context that turns any SQLite error into a ``CacheError`` naming the file."""
        return _Translate(self.path, doing)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    # -- the file is still the one opened -------------------------------------------------
    def check_present(self) -> str | None:
        """None while the file is the one opened; else why not (also kept in ``lost`` and logged once)."""
        if self.lost is None:
            try:
                st = self.path.stat()
                if (st.st_dev, st.st_ino) != self._file_id:
                    self.lost = f"{self.path} was replaced by another file during the run"
            except FileNotFoundError:
                self.lost = f"{self.path} was deleted during the run"
            if self.lost is not None:
                log.error(
                    "generation cache %s; results computed from now on are not stored, and the next run "
                    "makes those calls again",
                    self.lost,
                )
        return self.lost

    def require_writable(self, n: int, what: str) -> None:
        """Raise ``CacheError`` when ``n`` new results of ``what`` could not be stored (call before computing them)."""
        if n and self.read_only:
            raise read_only(self.path, f"storing {n} new result(s) of {what} (not in the cache)")

    # -- key/value ----------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored values of those ``keys`` that exist and are sound (no hit/miss counting).

        An entry that fails its checksum or is of another format is left out (so the caller
        recomputes it and ``put_many`` overwrites it), reported and counted.
        """
        conn = self._connect()
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        bad = []
        with self._sql("reading entries"):
            for i in range(0, len(unique), 500):  # stay below SQLite's bound-parameter limit
                chunk = unique[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, model, identity, format, checksum, value FROM entries WHERE key IN ({marks})", chunk
                )
                for key, model, ident, fmt, digest, value in rows:
                    problem = entry_problem(fmt, digest, value)
                    if problem is None:
                        found[key] = value
                    else:
                        bad.append((problem, key, model, ident))
        for problem, key, model, ident in bad:  # after the read: reporting writes a counter
            self.report(problem, key, model, ident)
        return found

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def report(self, problem: str, key: str, model: str, ident: str) -> None:
        """Warn about and count one bad entry (``stale`` or ``corrupt``)."""
        with self._lock:
            if problem == "stale":
                self.stale += 1
            else:
                self.corrupt += 1
            self._warned += 1
            warned = self._warned
        what = "is of another cache format" if problem == "stale" else "fails its checksum (corrupted or truncated)"
        if warned <= MAX_ENTRY_WARNINGS:
            log.warning(
                "generation cache %s: entry %s of model %r (identity %s) %s; not used, recomputed",
                self.path,
                key[:16],
                model,
                ident[:12],
                what,
            )
        if warned == MAX_ENTRY_WARNINGS:
            log.warning("generation cache %s: further bad entries are only counted", self.path)
        if self.read_only:
            return
        col = "stale" if problem == "stale" else "corrupt"
        conn = self._connect()
        with self._sql("counting a bad entry"), transaction(conn):
            conn.execute(
                f"INSERT INTO counters (identity, {col}) VALUES (?, 1) "
                f"ON CONFLICT(identity) DO UPDATE SET {col} = {col} + 1",
                (ident,),
            )

    # Kept for callers of the older private name.
    _report = report

    def register(self, identity: dict[str, Any], model_key: str) -> str:
        """Record ``identity`` (used under params key ``model_key``) in the file; returns its identity_sha.
        Nothing is written when it is recorded already (or the cache is read-only)."""
        sha = identity_sha(identity)
        conn = self._connect()
        with self._sql("recording a model identity"):
            row = conn.execute("SELECT keys FROM identities WHERE identity = ?", (sha,)).fetchone()
            if self.read_only or (row is not None and model_key in json.loads(row[0])):
                return sha
            with transaction(conn):
                row = conn.execute("SELECT keys FROM identities WHERE identity = ?", (sha,)).fetchone()
                keys = json.loads(row[0]) if row else []
                conn.execute(
                    "INSERT OR REPLACE INTO identities (identity, value, keys) VALUES (?, ?, ?)",
                    (sha, canonical_json(key_identity(identity)), json.dumps(sorted({*keys, model_key}))),
                )
        return sha

    def put_many(self, identity: str, model: str, kind: str, items: Sequence[tuple[str, str]]) -> None:
        """Store ``(key, json)`` pairs of the model ``identity`` (an identity_sha, written under params
        key ``model``) in one atomic transaction, each with its format and checksum. Nothing is
        written once the file is gone (``lost``)."""
        if not items:
            return
        self.require_writable(len(items), f"model {model!r}")
        if self.check_present() is not None:
            return
        conn = self._connect()
        with self._sql("storing entries"), transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO entries (key, identity, model, kind, format, checksum, value) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(k, identity, model, kind, CACHE_FORMAT, checksum(v), v) for k, v in items],
            )

    def count(self, identity: str, hits: int, misses: int) -> None:
        """Add lookups to this object's counters and, where the file may be written, to its lifetime
        counters of ``identity``."""
        with self._lock:
            self.hits += hits
            self.misses += misses
        if (hits or misses) and not self.read_only and self.lost is None:
            conn = self._connect()
            with self._sql("counting lookups"), transaction(conn):
                conn.execute(
                    "INSERT INTO counters (identity, hits, misses) VALUES (?, ?, ?) "
                    "ON CONFLICT(identity) DO UPDATE SET hits = hits + excluded.hits, "
                    "misses = misses + excluded.misses",
                    (identity, hits, misses),
                )


class _Translate:
    def __init__(self, path: Path, doing: str) -> None:
        self.path, self.doing = path, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sqlite3.Error):
            raise translate(self.path, exc, self.doing) from exc
