"""Crash safety: ``kill -9`` of ``ambiemo infer`` during model load, mid-batch and during the write,
then a rerun. Nothing finished is recomputed, nothing is duplicated, and the predictions file is
byte-identical to an uninterrupted run's, for a greedy strategy and a sampled one."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import build_manifest, write_manifest
from ambiemo.inference.cache import DB_NAME
from ambiemo.inference.candidates import candidates_path

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # `ambiemo infer` in subprocesses, killed

N = 12
FOUR = ("neutral", "happy", "angry", "sad")
# Candidates per request: baseline answers once; self-consistency samples its largest budget in one call.
N_PER_REQUEST = {"baseline": 1, "self-consistency": 3}

# `ambiemo infer` with the table writer slowed down: it writes half a file under the temporary name and
# hangs, so that the test can kill it during the write.
SLOW_WRITE = """
import sys, time
import ambiemo.core.tables as tables
def half_write(table, where, *args, **kwargs):
    with open(where, "wb") as f:
        f.write(b"PAR1" + b"half a parquet file")
    time.sleep(120)
tables.pq.write_table = half_write
from ambiemo.cli import main
sys.argv = ["ambiemo", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crash")
    rng = np.random.default_rng(5)
    paths = []
    for i in range(N):
        paths.append(folder / f"u{i:02d}.wav")
        sf.write(paths[-1], (0.1 * rng.standard_normal(4000)).astype("float32"), 16000)
    info = pd.DataFrame(
        {
            "utt_id": [p.stem for p in paths],
            "dataset": "tiny",
            "audio_path": [str(p) for p in paths],
            "duration_s": 0.25,
        }
    )
    info["speaker"] = "s0"
    votes = rng.integers(0, 3, size=(N, 4)).astype(float)
    votes[:, 0] += 1
    ls = LabelSet("four", FOUR)
    df, amb = build_manifest(info, votes, votes.sum(axis=1).astype(int), ls, AmbiguityBins())
    return write_manifest(df, folder / "manifest.parquet", label_set=ls, ambiguity=amb, exclusions={})


def _params(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params = {
        "seed": 3,
        "paths": {"cache_dir": str(folder / "cache")},
        # load_s: a model load to kill; sleep_s: each batch call takes a while, so a kill lands mid-run.
        "models": {"slow": {"adapter": "fake", "load_s": 1.5, "sleep_s": 0.3}},
        "strategies": {"batch_size": 2, "self-consistency": {"budgets": [1, 3]}},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _start(params: Path, manifest: Path, strategy: str, out: Path, slow_write: bool = False) -> subprocess.Popen:
    head = [sys.executable, "-c", SLOW_WRITE] if slow_write else [sys.executable, "-m", "ambiemo"]
    args = ["infer", "--model", "slow", "--strategy", strategy, "--manifest", str(manifest), "--out", str(out)]
    return subprocess.Popen(
        [*head, *args, "--params", str(params)],
        cwd=params.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _entries(cache: Path) -> int:
    if not (cache / DB_NAME).exists():
        return 0
    with sqlite3.connect(cache / DB_NAME, timeout=30) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


def _lookups(cache: Path) -> tuple[int, int]:
    with sqlite3.connect(cache / DB_NAME, timeout=30) as conn:
        return conn.execute("SELECT COALESCE(SUM(hits), 0), COALESCE(SUM(misses), 0) FROM counters").fetchone()


def _kill_when(proc: subprocess.Popen, condition, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no cleanup, no finally
    proc.wait(timeout=30)


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output
    return output


@pytest.mark.parametrize("strategy", ["baseline", "self-consistency"])
def test_kill_9_at_several_points_then_rerun_is_exact(manifest, tmp_path, strategy):
    n = N_PER_REQUEST[strategy]
    reference = tmp_path / "reference" / "pred.parquet"
    _finish(_start(_params(tmp_path / "reference"), manifest, strategy, reference))

    params = _params(tmp_path / "crashed")
    cache, out = tmp_path / "crashed" / "cache", tmp_path / "crashed" / "pred.parquet"
    candidates = candidates_path(out)

    # 1. during model load: the cache file exists, the model is still loading (load_s), nothing computed
    proc = _start(params, manifest, strategy, out)
    _kill_when(proc, lambda: (cache / DB_NAME).exists(), "the cache to be opened")
    assert _entries(cache) == 0 and not out.exists()

    # 2. mid-batch: some batches stored, the next one in the model call
    proc = _start(params, manifest, strategy, out)
    _kill_when(proc, lambda: _entries(cache) >= 4 * n, "four utterances to be stored")
    done = _entries(cache)
    assert done % n == 0, "a request's candidates are stored together or not at all"
    assert done < N * n and not out.exists()
    hits0, misses0 = _lookups(cache)

    # 3. during the write: everything computed, half a file under the temporary name, the real name untouched
    proc = _start(params, manifest, strategy, out, slow_write=True)
    # (the candidates table is written first, then the predictions: the first write hangs)
    _kill_when(proc, lambda: any(out.parent.glob(".pred*.parquet.*.tmp")), "the write to begin")
    assert not out.exists() and not candidates.exists(), "a reader never sees half a file under the real name"
    assert _entries(cache) == N * n
    hits1, misses1 = _lookups(cache)
    assert hits1 - hits0 == done // n, "the utterances finished before the kill came from the cache"
    assert misses1 - misses0 == N - done // n, "only the missing ones were computed"

    # 4. the rerun: no model call, and the very bytes of the uninterrupted run
    output = _finish(_start(params, manifest, strategy, out))
    assert f"live model calls 0, cache hits {N}" in output
    assert _entries(cache) == N * n, "nothing duplicated"
    assert out.read_bytes() == reference.read_bytes()
    assert candidates.read_bytes() == candidates_path(reference).read_bytes()
    assert not list(out.parent.glob(".pred*.tmp")), "the killed writer's temporary file is gone"
