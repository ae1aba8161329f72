"""A served route kept full: the batch a strategy hands a served or API route is at least the
route's capacity (concurrency x endpoints), so a fake server sees that many requests in flight where the
strategy batch of 8 used to cap it; and the predictions are the same as with a batch of one request."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from fake_api import fake_servers, set_api_env

from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import build_manifest, write_manifest
from ambiemo.inference.run import run_inference

FOUR = ("neutral", "happy", "angry", "sad")
N = 24


@pytest.fixture
def fake_api():
    yield from fake_servers()


@pytest.fixture(autouse=True)
def api_env(monkeypatch):
    set_api_env(monkeypatch, "sk-test-openai", "gm-test-gemini")


@pytest.fixture
def manifest(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(N):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(4000)).astype("float32"), 16000)
        paths.append(str(path))
    info = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(N)],
            "dataset": "tiny",
            "audio_path": paths,
            "duration_s": 0.25,
            "speaker": "s",
        }
    )
    votes = rng.integers(0, 3, size=(N, 4)).astype(float) + np.eye(4)[np.arange(N) % 4]
    label_set = LabelSet("four", FOUR)
    df, ambiguity = build_manifest(info, votes, votes.sum(axis=1).astype(int), label_set, AmbiguityBins())
    return write_manifest(df, tmp_path / "manifest.parquet", label_set=label_set, ambiguity=ambiguity, exclusions={})


def reply(i, path, body, headers, delay=0.0):
    """An answer that is a function of the clip alone, after ``delay`` seconds (so that requests overlap)."""
    time.sleep(delay)
    clip = next(
        p["input_audio"]["data"]
        for m in body["messages"]
        if isinstance(m["content"], list)
        for p in m["content"]
        if "input_audio" in p
    )
    label = FOUR[hashlib.sha256(clip.encode()).digest()[0] % 4]
    text = json.dumps({x: (0.7 if x == label else 0.1) for x in FOUR})
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    return 200, {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [choice],
        "usage": usage,
    }


def params(tmp_path, url, concurrency, batch_size, cache):
    return {
        "seed": 3,
        "paths": {"cache_dir": str(tmp_path / cache)},
        "prompts": {"label_order": "canonical"},
        "models": {
            "served": {
                "adapter": "openai-compatible",
                "model_id": "org/m",
                "base_url": url + "/v1",
                "logprobs": False,
                "concurrency": concurrency,
            }
        },
        "strategies": {"batch_size": batch_size},
    }


def test_the_batch_is_at_least_the_routes_capacity_and_changes_no_answer(fake_api, manifest, tmp_path):
    server = fake_api(lambda *a: reply(*a, delay=0.3))
    full = run_inference(
        params(tmp_path, server.url, 16, 8, "a"), "served", "baseline", manifest, tmp_path / "a.parquet"
    )
    # The strategy batch of 8 no longer caps what is in flight (16 when every thread starts in time).
    assert 8 < server.max_inflight <= 16
    one = fake_api(reply)
    alone = run_inference(params(tmp_path, one.url, 1, 1, "b"), "served", "baseline", manifest, tmp_path / "b.parquet")
    assert one.max_inflight == 1
    cols = ["utt_id"] + [c for c in full.columns if c.startswith("p_")]
    pd.testing.assert_frame_equal(full[cols], alone[cols])
    assert len(full) == N
