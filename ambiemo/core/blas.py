"""BLAS on one thread for the analysis stages.

The score, aggregate and stats stages multiply many small matrices (per-cluster sums by resample
counts or sign patterns, a regression's groups × terms) and a few tall ones in passes over the rows.
A threaded BLAS gains little there, and where its second thread waits for a core that another job
holds, each call waits with it: on a shared two-core machine a 4,748 × 20 product took 0.24 s on two
threads and 0.5 ms on one, and the bootstrap and paired tests of one cell ran 1.3 to 1.8 times
faster on one thread (``docs/performance.md``). The stages therefore run their numerical work with
BLAS limited to one thread (``threadpoolctl``), whatever the machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

F = TypeVar("F", bound=Callable[..., Any])


def one_blas_thread(fn: F) -> F:
    """``fn`` run with BLAS limited to one thread (module docstring)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
