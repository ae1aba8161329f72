"""A cache that heals: real damaged SQLite files (truncated to half, to 50 bytes, an overwritten header, one
zeroed page) and real read-only files and folders. Every error names the file; ``cache verify --repair``
salvages every readable entry (each compared with the value originally stored) and moves the damaged file
aside; a read-only cache serves a fully cached rerun without writing a byte and refuses a miss before the
model is called."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ambiemo.cli import app
from ambiemo.inference.cache import (
    DB_NAME,
    REPAIR_COMMAND,
    CachedModel,
    CacheError,
    GenerationCache,
    identity_sha,
    salvage,
)
from ambiemo.models.base import AudioLanguageModel, AudioRequest, Candidate, GenerationConfig, Message

N_ENTRIES = 400
PAGE = 4096
CONFIG = GenerationConfig(mode="sample", n=2, max_new_tokens=8, temperature=0.7, seed=3)


class Recorder(AudioLanguageModel):
    """A fake adapter that records every call; its answers depend on the utterance."""

    def __init__(self) -> None:
        super().__init__("rec", "fake/recorder", "r1")
        self.calls: list[list[str]] = []

    def generate(self, requests, config):
        self.calls.append([r.utt_id for r in requests])
        return [
            [Candidate(f"{r.utt_id}:{i}", -1.0 - i, [-0.5, -0.5 - i], 2, {"prompt_tokens": 5}) for i in range(config.n)]
            for r in requests
        ]


def request(i: int) -> AudioRequest:
    wav = np.full(160, i / 1000, dtype=np.float32)
    return AudioRequest(f"u{i}", wav, 16000, [Message("user", "Which emotion?", audio=True)])


def fill(folder: Path, n: int = N_ENTRIES) -> dict[str, str]:
    """A cache file of ``n`` entries (values of 40 to 9,000 bytes, so that some overflow their page),
    closed cleanly (no WAL left); returns {key: value} as stored."""
    cache = GenerationCache(folder)
    ident = cache.register({"route": "fake", "model_id": "m", "revision": "r"}, "m")
    rng = np.random.default_rng(0)
    values = {}
    for start in range(0, n, 50):
        items = []
        for i in range(start, min(start + 50, n)):
            key = hashlib.sha256(f"key{i}".encode()).hexdigest()
            value = '{"text":"' + "x" * int(rng.integers(40, 9000)) + f'","i":{i}}}'
            items.append((key, value))
            values[key] = value
        cache.put_many(ident, "m", "generate", items)
    cache.close()
    assert not (folder / (DB_NAME + "-wal")).exists() or (folder / (DB_NAME + "-wal")).stat().st_size == 0
    return values


def stored(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / DB_NAME) as conn:
        return dict(conn.execute("SELECT key, value FROM entries"))


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def truncate_50(path: Path) -> None:
    os.truncate(path, 50)


def overwrite_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"\xa5" * 100)


def zero_page(path: Path) -> None:
    """Zero the table leaf page (type byte 13, https://www.sqlite.org/fileformat2.html) holding the most rows:
    a page of entries, not of values only."""
    data = path.read_bytes()
    leaves = [n for n in range(1, len(data) // PAGE) if data[n * PAGE] == 13]
    fullest = max(leaves, key=lambda n: int.from_bytes(data[n * PAGE + 3 : n * PAGE + 5], "big"))
    with open(path, "r+b") as f:
        f.seek(fullest * PAGE)
        f.write(b"\x00" * PAGE)


DAMAGE = {"half": truncate_half, "50-bytes": truncate_50, "header": overwrite_header, "zeroed-page": zero_page}


@pytest.fixture
def cli(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("AMBIEMO_CACHE_DIR", str(folder))
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["cache", *args, "--params", str(params)])

    return folder, invoke


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_every_cache_command_names_the_damaged_file_and_repair_salvages_what_is_readable(cli, damage):
    folder, invoke = cli
    original = fill(folder)
    path = folder / DB_NAME
    DAMAGE[damage](path)
    # Every command that reads the file says which file and what to run; none shows a traceback.
    for args in (["verify"], ["stats"], ["clear", "--yes"]):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert str(path) in result.output and REPAIR_COMMAND in result.output, (args, result.output)
        assert "Traceback" not in result.output
    result = invoke("verify", "--repair")
    assert result.exit_code == 0, result.output
    assert "salvaged" in result.output and str(path) in result.output
    aside = [p for p in folder.glob(DB_NAME + ".damaged-*") if not p.name.endswith("-wal")]
    assert len(aside) == 1 and aside[0].stat().st_size > 0  # the damaged file is kept, renamed
    kept = stored(folder)
    # Nothing misread: every salvaged entry is exactly a value that was stored under that key.
    assert all(original[k] == v for k, v in kept.items())
    assert f"salvaged {len(kept)} entries" in result.output
    if damage == "50-bytes":
        assert kept == {}
    elif damage == "header":
        assert len(kept) == N_ENTRIES  # the header holds no rows: everything is readable from the pages
    elif damage == "zeroed-page":
        assert N_ENTRIES - 10 <= len(kept) < N_ENTRIES  # a 4 kB page holds a few entries at most
    else:  # half the file: about half the entries (overflowing values whose chains were cut are lost)
        assert 0.3 * N_ENTRIES < len(kept) < 0.7 * N_ENTRIES
    # The fresh file is sound and usable: verify passes, and the identity survived with its entries.
    assert invoke("verify").exit_code == 0
    if kept:
        stats = GenerationCache(folder).identity_stats()
        assert stats[0]["keys"] == ["m"] and stats[0]["entries"] == len(kept)


def test_a_run_meeting_a_damaged_cache_stops_naming_the_file_and_the_repair_command(tmp_path):
    folder = tmp_path / "cache"
    cache = GenerationCache(folder)
    CachedModel(Recorder(), cache).generate([request(i) for i in range(200)], CONFIG)
    cache.close()
    zero_page(folder / DB_NAME)
    with pytest.raises(CacheError) as err:
        fresh = Recorder()
        CachedModel(fresh, GenerationCache(folder)).generate([request(i) for i in range(200)], CONFIG)
    assert str(folder / DB_NAME) in str(err.value) and REPAIR_COMMAND in str(err.value)
    assert err.value.kind == "damaged"
    # That exact command repairs it, and a rerun then recomputes only what was lost.
    report = salvage(folder)
    again = Recorder()
    CachedModel(again, GenerationCache(folder)).generate([request(i) for i in range(200)], CONFIG)
    recomputed = sum(len(c) for c in again.calls)
    assert 0 < recomputed <= 200 - report["entries_kept"] // CONFIG.n + 1


def _read_only(path: Path) -> None:
    path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_fully_cached_rerun_works_on_a_read_only_cache_and_writes_nothing(tmp_path, what):
    folder = tmp_path / "cache"
    requests = [request(i) for i in range(6)]
    cache = GenerationCache(folder)
    first = CachedModel(Recorder(), cache).generate(requests, CONFIG)
    cache.close()
    path = folder / DB_NAME
    _read_only(path if what == "file" else folder)
    try:
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        model = Recorder()
        cache = GenerationCache(folder)
        assert cache.read_only
        again = CachedModel(model, cache).generate(requests, CONFIG)
        assert model.calls == [] and [[c.text for c in r] for r in again] == [[c.text for c in r] for r in first]
        assert cache.hits == 6 and model.usage.cache_hits == 6
        cache.close()
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # not a byte written
        # A miss must write: refused before the model is called, naming the file and its permission.
        with pytest.raises(CacheError) as err:
            CachedModel(model, GenerationCache(folder)).generate([request(99)], CONFIG)
        assert model.calls == []
        message = str(err.value)
        target = path if what == "file" else folder
        mode = stat.filemode(target.stat().st_mode)  # e.g. -r--r--r-- or dr-x------
        assert "w" not in mode and f"{what} {target} is not writable ({mode}" in message and str(path) in message
        assert err.value.kind == "read-only"
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


def test_cache_clear_on_a_read_only_cache_names_the_file_and_its_permission(cli):
    folder, invoke = cli
    fill(folder, 10)
    path = folder / DB_NAME
    _read_only(path)
    try:
        result = invoke("clear", "--yes")
        assert result.exit_code == 1 and str(path) in result.output and "-r--r--r--" in result.output
        assert invoke("stats").exit_code == 0  # reading needs no write
        assert len(stored(folder)) == 10
    finally:
        path.chmod(0o644)


def test_a_cache_deleted_during_use_is_noticed_and_nothing_is_written_into_the_unlinked_file(tmp_path, caplog):
    folder = tmp_path / "cache"
    cache = GenerationCache(folder)
    model = CachedModel(Recorder(), cache)
    model.generate([request(0)], CONFIG)
    assert cache.check_present() is None
    (folder / DB_NAME).unlink()
    model.generate([request(1)], CONFIG)
    assert cache.lost is not None and "deleted" in cache.lost and str(folder / DB_NAME) in cache.lost
    assert str(folder / DB_NAME) in caplog.text
    assert not (folder / DB_NAME).exists()  # not silently recreated either


def test_the_identity_check_of_a_salvaged_identity_is_its_sha():
    # The salvage keeps an identity row only when its name is the SHA-256 of its value, as the store writes it.
    from ambiemo.inference.cache import canonical_json, checksum, key_identity

    identity = {"route": "fake", "model_id": "m", "revision": "r", "key": "m"}
    assert identity_sha(identity) == checksum(canonical_json(key_identity(identity)))
