"""The generation cache: never pay twice for the same model call, and never answer from a bad entry.

Every result a model returns is stored under a key that covers everything that can change it:
the model's ``identity`` as a whole (route, adapter version, checkpoint, revision, the hash of
its output-affecting settings: whatever the adapter puts there counts), the full conversation,
a hash of the audio, every ``GenerationConfig`` field (mode, n, max_new_tokens, temperature,
top_p, num_beams, seed) and the candidate's sample index; for ``score_options``, the options and
the prefix instead of the config. A ``score_options`` entry stores the log-probabilities with the
call's prompt tokens and seconds, so a rerun reports the usage of the call that made them (an
entry of the older layout, log-probabilities alone, counts as stale and is recomputed). The
params key that names the model is *not* part of it
(an identity's ``"key"`` entry is dropped): renaming a model in params.yaml reuses its entries,
while any changed setting misses. A rerun with the same inputs makes zero model calls.

Integrity. Each entry carries the format version it was written in and the SHA-256 of its
value. An entry whose value does not match its checksum (flipped bytes, a truncated value) or
whose format is not this one is never used: it is reported (a warning naming the entry's key,
model and identity; the counters ``corrupt`` and ``stale``), recomputed and overwritten. A
cache file written by an older ambiemo (format 1, no checksums) is set aside on first open
(its tables renamed to ``*_v1``, reported with their size) and never read; ``ambiemo cache
verify --repair`` deletes bad entries and old tables. ``ambiemo cache verify`` checks a whole
cache, SQLite's own ``integrity_check`` included.

Storage is one SQLite file in WAL mode (``<folder>/generations.sqlite``). Every write is one
transaction, so a crash (even ``kill -9``) leaves either the whole entry or none, and WAL lets
DVC stages running in parallel processes read while one of them writes; writers wait for each
other (``busy_timeout``) instead of failing. WAL needs a local file system (not NFS).

Usage::

    cache = GenerationCache(cache_dir(params))
    model = CachedModel(load_model(key, spec), cache)
    model.generate(requests, config)          # same contract as the wrapped model

What is not cached: candidates whose ``meta`` has an ``"error"`` (an API request that failed
after its retries, see ``ambiemo.models._http``) and ``score_options`` results containing NaN
(the same failure for label scoring), so that the next run tries them again.
"""

from __future__ import annotations

import hashlib
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

import numpy as np

from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    Capabilities,
    GenerationConfig,
    OptionScores,
    Usage,
)

log = logging.getLogger(__name__)

# Bump when the key or value layout changes: entries of another format are then ignored (and reported).
# 1: keys on the params key, no checksums. 2: keys on the identity without the params key, checksums.
CACHE_FORMAT = 2
DB_NAME = "generations.sqlite"
# Seconds a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 120.0
# Bad entries reported one by one per cache object; after that only the counters grow (and a last warning).
MAX_ENTRY_WARNINGS = 20

# Connections a forked child inherited from its parent, kept referenced so they are never closed.
_INHERITED: list[sqlite3.Connection] = []

_SCHEMA = """
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
_V1_TABLES = ("entries", "counters")


class CacheError(RuntimeError):
    """The cache file itself is damaged beyond single entries (SQLite reports a malformed file)."""


def _json_default(obj: Any) -> Any:
    """Numpy scalars and arrays that adapters put into meta become plain JSON values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} in the generation cache: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace); floats round-trip exactly."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def checksum(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def key_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a model identity that enters cache keys: all of it but the params key."""
    return {k: v for k, v in identity.items() if k != "key"}


def identity_sha(identity: dict[str, Any]) -> str:
    """A stable name for a model identity: sha256 of its canonical JSON (params key left out)."""
    return hashlib.sha256(canonical_json(key_identity(identity)).encode()).hexdigest()


def make_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"format": CACHE_FORMAT, **payload}).encode()).hexdigest()


def generation_key(identity: dict[str, Any], request: AudioRequest, config: GenerationConfig, sample_index: int) -> str:
    """Key of candidate ``sample_index`` of ``config.n`` for one request."""
    return make_key(
        {
            "kind": "generate",
            "model": key_identity(identity),
            "conversation": request.conversation(),
            "audio_sha1": request.audio_sha1(),
            "config": config.as_dict(),
            "sample_index": sample_index,
        }
    )


def generation_keys(identity: dict[str, Any], request: AudioRequest, config: GenerationConfig) -> list[str]:
    """``[generation_key(identity, request, config, i) for i in range(config.n)]``, hashing the
    audio and serialising the conversation once instead of once per candidate."""
    base = {
        "kind": "generate",
        "model": key_identity(identity),
        "conversation": request.conversation(),
        "audio_sha1": request.audio_sha1(),
        "config": config.as_dict(),
    }
    return [make_key({**base, "sample_index": i}) for i in range(config.n)]


def scoring_key(identity: dict[str, Any], request: AudioRequest, options: Sequence[str], prefix: str) -> str:
    return make_key(
        {
            "kind": "score_options",
            "model": key_identity(identity),
            "conversation": request.conversation(),
            "audio_sha1": request.audio_sha1(),
            "options": list(options),
            "prefix": prefix,
        }
    )


def candidate_to_json(c: Candidate) -> str:
    return canonical_json(
        {
            "text": c.text,
            "logprob": c.logprob,
            "token_logprobs": c.token_logprobs,
            "n_tokens": c.n_tokens,
            "meta": c.meta,
        }
    )


def scores_to_json(scores: OptionScores) -> str:
    """An option-scoring result as stored: log-probabilities, prompt tokens, seconds (cost is not
    stored: a cache hit costs nothing)."""
    return canonical_json(
        {
            "logprobs": [float(x) for x in scores.logprobs],
            "prompt_tokens": None if scores.prompt_tokens is None else int(scores.prompt_tokens),
            "wall_s": float(scores.wall_s),
        }
    )


def scores_from_json(s: str) -> OptionScores | None:
    """A stored option-scoring result; None for an entry of the old layout (a bare list of
    log-probabilities, without usage), which the caller recomputes."""
    d = json.loads(s)
    if not isinstance(d, dict):
        return None
    return OptionScores(np.asarray(d["logprobs"], dtype=np.float64), d["prompt_tokens"], float(d["wall_s"]))


def candidate_from_json(s: str) -> Candidate:
    d = json.loads(s)
    return Candidate(
        text=d["text"], logprob=d["logprob"], token_logprobs=d["token_logprobs"], n_tokens=d["n_tokens"], meta=d["meta"]
    )


class GenerationCache:
    """A key -> JSON store in one SQLite file, safe across threads and processes.

    ``stats()`` reports this object's lookups (``hits``, ``misses``), the bad entries it met
    (``corrupt``: checksum mismatch; ``stale``: another format) and the store's size (``entries``,
    ``bytes`` on disk). Lifetime counts per model identity are kept in the file too
    (``identity_stats()``); ``ambiemo cache stats`` shows them.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.hits = self.misses = self.corrupt = self.stale = 0
        self._warned = 0
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the counters above
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
        # isolation_level=None: no implicit transactions; every write below is its own explicit one.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # NORMAL is durable against application crashes in WAL mode; only a power cut may lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._setup(conn)
                break
            except sqlite3.OperationalError as e:
                # Processes that create the file at the same moment can see "locked" while switching it to WAL,
                # which SQLite reports at once instead of waiting: wait and try again.
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) from e
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # The journal mode is a property of the file: the first connection switches it, later ones see "wal".
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(
                f"{self.path}: SQLite refused WAL mode (got {mode!r}); is the cache on a network "
                "file system? Point AMBIEMO_CACHE_DIR at a local folder"
            )
        with _transaction(conn):
            columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
            if columns and "checksum" not in columns:
                self._set_aside_v1(conn)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def _set_aside_v1(self, conn: sqlite3.Connection) -> None:
        """A format-1 file: rename its tables so that nothing reads them, and say so."""
        n = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        for table in _V1_TABLES:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
                conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
        conn.execute("DROP INDEX IF EXISTS entries_model")
        log.warning(
            "%s was written by an older ambiemo (cache format 1, without checksums): its %d entries are "
            "ignored and will be recomputed as needed; `ambiemo cache verify --repair` deletes them",
            self.path,
            n,
        )

    def _damaged(self, e: Exception) -> CacheError:
        return CacheError(
            f"{self.path}: SQLite cannot read the cache file ({e}); run `ambiemo cache verify` to see what is "
            "damaged, or move the file away to start a fresh cache (every call is then made again)"
        )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

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
        try:
            for i in range(0, len(unique), 500):  # stay below SQLite's bound-parameter limit
                chunk = unique[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, model, identity, format, checksum, value FROM entries WHERE key IN ({marks})", chunk
                )
                for key, model, ident, fmt, digest, value in rows:
                    problem = _entry_problem(fmt, digest, value)
                    if problem is None:
                        found[key] = value
                    else:
                        bad.append((problem, key, model, ident))
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from e
        for problem, key, model, ident in bad:  # after the read: reporting writes a counter
            self._report(problem, key, model, ident)
        return found

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def _report(self, problem: str, key: str, model: str, ident: str) -> None:
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
        col = "stale" if problem == "stale" else "corrupt"
        conn = self._connect()
        with _transaction(conn):
            conn.execute(
                f"INSERT INTO counters (identity, {col}) VALUES (?, 1) "
                f"ON CONFLICT(identity) DO UPDATE SET {col} = {col} + 1",
                (ident,),
            )

    def register(self, identity: dict[str, Any], model_key: str) -> str:
        """Record ``identity`` (used under params key ``model_key``) in the file; returns its identity_sha."""
        sha = identity_sha(identity)
        conn = self._connect()
        with _transaction(conn):
            row = conn.execute("SELECT keys FROM identities WHERE identity = ?", (sha,)).fetchone()
            keys = json.loads(row[0]) if row else []
            if row is None or model_key not in keys:
                conn.execute(
                    "INSERT OR REPLACE INTO identities (identity, value, keys) VALUES (?, ?, ?)",
                    (sha, canonical_json(key_identity(identity)), json.dumps(sorted({*keys, model_key}))),
                )
        return sha

    def put_many(self, identity: str, model: str, kind: str, items: Sequence[tuple[str, str]]) -> None:
        """Store ``(key, json)`` pairs of the model ``identity`` (an identity_sha, written under params
        key ``model``) in one atomic transaction, each with its format and checksum."""
        if not items:
            return
        conn = self._connect()
        with _transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO entries (key, identity, model, kind, format, checksum, value) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(k, identity, model, kind, CACHE_FORMAT, checksum(v), v) for k, v in items],
            )

    def count(self, identity: str, hits: int, misses: int) -> None:
        """Add lookups to this object's counters and to the file's lifetime counters of ``identity``."""
        with self._lock:
            self.hits += hits
            self.misses += misses
        if hits or misses:
            conn = self._connect()
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO counters (identity, hits, misses) VALUES (?, ?, ?) "
                    "ON CONFLICT(identity) DO UPDATE SET hits = hits + excluded.hits, "
                    "misses = misses + excluded.misses",
                    (identity, hits, misses),
                )

    # -- reporting and maintenance --------------------------------------------------------
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob(DB_NAME + "*") if p.is_file())

    def stats(self) -> dict[str, int]:
        conn = self._connect()
        entries = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        return {
            "hits": self.hits,
            "misses": self.misses,
            "corrupt": self.corrupt,
            "stale": self.stale,
            "entries": entries,
            "bytes": self.size_bytes(),
        }

    def identity_stats(self) -> list[dict[str, Any]]:
        """Per model identity: its identity_sha, the identity, the params keys that used it, entries,
        stored bytes (of the JSON values), and lifetime hits, misses and bad entries met."""
        conn = self._connect()
        rows = conn.execute(
            "SELECT i.identity, i.value, i.keys, COALESCE(e.n, 0), COALESCE(e.b, 0), COALESCE(c.hits, 0), "
            "COALESCE(c.misses, 0), COALESCE(c.corrupt, 0), COALESCE(c.stale, 0) FROM identities AS i "
            "LEFT JOIN (SELECT identity, COUNT(*) AS n, SUM(LENGTH(value)) AS b FROM entries GROUP BY identity) AS e "
            "ON e.identity = i.identity LEFT JOIN counters AS c ON c.identity = i.identity ORDER BY i.keys, i.identity"
        ).fetchall()
        return [
            {
                "identity_sha": sha,
                "identity": json.loads(value),
                "keys": json.loads(keys),
                "entries": n,
                "value_bytes": b,
                "hits": h,
                "misses": m,
                "corrupt": c,
                "stale": s,
            }
            for sha, value, keys, n, b, h, m, c, s in rows
        ]

    def identities_of(self, model_key: str) -> list[str]:
        """The identity_shas that params key ``model_key`` has used."""
        return [r["identity_sha"] for r in self.identity_stats() if model_key in r["keys"]]

    def clear(self, model: str | None = None, identity: str | None = None) -> int:
        """Delete all entries, or those of every identity that params key ``model`` has used, or of the
        identity whose identity_sha starts with ``identity``; their counters too. Returns how many went."""
        conn = self._connect()
        if model is None and identity is None:
            shas = None
        elif identity is not None:
            shas = [r["identity_sha"] for r in self.identity_stats() if r["identity_sha"].startswith(identity)]
        else:
            shas = self.identities_of(model)  # type: ignore[arg-type]
        with _transaction(conn):
            if shas is None:
                n = conn.execute("DELETE FROM entries").rowcount
                for table in ("counters", "identities"):
                    conn.execute(f"DELETE FROM {table}")
                for table in _V1_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}_v1")
            else:
                n = 0
                for sha in shas:
                    n += conn.execute("DELETE FROM entries WHERE identity = ?", (sha,)).rowcount
                    conn.execute("DELETE FROM counters WHERE identity = ?", (sha,))
                    conn.execute("DELETE FROM identities WHERE identity = ?", (sha,))
        self._vacuum(conn)
        return n

    def verify(self, repair: bool = False) -> dict[str, Any]:
        """Check every entry (checksum, format) and the file (SQLite ``integrity_check``).

        Returns ``{"entries", "ok", "corrupt": [{key, model, identity}], "stale", "old_tables"
        {table: rows}, "integrity", "repaired"}``. With ``repair``, bad and stale entries and
        format-1 tables are deleted (the next run recomputes them).
        """
        conn = self._connect()
        try:
            integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            corrupt, stale_keys, total = [], [], 0
            for key, model, ident, fmt, digest, value in conn.execute(
                "SELECT key, model, identity, format, checksum, value FROM entries"
            ):
                total += 1
                problem = _entry_problem(fmt, digest, value)
                if problem == "corrupt":
                    corrupt.append({"key": key, "model": model, "identity": ident})
                elif problem == "stale":
                    stale_keys.append(key)
            old = {}
            for table in _V1_TABLES:
                name = f"{table}_v1"
                if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone():
                    old[name] = conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from e
        report = {
            "path": str(self.path),
            "entries": total,
            "ok": total - len(corrupt) - len(stale_keys),
            "corrupt": corrupt,
            "stale": len(stale_keys),
            "old_tables": old,
            "integrity": "ok" if integrity == ["ok"] else "; ".join(integrity),
            "repaired": 0,
        }
        if repair and (corrupt or stale_keys or old):
            bad = [c["key"] for c in corrupt] + stale_keys
            with _transaction(conn):
                conn.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in bad])
                for name in old:
                    conn.execute(f"DROP TABLE {name}")
            self._vacuum(conn)
            report["repaired"] = len(bad) + sum(old.values())
        return report

    @staticmethod
    def _vacuum(conn: sqlite3.Connection) -> None:
        # Give the space back to the file system; VACUUM must run outside a transaction.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")


def _entry_problem(fmt: int, digest: str, value: str) -> str | None:
    """None for a sound entry; 'stale' (another format) or 'corrupt' (value does not match its checksum)."""
    if fmt != CACHE_FORMAT:
        return "stale"
    if not isinstance(value, str) or checksum(value) != digest:
        return "corrupt"
    return None


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error): takes the write lock up front, so
    two writers queue on ``busy_timeout`` instead of deadlocking on a lock upgrade."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


class CachedModel(AudioLanguageModel):
    """Wraps any ``AudioLanguageModel`` with the same contract, answering from the cache first.

    Only requests with at least one missing candidate reach the wrapped model, batched together
    in one ``generate`` call; when everything hits, the wrapped model is not touched at all (an
    adapter that loads its weights lazily never loads them). Results come back JSON-decoded
    from what was stored, also on a miss, so a first run and its rerun return identical
    candidates. ``usage`` is the wrapped model's: ``calls`` counts real calls only, and
    ``cache_hits`` counts requests (or ``score_options`` calls) answered entirely from the cache.
    """

    def __init__(self, model: AudioLanguageModel, cache: GenerationCache) -> None:
        # Deliberately no super().__init__: usage, identity and capabilities are the wrapped model's.
        self.model = model
        self.cache = cache
        self._registered: str | None = None

    # The contract's attributes, delegated.
    key = property(lambda self: self.model.key)  # type: ignore[assignment]
    model_id = property(lambda self: self.model.model_id)  # type: ignore[assignment]
    revision = property(lambda self: self.model.revision)  # type: ignore[assignment]
    sample_rate = property(lambda self: self.model.sample_rate)  # type: ignore[assignment]

    @property  # type: ignore[override]
    def usage(self) -> Usage:
        return self.model.usage

    @property  # type: ignore[override]
    def capabilities(self) -> Capabilities:
        return self.model.capabilities

    @property
    def identity(self) -> dict[str, Any]:
        return self.model.identity

    def __getattr__(self, name: str) -> Any:
        # Anything else (adapter-specific attributes) comes from the wrapped model.
        if name in ("model", "cache", "_registered"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def _identity_sha(self) -> str:
        """The identity's name in the cache file, recorded there once per wrapper (with the params key)."""
        sha = identity_sha(self.identity)
        if sha != self._registered:
            self._registered = self.cache.register(self.identity, self.key)
        return sha

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        identity, ident = self.identity, self._identity_sha()
        keys = [generation_keys(identity, r, config) for r in requests]
        stored = self.cache.get_many([k for ks in keys for k in ks])
        results: list[list[Candidate] | None] = [None] * len(requests)
        todo = []
        for j, ks in enumerate(keys):
            if all(k in stored for k in ks):
                results[j] = [candidate_from_json(stored[k]) for k in ks]
            else:
                todo.append(j)
        n_hits = len(requests) - len(todo)
        self.usage.cache_hits += n_hits
        self.cache.count(ident, n_hits, len(todo))
        if todo:
            fresh = self.model.generate([requests[j] for j in todo], config)
            if len(fresh) != len(todo):
                raise RuntimeError(f"model {self.key!r} returned {len(fresh)} results for {len(todo)} requests")
            items = []
            for j, cands in zip(todo, fresh, strict=True):
                if len(cands) != config.n:
                    raise RuntimeError(
                        f"model {self.key!r} returned {len(cands)} candidates for utterance "
                        f"{requests[j].utt_id!r}, expected n={config.n}"
                    )
                if any("error" in c.meta for c in cands):
                    results[j] = list(cands)  # a failed request: returned as is, tried again next run
                    continue
                encoded = [candidate_to_json(c) for c in cands]
                items += zip(keys[j], encoded, strict=True)
                results[j] = [candidate_from_json(s) for s in encoded]
            self.cache.put_many(ident, self.key, "generate", items)
        return results  # type: ignore[return-value]

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        return self.score_options_many([request], options, prefix)[0].logprobs

    def score_options_many(
        self, requests: Sequence[AudioRequest], options: Sequence[str], prefix: str = ""
    ) -> list[OptionScores]:
        """Each request from the cache where it is there; the others in one call to the model. An
        entry holds the log-probabilities with the call's prompt tokens and seconds (``scores_to_json``),
        so a rerun reports the usage of the call that made them; an entry without them (written
        before they were stored) is not used: it counts as stale and is recomputed."""
        ident = self._identity_sha()
        requests, options = list(requests), list(options)
        keys = [scoring_key(self.identity, r, options, prefix) for r in requests]
        out: list[OptionScores | None] = [None] * len(requests)
        todo = []
        for j, key in enumerate(keys):
            value = self.cache.get(key)
            scores = None if value is None else scores_from_json(value)
            if value is not None and scores is None:
                self.cache._report("stale", key, self.key, ident)
            if scores is None:
                todo.append(j)
            else:
                out[j] = scores
        hits = len(requests) - len(todo)
        self.usage.cache_hits += hits
        self.cache.count(ident, hits, len(todo))
        if todo:
            fresh = self.model.score_options_many([requests[j] for j in todo], options, prefix)
            items = []
            for j, scores in zip(todo, fresh, strict=True):
                logprobs = np.asarray(scores.logprobs, dtype=np.float64)
                if logprobs.shape != (len(options),):
                    raise RuntimeError(f"model {self.key!r} scored {logprobs.shape} for {len(options)} options")
                if np.isnan(logprobs).any():  # a failed request: not cached
                    out[j] = scores
                    continue
                encoded = scores_to_json(scores)
                items.append((keys[j], encoded))
                out[j] = scores_from_json(encoded)
            if items:
                self.cache.put_many(ident, self.key, "score_options", items)
        return [x for x in out if x is not None]  # every position is filled above
