"""The generation cache: never pay twice for the same model call.

Every result a model returns is stored under a key that covers everything that can change it:
the model's identity (key, checkpoint id, revision, route), the full conversation, a hash of
the audio, every ``GenerationConfig`` field (mode, n, max_new_tokens, temperature, top_p,
num_beams, seed) and the candidate's sample index; for ``score_options``, the options and the
prefix instead of the config. A rerun with the same inputs therefore makes zero model calls,
and any changed parameter misses.

Storage is one SQLite file in WAL mode (``<folder>/generations.sqlite``). Every write is one
transaction, so a crash leaves either the whole entry or none, and WAL lets DVC stages running
in parallel processes read while one of them writes; writers wait for each other
(``busy_timeout``) instead of failing. WAL needs a local file system (not NFS).

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
    Usage,
)

# Bump when the key or value layout changes: old entries then simply miss.
CACHE_FORMAT = 1
DB_NAME = "generations.sqlite"
# Seconds a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 120.0

# Connections a forked child inherited from its parent, kept referenced so they are never closed.
_INHERITED: list[sqlite3.Connection] = []

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key   TEXT PRIMARY KEY,      -- sha256 of the canonical JSON of everything that determines the value
    model TEXT NOT NULL,         -- the model's params key, for per-model stats and `cache clear --model`
    kind  TEXT NOT NULL,         -- 'generate' (one candidate) or 'score_options'
    value TEXT NOT NULL          -- JSON
);
CREATE INDEX IF NOT EXISTS entries_model ON entries (model);
CREATE TABLE IF NOT EXISTS counters (
    model  TEXT PRIMARY KEY,
    hits   INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0
);
"""


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


def make_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"format": CACHE_FORMAT, **payload}).encode()).hexdigest()


def generation_key(identity: dict[str, Any], request: AudioRequest, config: GenerationConfig, sample_index: int) -> str:
    """Key of candidate ``sample_index`` of ``config.n`` for one request."""
    return make_key(
        {
            "kind": "generate",
            "model": identity,
            "conversation": request.conversation(),
            "audio_sha1": request.audio_sha1(),
            "config": config.as_dict(),
            "sample_index": sample_index,
        }
    )


def scoring_key(identity: dict[str, Any], request: AudioRequest, options: Sequence[str], prefix: str) -> str:
    return make_key(
        {
            "kind": "score_options",
            "model": identity,
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


def candidate_from_json(s: str) -> Candidate:
    d = json.loads(s)
    return Candidate(
        text=d["text"], logprob=d["logprob"], token_logprobs=d["token_logprobs"], n_tokens=d["n_tokens"], meta=d["meta"]
    )


class GenerationCache:
    """A key -> JSON store in one SQLite file, safe across threads and processes.

    ``stats()`` reports this object's lookups (``hits``, ``misses``) and the store's size
    (``entries``, ``bytes`` on disk). Lifetime hit and miss counts per model are kept in the
    file too (``model_stats()``); ``ambiemo cache stats`` shows them.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.hits = 0
        self.misses = 0
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
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    # -- key/value ----------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored values of those ``keys`` that exist (no hit/miss counting)."""
        conn = self._connect()
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):  # stay below SQLite's bound-parameter limit
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in conn.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", chunk):
                found[key] = value
        return found

    def get(self, key: str) -> str | None:
        return self.get_many([key]).get(key)

    def put_many(self, model: str, kind: str, items: Sequence[tuple[str, str]]) -> None:
        """Store ``(key, json)`` pairs in one atomic transaction."""
        if not items:
            return
        conn = self._connect()
        with _transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO entries (key, model, kind, value) VALUES (?, ?, ?, ?)",
                [(k, model, kind, v) for k, v in items],
            )

    def count(self, model: str, hits: int, misses: int) -> None:
        """Add lookups to this object's counters and to the file's lifetime counters."""
        with self._lock:
            self.hits += hits
            self.misses += misses
        if hits or misses:
            conn = self._connect()
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO counters (model, hits, misses) VALUES (?, ?, ?) "
                    "ON CONFLICT(model) DO UPDATE SET hits = hits + excluded.hits, "
                    "misses = misses + excluded.misses",
                    (model, hits, misses),
                )

    # -- reporting and maintenance --------------------------------------------------------
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob(DB_NAME + "*") if p.is_file())

    def stats(self) -> dict[str, int]:
        conn = self._connect()
        entries = conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        return {"hits": self.hits, "misses": self.misses, "entries": entries, "bytes": self.size_bytes()}

    def model_stats(self) -> list[dict[str, Any]]:
        """Per model: entries, stored bytes (of the JSON values) and lifetime hits and misses."""
        conn = self._connect()
        rows = conn.execute(
            "SELECT model, SUM(n), SUM(b), SUM(h), SUM(m) FROM ("
            "  SELECT model, COUNT(*) AS n, SUM(LENGTH(value)) AS b, 0 AS h, 0 AS m FROM entries GROUP BY model"
            "  UNION ALL SELECT model, 0, 0, hits, misses FROM counters"
            ") GROUP BY model ORDER BY model"
        ).fetchall()
        return [{"model": m, "entries": n, "value_bytes": b, "hits": h, "misses": mi} for m, n, b, h, mi in rows]

    def clear(self, model: str | None = None) -> int:
        """Delete all entries (or one model's) and their counters; returns how many entries went."""
        conn = self._connect()
        with _transaction(conn):
            if model is None:
                n = conn.execute("DELETE FROM entries").rowcount
                conn.execute("DELETE FROM counters")
            else:
                n = conn.execute("DELETE FROM entries WHERE model = ?", (model,)).rowcount
                conn.execute("DELETE FROM counters WHERE model = ?", (model,))
        # Give the space back to the file system; VACUUM must run outside a transaction.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        return n


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
        if name in ("model", "cache"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        identity = self.identity
        keys = [[generation_key(identity, r, config, i) for i in range(config.n)] for r in requests]
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
        self.cache.count(self.key, n_hits, len(todo))
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
            self.cache.put_many(self.key, "generate", items)
        return results  # type: ignore[return-value]

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        key = scoring_key(self.identity, request, options, prefix)
        value = self.cache.get(key)
        if value is not None:
            self.usage.cache_hits += 1
            self.cache.count(self.key, 1, 0)
            return np.asarray(json.loads(value), dtype=np.float64)
        self.cache.count(self.key, 0, 1)
        scores = np.asarray(self.model.score_options(request, options, prefix), dtype=np.float64)
        if scores.shape != (len(options),):
            raise RuntimeError(f"model {self.key!r} scored {scores.shape} for {len(options)} options")
        if np.isnan(scores).any():
            return scores  # a failed request: not cached
        encoded = canonical_json([float(x) for x in scores])
        self.cache.put_many(self.key, "score_options", [(key, encoded)])
        return np.asarray(json.loads(encoded), dtype=np.float64)
