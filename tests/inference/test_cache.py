"""The generation cache: hits and misses, what the key covers, atomicity under concurrent writers."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ambiemo.core.config import cache_dir
from ambiemo.inference.cache import DB_NAME, CachedModel, GenerationCache, generation_key, generation_keys, scoring_key
from ambiemo.models.base import AudioLanguageModel, AudioRequest, Candidate, GenerationConfig, Message, OptionScores


class CountingModel(AudioLanguageModel):
    """A fake adapter that counts weight loads and calls; its answers depend on every input."""

    def __init__(self, key: str = "fake", revision: str = "r1", fail: set[str] = frozenset()) -> None:
        super().__init__(key, "fake/model", revision)
        self.loads = 0
        self.generate_calls: list[list[str]] = []  # utt_ids per call
        self.score_calls = 0
        self.score_many_calls = 0
        self.fail = set(fail)
        self._weights = None

    def _load(self) -> None:
        if self._weights is None:
            self.loads += 1
            self._weights = object()

    def generate(self, requests, config):
        self._load()
        self.generate_calls.append([r.utt_id for r in requests])
        out = []
        for r in requests:
            self.usage.calls += 1
            if r.utt_id in self.fail:
                out.append([Candidate("", None, None, 0, {"error": "HTTP 500"}) for _ in range(config.n)])
                continue
            rng = np.random.default_rng([config.seed, int(r.audio_sha1()[:8], 16)])
            lps = rng.normal(-1, 0.5, size=(config.n, 3))
            out.append(
                [
                    Candidate(
                        text=f"{r.utt_id}|{r.messages[-1].text}|t={config.temperature}|{i}",
                        logprob=float(lps[i].sum()),
                        token_logprobs=[float(x) for x in lps[i]],
                        n_tokens=3,
                        meta={"prompt_tokens": np.int64(7), "wall_s": np.float32(0.25), "beam": [i, -np.inf]},
                    )
                    for i in range(config.n)
                ]
            )
        return out

    def score_options(self, request, options, prefix=""):
        self._load()
        self.score_calls += 1
        self.usage.calls += 1
        if request.utt_id in self.fail:
            return np.full(len(options), np.nan)
        return -np.arange(1, len(options) + 1, dtype=np.float64) / 3 - len(prefix)

    def score_options_many(self, requests, options, prefix=""):
        self.score_many_calls += 1
        return [OptionScores(self.score_options(r, options, prefix), 7, 0.125) for r in requests]


def make_request(
    utt_id: str = "u1", text: str = "Which emotion?", seed: int = 0, n_samples: int = 1600
) -> AudioRequest:
    wave = np.random.default_rng(seed).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    return AudioRequest(
        utt_id, wave, 16000, [Message("system", "You rate emotions."), Message("user", text, audio=True)]
    )


SAMPLE = GenerationConfig(mode="sample", n=3, temperature=0.7, seed=11)


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "cache"


def test_rerun_makes_zero_model_calls_and_returns_identical_candidates(folder):
    requests = [make_request(f"u{i}", seed=i) for i in range(4)]
    first_model = CountingModel()
    first = CachedModel(first_model, GenerationCache(folder)).generate(requests, SAMPLE)
    assert first_model.usage.calls == 4 and first_model.usage.cache_hits == 0
    assert first_model.generate_calls == [["u0", "u1", "u2", "u3"]]  # one batched call

    # A new process would build a new model and a new cache object over the same folder.
    inner = CountingModel()
    cache = GenerationCache(folder)
    model = CachedModel(inner, cache)
    again = model.generate(requests, SAMPLE)
    assert inner.loads == 0 and inner.generate_calls == []  # weights never loaded
    assert model.usage.calls == 0 and model.usage.cache_hits == 4
    assert again == first
    # numpy values in meta were stored as plain JSON numbers; -inf survives
    assert again[0][1].meta == {"prompt_tokens": 7, "wall_s": 0.25, "beam": [1, -np.inf]}
    assert type(again[0][1].meta["prompt_tokens"]) is int
    assert cache.stats()["hits"] == 4 and cache.stats()["misses"] == 0
    assert cache.stats()["entries"] == 4 * SAMPLE.n


def test_first_run_returns_what_a_rerun_returns(folder):
    """On a miss the candidates come back decoded from what was stored, so both runs agree exactly."""
    req = [make_request()]
    first = CachedModel(CountingModel(), GenerationCache(folder)).generate(req, SAMPLE)
    assert type(first[0][0].meta["prompt_tokens"]) is int  # not np.int64
    assert first == CachedModel(CountingModel(), GenerationCache(folder)).generate(req, SAMPLE)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.9},
        {"seed": 12},
        {"n": 4},
        {"top_p": 0.9},
        {"max_new_tokens": 65},
    ],
)
def test_changed_generation_parameter_misses(folder, change):
    req = [make_request()]
    CachedModel(CountingModel(), GenerationCache(folder)).generate(req, SAMPLE)
    inner = CountingModel()
    out = CachedModel(inner, GenerationCache(folder)).generate(req, dataclasses.replace(SAMPLE, **change))
    assert inner.usage.calls == 1 and inner.usage.cache_hits == 0
    if "temperature" in change:
        assert out[0][0].text.endswith("t=0.9|0")


def test_every_config_field_and_sample_index_is_in_the_key():
    req = make_request()
    ident = CountingModel().identity
    config = dataclasses.replace(SAMPLE, num_beams=5)
    base = generation_key(ident, req, config, 0)
    assert generation_key(ident, req, config, 1) != base
    assert generation_key(ident, req, config, 0) == base  # deterministic
    changed = {
        "mode": "beam",
        "n": 2,
        "max_new_tokens": 8,
        "temperature": 0.5,
        "top_p": 0.5,
        "num_beams": 6,
        "seed": 99,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(GenerationConfig)}, "a new config field must be tested"
    for name, value in changed.items():
        assert generation_key(ident, req, dataclasses.replace(config, **{name: value}), 0) != base, name


def test_keys_of_a_request_computed_at_once_equal_the_keys_one_by_one():
    """The cache looks its candidates up with ``generation_keys`` (audio hashed once); entries
    written under ``generation_key`` must be found by it, and the other way round."""
    req = make_request()
    ident = CountingModel().identity
    config = dataclasses.replace(SAMPLE, n=6)
    keys = generation_keys(ident, req, config)
    assert keys == [generation_key(ident, req, config, i) for i in range(6)]
    assert len(set(keys)) == 6


def test_changed_conversation_audio_or_model_identity_misses(folder):
    req = make_request()
    CachedModel(CountingModel(), GenerationCache(folder)).generate([req], SAMPLE)
    louder = AudioRequest(req.utt_id, req.waveform.copy(), req.sample_rate, req.messages)
    louder.waveform[100] += 1e-3
    variants = [
        (CountingModel(), make_request(text="Which emotion? Think step by step.")),
        (CountingModel(), louder),
        (CountingModel(), AudioRequest(req.utt_id, req.waveform, 8000, req.messages)),  # same samples, other rate
        (
            CountingModel(),
            AudioRequest(
                req.utt_id,
                req.waveform,
                16000,
                req.messages + [Message("assistant", "happy"), Message("user", "Sure?")],
            ),
        ),
        (CountingModel(revision="r2"), req),
    ]
    for inner, r in variants:
        CachedModel(inner, GenerationCache(folder)).generate([r], SAMPLE)
        assert inner.usage.calls == 1, r
    # the params key is not part of the identity (renaming a key reuses the cache) ...
    renamed = CountingModel(key="other")
    CachedModel(renamed, GenerationCache(folder)).generate([req], SAMPLE)
    assert renamed.usage.calls == 0
    # ... and the utterance id alone is not part of the key: same audio and conversation hit
    inner = CountingModel()
    CachedModel(inner, GenerationCache(folder)).generate(
        [AudioRequest("renamed", req.waveform, 16000, req.messages)], SAMPLE
    )
    assert inner.usage.calls == 0


def test_partial_hits_send_only_the_missing_requests(folder):
    CachedModel(CountingModel(), GenerationCache(folder)).generate([make_request("a", seed=1)], SAMPLE)
    inner = CountingModel()
    out = CachedModel(inner, GenerationCache(folder)).generate(
        [make_request("b", seed=2), make_request("a", seed=1), make_request("c", seed=3)], SAMPLE
    )
    assert inner.generate_calls == [["b", "c"]]
    assert [c[0].text.split("|")[0] for c in out] == ["b", "a", "c"]  # request order kept
    assert inner.usage.cache_hits == 1 and inner.usage.calls == 2


def test_failed_requests_are_not_cached(folder):
    reqs = [make_request("ok", seed=1), make_request("bad", seed=2)]
    out = CachedModel(CountingModel(fail={"bad"}), GenerationCache(folder)).generate(reqs, SAMPLE)
    assert out[1][0].meta == {"error": "HTTP 500"}
    inner = CountingModel()  # the next run: the failed request is tried again, and now succeeds
    out = CachedModel(inner, GenerationCache(folder)).generate(reqs, SAMPLE)
    assert inner.generate_calls == [["bad"]]
    assert out[1][0].text.startswith("bad|")


def test_score_options_cached_and_keyed_on_options_and_prefix(folder):
    req = make_request()
    first = CachedModel(CountingModel(), GenerationCache(folder)).score_options(req, ["happy", "sad"], "Answer: ")
    np.testing.assert_array_equal(first, [-1 / 3 - 8, -2 / 3 - 8])
    inner = CountingModel()
    model = CachedModel(inner, GenerationCache(folder))
    np.testing.assert_array_equal(model.score_options(req, ["happy", "sad"], "Answer: "), first)
    assert inner.loads == 0 and inner.usage.cache_hits == 1
    model.score_options(req, ["sad", "happy"], "Answer: ")
    model.score_options(req, ["happy", "sad"], "")
    model.score_options(req, ["happy", "sad", "angry"], "Answer: ")
    assert inner.score_calls == 3
    # generation entries and scoring entries never collide
    assert scoring_key(inner.identity, req, ["happy"], "") != generation_key(inner.identity, req, SAMPLE, 0)


def test_failed_scores_are_not_cached(folder):
    req = make_request("bad")
    assert np.isnan(CachedModel(CountingModel(fail={"bad"}), GenerationCache(folder)).score_options(req, ["a"])).all()
    inner = CountingModel()
    CachedModel(inner, GenerationCache(folder)).score_options(req, ["a"])
    assert inner.score_calls == 1


def test_cached_model_keeps_the_contract(folder):
    inner = CountingModel()
    model = CachedModel(inner, GenerationCache(folder))
    assert isinstance(model, AudioLanguageModel)
    assert model.key == "fake" and model.identity == inner.identity and model.usage is inner.usage
    assert model.capabilities is inner.capabilities and model.fail == set()  # other attributes delegated
    assert inner.loads == 0


def test_stats_and_clear(folder):
    cache = GenerationCache(folder)
    CachedModel(CountingModel("m1"), cache).generate([make_request("a")], SAMPLE)
    CachedModel(CountingModel("m1"), cache).generate([make_request("a")], SAMPLE)
    CachedModel(CountingModel("m2", revision="r2"), cache).score_options(make_request("a"), ["x", "y"])
    stats = cache.stats()
    assert stats["hits"] == 1 and stats["misses"] == 2 and stats["entries"] == SAMPLE.n + 1
    assert stats["bytes"] == sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(DB_NAME))
    assert stats["bytes"] > 0
    # lifetime, from the file, per identity; the params key is recorded beside it, not inside it
    per_key = {tuple(row["keys"]): row for row in GenerationCache(folder).identity_stats()}
    assert set(per_key) == {("m1",), ("m2",)}
    assert (per_key[("m1",)]["entries"], per_key[("m1",)]["hits"], per_key[("m1",)]["misses"]) == (SAMPLE.n, 1, 1)
    assert (per_key[("m2",)]["entries"], per_key[("m2",)]["hits"], per_key[("m2",)]["misses"]) == (1, 0, 1)
    identity = per_key[("m2",)]["identity"]
    assert {k: identity[k] for k in ("model_id", "revision", "route")} == {
        "model_id": "fake/model",
        "revision": "r2",
        "route": "CountingModel",
    }
    assert identity == CountingModel("m2", revision="r2").identity  # version and settings hash included
    assert cache.clear("m1") == SAMPLE.n
    assert [r["keys"] for r in cache.identity_stats()] == [["m2"]]
    assert cache.clear() == 1 and cache.stats()["entries"] == 0


def test_wal_mode_and_env_override(folder, monkeypatch):
    GenerationCache(folder)
    with sqlite3.connect(folder / DB_NAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.setenv("AMBIEMO_CACHE_DIR", str(folder / "elsewhere"))
    assert cache_dir({"paths": {"cache_dir": "x"}}) == folder / "elsewhere"
    monkeypatch.delenv("AMBIEMO_CACHE_DIR")
    assert str(cache_dir({"paths": {"cache_dir": "x"}})) == "x"


def test_unwritable_folder_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="AMBIEMO_CACHE_DIR"):
        GenerationCache(blocker / "cache")


# -- concurrency --------------------------------------------------------------------------
N_PER_WORKER = 60


def _writer(folder, worker: int, queue) -> None:
    """One process: overlapping requests with the other workers, written one batch at a time."""
    try:
        model = CachedModel(CountingModel(), GenerationCache(folder))
        for i in range(N_PER_WORKER):
            u = (worker * N_PER_WORKER // 2 + i) % (2 * N_PER_WORKER)  # half of each worker's keys overlap another's
            model.generate([make_request(f"u{u}", seed=u, n_samples=4000)], SAMPLE)
        queue.put((worker, model.usage.calls, model.usage.cache_hits))
    except Exception as e:  # noqa: BLE001  (reported to the parent, which fails the test)
        queue.put((worker, "error", repr(e)))


def test_concurrent_writer_processes_do_not_corrupt(folder):
    ctx = multiprocessing.get_context("fork")
    GenerationCache(folder)  # the parent's open connection must not be reused by the forked children
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(folder, w, queue)) for w in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(r[1] != "error" for r in results), results
    assert all(calls + hits == N_PER_WORKER for _, calls, hits in results)

    with sqlite3.connect(folder / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    distinct = {(w * N_PER_WORKER // 2 + i) % (2 * N_PER_WORKER) for w in range(4) for i in range(N_PER_WORKER)}
    cache = GenerationCache(folder)
    assert cache.stats()["entries"] == len(distinct) * SAMPLE.n
    # every stored value is the right one: a fresh uncached model agrees with the cache everywhere
    reqs = [make_request(f"u{u}", seed=u, n_samples=4000) for u in sorted(distinct)]
    inner = CountingModel()
    assert CachedModel(inner, cache).generate(reqs, SAMPLE) == CachedModel(
        CountingModel(), GenerationCache(folder.parent / "fresh")
    ).generate(reqs, SAMPLE)
    assert inner.usage.calls == 0
    lifetime = cache.identity_stats()[0]
    assert lifetime["hits"] + lifetime["misses"] == 4 * N_PER_WORKER + len(reqs)


def test_threads_share_one_cache(folder):
    cache = GenerationCache(folder)

    def work(i: int):
        model = CachedModel(CountingModel(), cache)
        return model.generate([make_request(f"u{i % 5}", seed=i % 5)], SAMPLE)[0][0].text

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(work, range(40)))
    assert texts == [f"u{i % 5}|Which emotion?|t=0.7|0" for i in range(40)]
    assert cache.stats()["entries"] == 5 * SAMPLE.n
    assert cache.stats()["hits"] + cache.stats()["misses"] == 40


# -- `ambiemo cache stats` / `clear` ------------------------------------------------------------
def test_cache_cli(folder, monkeypatch, tmp_path):
    import json

    from typer.testing import CliRunner

    from ambiemo.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  cache_dir: {tmp_path / 'from-params'}\n")
    runner = CliRunner()
    monkeypatch.delenv("AMBIEMO_CACHE_DIR", raising=False)
    assert "no generation cache yet" in runner.invoke(app, ["cache", "stats", "--params", str(params)]).output
    assert not (tmp_path / "from-params").exists()  # looking does not create it

    monkeypatch.setenv("AMBIEMO_CACHE_DIR", str(folder))  # the environment wins over params
    cache = GenerationCache(folder)
    CachedModel(CountingModel("m1"), cache).generate([make_request("a")], SAMPLE)
    CachedModel(CountingModel("m1"), cache).generate([make_request("a"), make_request("b", seed=1)], SAMPLE)
    CachedModel(CountingModel("m2", revision="r2"), cache).score_options(make_request("a"), ["x"])

    out = json.loads(runner.invoke(app, ["cache", "stats", "--json", "--params", str(params)]).output)
    assert out["folder"] == str(folder) and out["entries"] == 2 * SAMPLE.n + 1
    assert {m["keys"][0]: (m["hits"], m["misses"]) for m in out["identities"]} == {"m1": (1, 2), "m2": (0, 1)}
    table = runner.invoke(app, ["cache", "stats", "--params", str(params)]).output
    assert "m1" in table and "33.3%" in table and "revision=r2" in table

    assert runner.invoke(app, ["cache", "clear", "--params", str(params)], input="n\n").exit_code == 1
    assert GenerationCache(folder).stats()["entries"] == 2 * SAMPLE.n + 1
    result = runner.invoke(app, ["cache", "clear", "--model", "m1", "--yes", "--params", str(params)])
    assert f"deleted {2 * SAMPLE.n} entries" in result.output
    assert GenerationCache(folder).stats()["entries"] == 1


def _create_and_write(folder, i: int, queue) -> None:
    try:
        GenerationCache(folder).put_many("ident", "m", "generate", [(f"k{i}", "1")])
        queue.put("ok")
    except Exception as e:  # noqa: BLE001  (reported to the parent, which fails the test)
        queue.put(repr(e))


def test_processes_creating_the_cache_at_once(tmp_path):
    """Switching a new file to WAL can fail with 'locked' without waiting; creation retries it."""
    ctx = multiprocessing.get_context("fork")
    for trial in range(10):
        folder = tmp_path / f"c{trial}"
        queue = ctx.Queue()
        procs = [ctx.Process(target=_create_and_write, args=(folder, i, queue)) for i in range(8)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert results == ["ok"] * 8
        assert GenerationCache(folder).stats()["entries"] == 8


# -- identity: the whole identity dict, never the params key ------------------------------------
class IdentifiedModel(CountingModel):
    """An adapter whose identity carries what the models contract adds: adapter version, settings hash."""

    def __init__(self, key: str = "fake", **identity) -> None:
        super().__init__(key)
        self._extra = {"version": 1, "settings_sha256": "a" * 64, **identity}

    @property
    def identity(self):
        return {**super().identity, **self._extra}


def test_renamed_params_key_hits_and_changed_identity_misses(folder):
    req = [make_request()]
    first = CachedModel(IdentifiedModel("qwen2-audio-7b"), GenerationCache(folder)).generate(req, SAMPLE)
    renamed = IdentifiedModel("qwen2-audio")  # same identity, another name in params.yaml
    assert CachedModel(renamed, GenerationCache(folder)).generate(req, SAMPLE) == first
    assert renamed.usage.calls == 0 and renamed.usage.cache_hits == 1
    for change in ({"version": 2}, {"settings_sha256": "b" * 64}, {"dtype": "bfloat16"}):
        inner = IdentifiedModel("qwen2-audio", **change)
        CachedModel(inner, GenerationCache(folder)).generate(req, SAMPLE)
        assert inner.usage.calls == 1, change  # any field the adapter puts in its identity counts
    # `cache stats` groups by identity and lists both names of the first one
    rows = GenerationCache(folder).identity_stats()
    assert len(rows) == 4
    assert sorted(r["keys"] for r in rows)[-1] == ["qwen2-audio", "qwen2-audio-7b"]


# -- integrity: checksums, truncation, old formats ------------------------------------------------
def _value_of(folder, key: str) -> str:
    with sqlite3.connect(folder / DB_NAME) as conn:
        return conn.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()[0]


def test_flipped_bytes_in_the_file_are_detected_reported_and_recomputed(folder, caplog):
    req = [make_request()]
    first_model = CountingModel()
    first = CachedModel(first_model, GenerationCache(folder)).generate(req, SAMPLE)
    key = generation_key(first_model.identity, req[0], SAMPLE, 1)
    value = _value_of(folder, key)
    # Fold the WAL into the main file, then damage the value's bytes on disk as a failing disk would.
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray((folder / DB_NAME).read_bytes())
    at = raw.find(value.encode())
    assert at >= 0 and raw.count(value.encode()) == 1
    digit = at + value.index('"logprob":') + len('"logprob":') + 3  # a digit inside the number
    raw[digit] = ord("7") if raw[digit] != ord("7") else ord("3")
    (folder / DB_NAME).write_bytes(bytes(raw))
    assert _value_of(folder, key) != value, "the damage reached the stored value"

    inner = CountingModel()
    cache = GenerationCache(folder)
    with caplog.at_level(logging.WARNING, logger="ambiemo.inference.cache"):
        again = CachedModel(inner, cache).generate(req, SAMPLE)
    assert again == first, "the damaged candidate was recomputed, not used"
    assert inner.usage.calls == 1 and cache.stats()["corrupt"] == 1
    assert f"entry {key[:16]} of model 'fake'" in caplog.text and "fails its checksum" in caplog.text
    assert _value_of(folder, key) == value, "and overwritten with the sound value"
    assert GenerationCache(folder).identity_stats()[0]["corrupt"] == 1  # lifetime counter


def test_truncated_value_and_old_format_entry_are_never_used(folder, caplog):
    req = [make_request("a", seed=1), make_request("b", seed=2)]
    model = CountingModel()
    first = CachedModel(model, GenerationCache(folder)).generate(req, SAMPLE)
    k_trunc = generation_key(model.identity, req[0], SAMPLE, 0)
    k_old = generation_key(model.identity, req[1], SAMPLE, 2)
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.execute("UPDATE entries SET value = substr(value, 1, length(value) / 2) WHERE key = ?", (k_trunc,))
        conn.execute("UPDATE entries SET format = 1 WHERE key = ?", (k_old,))  # a row in another layout
    report = GenerationCache(folder).verify()
    assert report["entries"] == 2 * SAMPLE.n and report["ok"] == 2 * SAMPLE.n - 2
    assert [c["key"] for c in report["corrupt"]] == [k_trunc] and report["stale"] == 1
    assert report["integrity"] == "ok"

    inner = CountingModel()
    cache = GenerationCache(folder)
    with caplog.at_level(logging.WARNING, logger="ambiemo.inference.cache"):
        assert CachedModel(inner, cache).generate(req, SAMPLE) == first
    assert inner.generate_calls == [["a", "b"]]
    assert (cache.stats()["corrupt"], cache.stats()["stale"]) == (1, 1)
    assert "another cache format" in caplog.text
    assert GenerationCache(folder).verify()["ok"] == 2 * SAMPLE.n  # both rewritten sound


V1_SCHEMA = """
CREATE TABLE entries (key TEXT PRIMARY KEY, model TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL);
CREATE INDEX entries_model ON entries (model);
CREATE TABLE counters (model TEXT PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0);
"""


def test_a_format_1_cache_file_is_set_aside_with_a_message(folder, caplog):
    """A file from the previous release: same table name, no checksums, keys on the params key."""
    folder.mkdir()
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.executescript(V1_SCHEMA)
        conn.executemany(
            "INSERT INTO entries VALUES (?, 'fake', 'generate', ?)", [(f"k{i}", '{"text":"x"}') for i in range(3)]
        )
    with caplog.at_level(logging.WARNING, logger="ambiemo.inference.cache"):
        cache = GenerationCache(folder)
    assert "cache format 1" in caplog.text and "its 3 entries are ignored" in caplog.text
    assert cache.stats()["entries"] == 0 and cache.get("k0") is None
    inner = CountingModel()
    CachedModel(inner, cache).generate([make_request()], SAMPLE)
    assert inner.usage.calls == 1
    report = cache.verify()
    assert report["old_tables"] == {"entries_v1": 3, "counters_v1": 0} and report["ok"] == SAMPLE.n
    assert cache.verify(repair=True)["repaired"] == 3
    assert cache.verify()["old_tables"] == {}
    caplog.clear()
    GenerationCache(folder)  # opened again: nothing more to set aside
    assert "format 1" not in caplog.text


def test_verify_cli(folder, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ambiemo.cli import app

    monkeypatch.setenv("AMBIEMO_CACHE_DIR", str(folder))
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    runner = CliRunner()
    model = CountingModel()
    CachedModel(model, GenerationCache(folder)).generate([make_request()], SAMPLE)
    result = runner.invoke(app, ["cache", "verify", "--params", str(params)])
    assert result.exit_code == 0 and f"{SAMPLE.n} entries, {SAMPLE.n} sound, 0 corrupt" in result.output
    key = generation_key(model.identity, make_request(), SAMPLE, 0)
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.execute("UPDATE entries SET checksum = 'x' WHERE key = ?", (key,))
    result = runner.invoke(app, ["cache", "verify", "--params", str(params)])
    assert result.exit_code == 1 and "1 corrupt" in result.output and key[:16] in result.output
    result = runner.invoke(app, ["cache", "verify", "--repair", "--params", str(params)])
    assert result.exit_code == 0 and "deleted 1 bad or old rows" in result.output
    assert GenerationCache(folder).stats()["entries"] == SAMPLE.n - 1


def test_score_options_many_sends_only_the_misses_in_one_call(tmp_path: Path) -> None:
    inner = CountingModel()
    model = CachedModel(inner, GenerationCache(tmp_path / "c"))
    reqs = [make_request(f"u{i}", seed=i) for i in range(3)]
    first = model.score_options(reqs[1], ["a", "b"])
    assert inner.score_many_calls == 1
    out = model.score_options_many(reqs, ["a", "b"])
    assert inner.score_many_calls == 2 and inner.score_calls == 3  # u0 and u2 together; u1 from the cache
    np.testing.assert_array_equal(out[1].logprobs, first)
    assert [list(x.logprobs) for x in out] == [list(model.score_options(r, ["a", "b"])) for r in reqs]
    assert [(x.prompt_tokens, x.wall_s) for x in out] == [(7, 0.125)] * 3  # the usage, from the cache too
    assert inner.score_calls == 3  # everything cached now
