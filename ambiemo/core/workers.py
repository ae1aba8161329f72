"""The analysis stages' per-chunk work in several processes.

The aggregate and stats stages reduce the scores one dataset × model at a time, and each chunk's
tables depend on that chunk and the params alone (every random draw is seeded by the cell it is
for). So the chunks can be reduced in parallel processes and their tables stacked in the chunks'
order: the result is the same, number for number, whatever the number of processes
(``tests/scoring/test_chunked_stages.py`` compares one process with two).

How many: ``$AMBIEMO_WORKERS`` where set (a whole number ≥ 1; it is how the run happens, not what
it computes, so it is not a params key and no provenance records it); else one per core when the
scores hold at least ``PARALLEL_MIN_ROWS`` rows, and one below that, where starting processes costs
more than it saves. Never more than the chunks. Each process reads its own chunk, so memory grows
by one chunk per process. BLAS runs on one thread in each (``ambiemo.core.blas``), and the
warnings a chunk raises are raised again in the parent.

The processes are forked where the platform can (Linux, macOS): a ``spawn`` or ``forkserver``
process imports the caller's main module again, which a script without an ``if __name__ ==
"__main__"`` guard cannot survive. Forking a process that has started threads can deadlock where a
thread holds a lock at that moment; a stage's parent has only arrow's thread pool, idle between
reads, and BLAS limited to one thread when it forks (the tests and the full-size benchmark fork it
many times), so Python's warning about forking a threaded process is silenced for that call alone.
Elsewhere (Windows) they are spawned.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

WORKERS_ENV = "AMBIEMO_WORKERS"
PARALLEL_MIN_ROWS = 500_000

T = TypeVar("T")


def worker_count(rows: int, chunks: int) -> int:
    """The number of processes for ``chunks`` chunks of ``rows`` rows in all (module docstring)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        try:
            wanted = int(raw)
        except ValueError:
            wanted = 0
        if wanted < 1:
            raise ValueError(f"${WORKERS_ENV}={raw!r}: expected a whole number of processes, at least 1")
    else:
        wanted = (os.cpu_count() or 1) if rows >= PARALLEL_MIN_ROWS else 1
    return max(1, min(wanted, chunks))


def ordered_map(fn: Callable[[Any], T], items: Sequence[Any], workers: int) -> list[T]:
    """``[fn(x) for x in items]``, in ``workers`` processes where more than one (module docstring)."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*use of fork\\(\\) may lead to deadlocks", DeprecationWarning)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            done = list(pool.map(_call, [(fn, x) for x in items]))
    for _, caught in done:
        for message, category in caught:
            warnings.warn(message, category, stacklevel=2)
    return [out for out, _ in done]


def call(job: Callable[[], T]) -> T:
    """``job()``: for ``ordered_map`` over jobs of different kinds (``functools.partial`` of each)."""
    return job()


def _call(job: tuple[Callable[[Any], T], Any]) -> tuple[T, list[tuple[str, type[Warning]]]]:
    fn, item = job
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("always")
        out = fn(item)
    return out, [(str(w.message), w.category) for w in caught]
