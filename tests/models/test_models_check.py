"""`ambiemo models check` against fake OpenAI-compatible servers on 127.0.0.1: it passes on a
well-behaved server and fails, naming the reason, on servers that drop the audio, ignore `n`, ignore
the seed, answer under another model name, or return no log-probabilities."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import yaml
from fake_api import fake_servers, set_api_env

from ambiemo.core.config import load_params
from ambiemo.models.check import preflight

LABELS = ["neutral", "happy", "angry", "sad"]
MODEL = "org/served-alm"


@pytest.fixture
def fake_api():
    yield from fake_servers()


@pytest.fixture(autouse=True)
def api_env(monkeypatch):
    set_api_env(monkeypatch, "sk-test-openai", "gm-test-gemini")


def audio_of(body) -> str:
    for m in body["messages"]:
        if isinstance(m["content"], list):
            for part in m["content"]:
                if part["type"] == "input_audio":
                    return part["input_audio"]["data"]
    return ""


def server(*, drop_audio=False, ignore_n=False, ignore_seed=False, rename=None, no_logprobs=False):
    """A reply function: the answer is a function of the clip (unless ``drop_audio``), the seed and the
    choice index, as a well-behaved vLLM server's is."""

    def reply(i, path, body, headers):
        clip = "" if drop_audio else audio_of(body)
        seed = random.random() if ignore_seed else body.get("seed")
        n = 1 if ignore_n else body.get("n", 1)
        choices = []
        for k in range(n):
            h = hashlib.sha256(f"{clip}|{seed if body.get('temperature') else ''}|{k}".encode()).digest()
            label = LABELS[h[0] % 4]
            text = json.dumps({lab: (1.0 if lab == label else 0.0) for lab in LABELS})
            lp = None if no_logprobs else {"content": [{"token": "{", "logprob": -h[1] / 100, "top_logprobs": []}]}
            choices.append(
                {"index": k, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": lp}
            )
        return 200, {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": rename or body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": 50, "completion_tokens": 10 * n, "total_tokens": 50 + 10 * n},
        }

    return reply


def clips():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    return {
        "speech-a": rng.normal(0, 0.1, 8000).astype(np.float32),
        "speech-b": rng.normal(0, 0.2, 8000).astype(np.float32),
        "silence": np.zeros(8000, np.float32),
        "tone-440Hz": (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
    }


def params_for(url, repo_root, **extra):
    params = load_params(repo_root / "params.yaml")
    params["models"]["served"] = {
        "adapter": "openai-compatible",
        "model_id": MODEL,
        "base_url": url + "/v1",
        "logprobs": True,
        "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
        **extra,
    }
    return params


def test_a_well_behaved_server_passes(fake_api, repo_root):
    api = fake_api(server())
    report = preflight(params_for(api.url, repo_root), "served", clips())
    assert report.ok, report.failures
    kinds = [r["kind"] for r in report.requests]
    assert kinds.count("greedy") == 4 and kinds.count("sampled n=3") == 2
    assert all(r["served_model"] == MODEL and r["latency_s"] >= 0 for r in report.requests)
    # The real prompt went out: the label words and the audio part, for every clip.
    sent = api.requests[0]["body"]
    assert all(lab in json.dumps(sent["messages"]) for lab in LABELS) and audio_of(sent)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"drop_audio": True}, "do not depend on the audio"),
        ({"ignore_n": True}, "ignores `n`"),
        ({"ignore_seed": True}, "ignores the seed"),
        ({"rename": "org/another-model"}, "'org/another-model'"),
        ({"no_logprobs": True}, "logprobs ignored"),
    ],
)
def test_a_faulty_server_fails_naming_the_reason(fake_api, repo_root, fault, reason):
    api = fake_api(server(**fault))
    report = preflight(params_for(api.url, repo_root), "served", clips())
    assert not report.ok
    assert any(reason in f for f in report.failures), report.failures


def test_dropped_audio_without_logprobs_is_still_caught(fake_api, repo_root):
    api = fake_api(server(drop_audio=True, no_logprobs=True))
    report = preflight(params_for(api.url, repo_root, logprobs=False), "served", clips())
    assert any("no log-probabilities to tell" in f for f in report.failures)


def test_a_local_model_is_refused(repo_root):
    with pytest.raises(ValueError, match="runs in process"):
        preflight(load_params(repo_root / "params.yaml"), "tiny-qwen2-audio", clips())


@pytest.mark.slow
def test_the_cli_checks_with_the_demo_speech_clips(fake_api, repo_root, tmp_path):
    """The command as a user runs it: espeak-ng speech clips, exit 0 on a good server, 1 on one that drops audio."""
    for fault, rc in (({}, 0), ({"drop_audio": True}, 1)):
        api = fake_api(server(**fault))
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params_for(api.url, repo_root)))
        cmd = [sys.executable, "-m", "ambiemo", "models", "check", "served", "--params", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
        assert proc.returncode == rc, proc.stdout + proc.stderr
        assert "speech-" in proc.stdout and ("PASS" if rc == 0 else "FAIL") in proc.stdout


@pytest.mark.slow
def test_plan_check_runs_the_preflight_for_the_served_models_of_the_run(fake_api, repo_root, tmp_path):
    api = fake_api(server(drop_audio=True))
    params = params_for(api.url, repo_root)
    params["run"] = {**params["run"], "models": ["served"], "strategies": ["baseline"]}
    params["paths"] = {**params["paths"], "results": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache")}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "ambiemo", "plan", "--check", "--params", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "models check served (org/served-alm): FAIL" in proc.stdout and "do not depend on the audio" in proc.stdout
