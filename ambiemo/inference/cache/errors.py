"""What can be wrong with the cache file as a whole, said in one sentence that names the file.

Three things stop a cache from being used, and each message says what to do:

* the file is damaged (SQLite reports it malformed, or it is not a database at all): run
  ``ambiemo cache verify --repair``, which salvages every readable entry into a fresh file;
* the file or its folder may not be written (and this run has to write): which one, with its
  permission bits and owner;
* the file was deleted or replaced while a run was using it.

A file counts as read-only when the process may not write it (``os.access``) *or* no write bit
is set at all: root may write anything, so without the second rule a read-only cache would
behave differently under root (CI containers) than under a user.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

REPAIR_COMMAND = "ambiemo cache verify --repair"
# SQLite's result codes for a damaged file (Python 3.11+ reports them on the exception).
_DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt")
_PERMISSION_WORDS = ("readonly", "read-only", "unable to open", "permission", "access")


class CacheError(RuntimeError):
    """The cache file cannot be used as a whole; ``kind`` is ``damaged``, ``read-only``, ``gone`` or
    ``sqlite``, and the message names the file and what to do."""

    def __init__(self, message: str, path: Path | None = None, kind: str = "sqlite") -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


def writable(path: Path) -> bool:
    """May this process write ``path``, and does it have a write bit at all (see the module docstring)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return os.access(path, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def describe_permission(path: Path) -> str:
    """Which of ``path`` and its folder may not be written, with mode and owner; "" when both may."""
    parts = []
    for what, p in (("file", path), ("folder", path.parent)):
        if p.exists() and not writable(p):
            st = p.stat()
            parts.append(f"the {what} {p} is not writable ({stat.filemode(st.st_mode)}, owner uid {st.st_uid})")
    return "; ".join(parts)


def is_damage(e: BaseException) -> bool:
    name = getattr(e, "sqlite_errorname", "") or ""
    return name.startswith(_DAMAGE_CODES) or any(w in str(e).lower() for w in _DAMAGE_WORDS)


def damaged(path: Path, e: BaseException, doing: str) -> CacheError:
    return CacheError(
        f"{path}: the generation cache file is damaged (SQLite, while {doing}: {e}). Run `{REPAIR_COMMAND}` "
        "(with the same --params or AMBIEMO_CACHE_DIR): it copies every readable entry into a fresh file and "
        "moves the damaged one aside; the next run recomputes only what was lost",
        path,
        "damaged",
    )


def read_only(path: Path, doing: str, detail: str = "") -> CacheError:
    why = describe_permission(path) or detail or "SQLite may not write it"
    return CacheError(
        f"{path}: the generation cache cannot be written, and {doing} needs to write it: {why}. Give this user "
        "write permission there, or point AMBIEMO_CACHE_DIR (or params paths.cache_dir) at a writable copy",
        path,
        "read-only",
    )


def translate(path: Path, e: sqlite3.Error, doing: str) -> CacheError:
    """Any SQLite error as a ``CacheError`` naming the file: damage, permission, or what SQLite said."""
    if is_damage(e):
        return damaged(path, e, doing)
    text = str(e).lower()
    if any(w in text for w in _PERMISSION_WORDS) or describe_permission(path):
        return read_only(path, doing, detail=f"SQLite: {e}")
    return CacheError(f"{path}: SQLite error while {doing}: {e}", path, "sqlite")
