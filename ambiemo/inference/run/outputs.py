"""Where a run writes: the output path checked before any work, one writer at a time, failures reported.

``check_output`` refuses, before the manifest is read or a model loads, an output that is not a
``.parquet`` file path, that names a directory, or whose folder cannot be written (created if
missing). ``OutputLock`` then holds a lock beside it (``.<name>.lock``, ``filelock``, as DVC locks
its repository) for the whole run, so that a second writer of the same output fails at once,
naming the first (its pid, host, model and strategy, written into the lock file); the lock file
is removed when the run ends, so that no stray file lands in a DVC output folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


class OutputError(ValueError):
    """The output path cannot be written as asked (the message names it and why)."""


def check_output(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a ``Path`` once it is known to be writable as a predictions file (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give the path of the .parquet file to write in it")
    if path.suffix != ".parquet":
        raise OutputError(f"{what} {path}: a predictions table is a parquet file; give a path ending in .parquet")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot create its folder {folder}: {e.strerror or e}") from None
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: the folder {folder} is not writable by this user")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path}: the file exists and is not writable by this user")
    return path


class OutputLock:
    """Held while a run writes ``path``: a second writer gets ``OutputError`` naming the first."""

    def __init__(self, path: Path, **owner: Any) -> None:
        self.path = path
        self.lock_path = path.with_name(f".{path.name}.lock")
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), **owner}
        self._lock = FileLock(str(self.lock_path), timeout=0)

    def __enter__(self) -> OutputLock:
        # Read before trying: taking the lock truncates the file, even when the attempt fails.
        first = self._read_owner()
        try:
            self._lock.acquire()
        except Timeout:
            raise OutputError(
                f"{self.path} is being written by another run ({_describe(first, self.lock_path)}); "
                "wait for it to finish, or give this run another --out"
            ) from None
        self.lock_path.write_text(json.dumps(self.owner))
        return self

    def _read_owner(self) -> dict[str, Any]:
        try:
            return json.loads(self.lock_path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc: object) -> None:
        # Removed while still held, so that a waiting writer cannot take a file that is about to vanish.
        self.lock_path.unlink(missing_ok=True)
        self._lock.release()


class InferenceFailures(RuntimeError):
    """More utterances failed than params ``inference.max_failure_share`` allows; the predictions
    were written all the same (``path``), with every failure in their metadata."""

    def __init__(self, message: str, failures: dict[str, str], path: Path | None) -> None:
        super().__init__(message)
        self.failures = failures
        self.path = path


def check_failures(name: str, failures: dict[str, str], n: int, max_share: float, path: Path) -> None:
    """Report every failure; raise ``InferenceFailures`` when their share exceeds ``max_share``."""
    if not failures:
        return
    listed = "; ".join(f"{u}: {r}" for u, r in list(sorted(failures.items()))[:10])
    more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
    share = len(failures) / max(n, 1)
    log.warning("%s: %d of %d utterances failed (%.1f%%): %s%s", name, len(failures), n, 100 * share, listed, more)
    if share > max_share:
        what = "every utterance failed" if len(failures) == n else f"{len(failures)} of {n} utterances failed"
        raise InferenceFailures(
            f"{name}: {what} ({share:.1%}), more than params inference.max_failure_share = {max_share:.1%}: "
            f"{listed}{more}. The predictions, with every failure in their metadata, are in {path}",
            failures,
            path,
        )


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files a killed writer of ``path`` left behind (``ambiemo.core.tables.write_table``'s names)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def _describe(first: dict[str, Any], lock_path: Path) -> str:
    """The first writer, as its lock file records it."""
    if not first:
        return f"its lock {lock_path} is held"
    started = time.strftime("%H:%M:%S UTC", time.gmtime(first.get("started", 0)))
    fields = ", ".join(f"{k} {first[k]}" for k in ("model", "strategy") if first.get(k))
    return f"pid {first.get('pid')} on {first.get('host')}, started {started}" + (f", {fields}" if fields else "")
