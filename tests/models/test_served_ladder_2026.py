"""The open ALMs of late 2026 as params.yaml writes them: each served one (vLLM, docs/serving.md) on a
fake server on 127.0.0.1 sends its own model id with the clip as a WAV part, asks for log-probabilities
and reads back the candidates, and has a port of its own; Gemma 4 runs in process (`hf-gemma4`, its tiny
instance in test_models_ladder.py); each has a family ladder and a capacity, and `ambiemo models list`
shows the new ladders with their routes."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from fake_api import fake_servers, set_api_env

from ambiemo.core.config import load_params
from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message

SERVED = (
    "qwen3-omni-30b-a3b-thinking",
    "granite-speech-3.3-2b",
    "granite-speech-3.3-8b",
    "midashenglm-7b",
    "step-audio-2-mini",
    "audio-flamingo-next",
)
NATIVE = ("gemma-4-e2b", "gemma-4-e4b")  # transformers' Gemma4ForConditionalGeneration, in this process
NEW = SERVED + NATIVE


@pytest.fixture
def fake_api():
    yield from fake_servers()


@pytest.fixture(autouse=True)
def api_env(monkeypatch):
    set_api_env(monkeypatch, "sk-test-openai", "gm-test-gemini")


def reply(i, path, body, headers):
    n = body["n"]
    choices = [
        {
            "index": k,
            "message": {"role": "assistant", "content": f'{{"sad": {k}}}'},
            "finish_reason": "stop",
            "logprobs": {"content": [{"token": "{", "logprob": -0.5 * (k + 1), "top_logprobs": []}]},
        }
        for k in range(n)
    ]
    usage = {"prompt_tokens": 40, "completion_tokens": n, "total_tokens": 40 + n}
    return 200, {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": choices,
        "usage": usage,
    }


@pytest.mark.parametrize("key", SERVED)
def test_each_served_entry_reaches_its_server_with_the_clip(key, fake_api, repo_root):
    spec = dict(load_params(repo_root / "params.yaml")["models"][key])
    assert spec["adapter"] == "openai-compatible" and spec["family"]
    assert spec["params_b"] is None or spec["params_b"] > 0
    server = fake_api(reply)
    model = load_model(key, {**spec, "base_url": server.url + "/v1", "retry": {"max_attempts": 1}})
    clip = (0.5 * np.sin(np.arange(4000) / 5)).astype(np.float32)
    request = AudioRequest("u1", clip, 16000, (Message("user", "Which emotion?", audio=True),))
    out = model.generate([request], GenerationConfig(mode="sample", n=2, temperature=0.7, seed=1))
    body = server.requests[0]["body"]
    assert body["model"] == spec["model_id"] and body["n"] == 2 and body["logprobs"] is True
    [audio] = [
        p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"] if "input_audio" in p
    ]
    samples, rate = sf.read(io.BytesIO(base64.b64decode(audio["input_audio"]["data"])), dtype="int16")
    assert rate == 16000 and np.array_equal(samples, np.round(clip * 32767).astype(np.int16))
    assert [c.logprob for c in out[0]] == pytest.approx([-0.5, -1.0])
    assert [c.meta["served_model"] for c in out[0]] == [spec["model_id"]] * 2


def test_each_served_entry_has_a_port_of_its_own(repo_root):
    models = load_params(repo_root / "params.yaml")["models"]
    urls = [m["base_url"] for k, m in models.items() if m.get("adapter") == "openai-compatible" and k != "vllm-served"]
    assert len(urls) == len(set(urls))


def test_models_list_shows_the_new_ladders(repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "ambiemo", "models", "list", "--json"], capture_output=True, text=True, cwd=repo_root
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["key"]: r for r in json.loads(proc.stdout)}
    assert rows["gemma-4-e2b"]["params_b"] < rows["gemma-4-e4b"]["params_b"]
    for key in NATIVE:  # in process: every strategy, beams and label scoring included; the 30 s the encoder hears
        assert rows[key]["route"] == "hf-gemma4" and rows[key]["model"].startswith("google/gemma-4-")
        assert rows[key]["logprobs"] and rows[key]["beam_search"] and rows[key]["option_scoring"]
        assert rows[key]["max_audio_s"] == 30.0
    assert {rows[k]["route"] for k in SERVED} == {"openai-compatible"}
    assert rows["granite-speech-3.3-2b"]["params_b"] < rows["granite-speech-3.3-8b"]["params_b"]
    assert rows["qwen3-omni-30b-a3b-thinking"]["params_active_b"] == pytest.approx(3.3)
    assert {rows[k]["family"] for k in NEW} >= {
        "gemma-4",
        "granite-speech",
        "midashenglm",
        "step-audio",
        "audio-flamingo",
    }
