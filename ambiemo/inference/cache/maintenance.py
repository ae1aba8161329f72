"""Reporting and maintenance of the cache file: sizes, lifetime counts, clearing, and verifying every entry.

A mixin of ``GenerationCache`` (``ambiemo.inference.cache.store``), which supplies ``_connect``,
``_sql`` (SQLite errors as ``CacheError`` naming the file), ``path``, ``folder`` and the
counters. Clearing and repairing write, so on a read-only cache they raise ``CacheError``
naming the file and its permission. A file too damaged for SQLite is salvaged by
``ambiemo.inference.cache.repair``, not here.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ambiemo.inference.cache.errors import read_only, translate
from ambiemo.inference.cache.schema import DB_NAME, V1_TABLES, entry_problem, transaction


class Maintenance:
    """Reporting, clearing and verifying (see the module docstring)."""

    # -- reporting and maintenance --------------------------------------------------------
    def size_bytes(self) -> int:
        files = (self.path, self.path.with_name(DB_NAME + "-wal"), self.path.with_name(DB_NAME + "-shm"))
        return sum(p.stat().st_size for p in files if p.is_file())

    def stats(self) -> dict[str, int]:
        conn = self._connect()
        with self._sql("counting entries"):
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
        with self._sql("reading the identities"):
            rows = conn.execute(
                "SELECT i.identity, i.value, i.keys, COALESCE(e.n, 0), COALESCE(e.b, 0), COALESCE(c.hits, 0), "
                "COALESCE(c.misses, 0), COALESCE(c.corrupt, 0), COALESCE(c.stale, 0) FROM identities AS i "
                "LEFT JOIN (SELECT identity, COUNT(*) AS n, SUM(LENGTH(value)) AS b FROM entries GROUP BY identity) "
                "AS e ON e.identity = i.identity LEFT JOIN counters AS c ON c.identity = i.identity "
                "ORDER BY i.keys, i.identity"
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
        if self.read_only:
            raise read_only(self.path, "`ambiemo cache clear`")
        conn = self._connect()
        if model is None and identity is None:
            shas = None
        elif identity is not None:
            shas = [r["identity_sha"] for r in self.identity_stats() if r["identity_sha"].startswith(identity)]
        else:
            shas = self.identities_of(model)  # type: ignore[arg-type]
        with self._sql("clearing entries"), transaction(conn):
            if shas is None:
                n = conn.execute("DELETE FROM entries").rowcount
                for table in ("counters", "identities"):
                    conn.execute(f"DELETE FROM {table}")
                for table in V1_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}_v1")
            else:
                n = 0
                for sha in shas:
                    n += conn.execute("DELETE FROM entries WHERE identity = ?", (sha,)).rowcount
                    conn.execute("DELETE FROM counters WHERE identity = ?", (sha,))
                    conn.execute("DELETE FROM identities WHERE identity = ?", (sha,))
        with self._sql("compacting the file"):
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
                problem = entry_problem(fmt, digest, value)
                if problem == "corrupt":
                    corrupt.append({"key": key, "model": model, "identity": ident})
                elif problem == "stale":
                    stale_keys.append(key)
            old = {}
            for table in V1_TABLES:
                name = f"{table}_v1"
                if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone():
                    old[name] = conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
        except sqlite3.Error as e:
            raise translate(self.path, e, "verifying the cache") from e
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
            if self.read_only:
                raise read_only(self.path, "`ambiemo cache verify --repair`")
            bad = [c["key"] for c in corrupt] + stale_keys
            with self._sql("deleting bad entries"), transaction(conn):
                conn.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in bad])
                for name in old:
                    conn.execute(f"DROP TABLE {name}")
            with self._sql("compacting the file"):
                self._vacuum(conn)
            report["repaired"] = len(bad) + sum(old.values())
        return report

    @staticmethod
    def _vacuum(conn: sqlite3.Connection) -> None:
        # Give the space back to the file system; VACUUM must run outside a transaction.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
