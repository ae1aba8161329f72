"""The analysis stages run their numerical work with BLAS on one thread (``ambiemo.core.blas``)."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from ambiemo.core.blas import one_blas_thread
from ambiemo.scoring.stages import aggregate_run
from ambiemo.scoring.stream import write_score_run
from ambiemo.stats.grouped_fit import gee_exchangeable_logit, reml_intercept
from ambiemo.stats.stage import stats_run


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_one_blas_thread_inside_and_the_caller_s_setting_after():
    if not _blas_threads():
        pytest.skip("no BLAS library loaded by numpy here")
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        inside = one_blas_thread(_blas_threads)()
        assert inside and set(inside) == {1}
        assert _blas_threads() == before  # restored, not left at one


@pytest.mark.parametrize("stage", [write_score_run, aggregate_run, stats_run, reml_intercept, gee_exchangeable_logit])
def test_the_analysis_stages_are_limited(stage):
    assert stage.__wrapped__.__name__ == stage.__name__  # functools.wraps of one_blas_thread
    assert "one_blas_thread" in stage.__code__.co_qualname
