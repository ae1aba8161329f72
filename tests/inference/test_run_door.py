"""``ambiemo infer`` refuses bad arguments at the door (one paragraph naming the argument, exit 2, no work
done, no traceback), takes its output with a lock that a second writer meets at once, and meets the cache
as it is: damaged (stops naming the repair command), read-only (a fully cached rerun works; a run that must
write says which file and permission before any model call), or deleted during the run (reported)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import build_manifest, write_manifest
from ambiemo.inference.cache import DB_NAME, REPAIR_COMMAND, CachedModel, CacheError, GenerationCache
from ambiemo.inference.run import OutputError, OutputLock, run_inference
from ambiemo.inference.wrapper import ModelWrapper
from ambiemo.models.fake import FakeModel

FOUR = ("neutral", "happy", "angry", "sad")
N = 6


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("door")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(N):
        path = folder / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(4000)).astype("float32"), 16000)
        paths.append(str(path))
    info = pd.DataFrame({"utt_id": [f"u{i}" for i in range(N)], "dataset": "door", "audio_path": paths})
    votes = np.tile(np.array([[2, 1, 0, 0], [0, 0, 3, 0]], dtype=float), (N // 2, 1))
    label_set = LabelSet("four", FOUR)
    df, ambiguity = build_manifest(info, votes, votes.sum(axis=1).astype(int), label_set, AmbiguityBins())
    return write_manifest(df, folder / "manifest.parquet", label_set=label_set, ambiguity=ambiguity, exclusions={})


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    doc = {"seed": 5, "paths": {"cache_dir": str(tmp_path / "cache")}, "models": {"fake": {"adapter": "fake"}}}
    path.write_text(yaml.safe_dump(doc))
    return path


def infer(manifest: Path, params: Path, out: Path | str, *extra: str, env: dict | None = None):
    """``python -m ambiemo infer`` in a subprocess, as a user runs it."""
    cmd = [sys.executable, "-m", "ambiemo", "infer", "--model", "fake", "--manifest", str(manifest)]
    cmd += ["--out", str(out), "--params", str(params), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.parquet") if p.is_file())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--limit", "-1"], "--limit"),
        (["--limit", "1.5"], "--limit"),
        (["--limit", "true"], "--limit"),
        (["--budget", "0"], "--budget"),
    ],
)
def test_bad_numbers_are_refused_naming_the_argument(manifest, params, tmp_path, args, named):
    result = infer(manifest, params, tmp_path / "out" / "p.parquet", *args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
    assert outputs(tmp_path) == []


def test_limit_is_checked_in_the_python_entry_point_too(manifest, tmp_path):
    with pytest.raises(ValueError, match="limit must be a whole number >= 0"):
        run_inference({}, "fake", "baseline", manifest, tmp_path / "p.parquet", limit=-1)


@pytest.mark.parametrize("kind", ["directory", "csv", "folder-is-a-file"])
def test_a_bad_out_is_refused_before_any_work(manifest, params, tmp_path, kind):
    if kind == "directory":
        out = tmp_path / "existing.parquet"
        out.mkdir()
        expected = "is a directory"
    elif kind == "csv":
        out = tmp_path / "x.csv"
        expected = "ending in .parquet"
    else:
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        out = blocker / "p.parquet"
        expected = "cannot create its folder"
    result = infer(manifest, params, out, env={"AMBIEMO_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    assert f"--out {out}" in result.stderr and expected in result.stderr and "Traceback" not in result.stderr
    assert outputs(tmp_path) == [] and not (tmp_path / "cache").exists()  # no work: not even the cache


def test_an_unwritable_out_folder_is_refused(manifest, params, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop root from writing, so there is nothing to refuse")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = infer(manifest, params, folder / "p.parquet")
        assert result.returncode == 2 and "not writable" in result.stderr
    finally:
        folder.chmod(0o755)


def test_a_second_writer_of_the_same_out_fails_at_once_naming_the_first(manifest, params, tmp_path):
    out = tmp_path / "p.parquet"
    with OutputLock(out, model="fake", strategy="bon"):  # the first writer, holding the lock in this process
        result = infer(manifest, params, out)
        assert result.returncode == 2, result.stderr
        assert f"{out} is being written by another run" in result.stderr
        assert f"pid {os.getpid()}" in result.stderr and "strategy bon" in result.stderr
        assert not out.exists()
    # Released: the same command now runs, and leaves no lock file beside the output.
    result = infer(manifest, params, out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".p.")) == []


def test_a_run_meeting_a_damaged_cache_stops_naming_the_file_and_the_repair_command(manifest, params, tmp_path):
    out = tmp_path / "p.parquet"
    assert infer(manifest, params, out).returncode == 0
    db = tmp_path / "cache" / DB_NAME
    with open(db, "r+b") as f:
        f.write(b"\x00" * 100)  # the header
    result = infer(manifest, params, out)
    assert result.returncode == 1
    assert str(db) in result.stderr and REPAIR_COMMAND in result.stderr and "Traceback" not in result.stderr
    repair = subprocess.run(
        [sys.executable, "-m", "ambiemo", "cache", "verify", "--repair", "--params", str(params)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert infer(manifest, params, out).returncode == 0


def test_read_only_cache_serves_a_cached_rerun_and_refuses_a_run_that_must_write(manifest, params, tmp_path):
    first = tmp_path / "first.parquet"
    assert infer(manifest, params, first, "--limit", "4").returncode == 0
    folder, db = tmp_path / "cache", tmp_path / "cache" / DB_NAME
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        again = infer(manifest, params, tmp_path / "again.parquet", "--limit", "4")
        assert again.returncode == 0, again.stderr
        assert first.read_bytes() == (tmp_path / "again.parquet").read_bytes()
        more = infer(manifest, params, tmp_path / "more.parquet")  # u4 and u5 are not cached
        assert more.returncode == 1 and str(db) in more.stderr and "-r--r--r--" in more.stderr
        assert "Traceback" not in more.stderr and not (tmp_path / "more.parquet").exists()
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)


class DeletesTheCache(ModelWrapper):
    """Deletes the cache file before its second call, as a user's ``rm`` during a run would."""

    OWN = frozenset({"model", "path", "n"})

    def __init__(self, model, path: Path) -> None:
        super().__init__(model)
        self.path, self.n = path, 0

    def generate(self, requests, config):
        self.n += 1
        if self.n == 2:
            self.path.unlink()
        return self.model.generate(requests, config)


def test_a_cache_deleted_mid_run_is_reported_after_the_predictions_are_written(manifest, tmp_path):
    params = {"seed": 5, "strategies": {"batch_size": 2}}
    cache = GenerationCache(tmp_path / "cache")
    model = CachedModel(DeletesTheCache(FakeModel("fake"), cache.path), cache)
    out = tmp_path / "p.parquet"
    with pytest.raises(CacheError) as err:
        run_inference(params, "fake", "baseline", manifest, out, model=model)
    assert err.value.kind == "gone" and f"{cache.path} was deleted during the run" in str(err.value)
    assert out.exists() and len(pd.read_parquet(out)) == N  # nothing computed is lost
    assert not cache.path.exists()


def test_out_error_is_a_value_error_naming_the_path(tmp_path):
    with pytest.raises(OutputError, match=r"x\.csv: a predictions table is a parquet file"):
        run_inference({}, "fake", "baseline", tmp_path / "m.parquet", tmp_path / "x.csv")
