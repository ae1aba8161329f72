"""Secrets end to end: ``ambiemo infer`` on an API route against a hostile fake server on 127.0.0.1
(tests/fake_api.py) that echoes the caller's key in its errors; the key appears in no output
(predictions, cache, logs)."""

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

from ambiemo.core.tables import read_meta
from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import build_manifest, write_manifest

pytestmark = pytest.mark.e2e  # `ambiemo infer` in a subprocess

KEY = "sk-test-planted-0123456789SECRETabcdef"
FOUR = ("neutral", "happy", "angry", "sad")
N = 4


def echo_credentials(i, path, body, headers):
    """Answers OpenAI chat completions; its first two requests fail with the caller's credentials in the
    error (500, retried; then 400, not retried), as a misconfigured proxy might."""
    creds = str(headers.get("authorization"))
    if i < 2:
        status = 500 if i == 0 else 400
        return status, {"error": {"message": f"upstream rejected {creds}", "type": "server_error", "code": status}}
    return 200, {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-audio",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": '{"happy": 0.75, "sad": 0.25}'},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59},
    }


def _manifest(folder: Path) -> Path:
    rng = np.random.default_rng(2)
    paths = []
    for i in range(N):
        paths.append(folder / f"u{i}.wav")
        sf.write(paths[-1], (0.1 * rng.standard_normal(3200 + 160 * i)).astype("float32"), 16000)
    info = pd.DataFrame(
        {"utt_id": [p.stem for p in paths], "dataset": "tiny", "audio_path": [str(p) for p in paths], "duration_s": 0.2}
    )
    info["speaker"] = "s0"
    votes = np.array([[2, 1, 0, 0], [0, 3, 0, 0], [1, 1, 1, 0], [0, 0, 0, 2]], dtype=float)
    ls = LabelSet("four", FOUR)
    df, amb = build_manifest(info, votes, votes.sum(axis=1).astype(int), ls, AmbiguityBins())
    return write_manifest(df, folder / "manifest.parquet", label_set=ls, ambiguity=amb, exclusions={})


def test_a_planted_api_key_is_in_no_output(fake_api, tmp_path):
    server = fake_api(echo_credentials)  # tests/fake_api.py, on 127.0.0.1
    manifest = _manifest(tmp_path)
    params = {
        "seed": 1,
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "inference": {"max_failure_share": 0.5},
        "models": {
            "api": {
                "adapter": "openai-chat",
                "model_id": "gpt-audio",
                "base_url": server.url + "/v1",
                "concurrency": 1,
                "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
            }
        },
        "strategies": {"batch_size": 1},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "pred.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update({"OPENAI_API_KEY": KEY, "NO_PROXY": "127.0.0.1,localhost"})
    args = ["infer", "--model", "api", "--manifest", str(manifest), "--out", str(out), "--params", "params.yaml"]
    proc = subprocess.run(
        [sys.executable, "-m", "ambiemo", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs

    # The key was sent, echoed back in an error, and the failure recorded ...
    seen = [r["headers"]["authorization"] for r in server.requests]
    assert all(KEY in s for s in seen) and len(seen) == N + 1
    meta = read_meta(out)
    assert list(meta["model_failures"]) == ["u0"] and "upstream rejected" in meta["model_failures"]["u0"]
    assert "u0" in logs and "upstream rejected" in logs
    # ... and is written nowhere: not in the predictions, the cache, or the logs.
    assert KEY.encode() not in out.read_bytes()
    cache_files = list((tmp_path / "cache").rglob("*"))
    assert cache_files and all(KEY.encode() not in p.read_bytes() for p in cache_files if p.is_file())
    assert b"happy" in b"".join(p.read_bytes() for p in cache_files if p.is_file())
    assert KEY not in logs
    assert KEY[len("sk-test-") :] not in logs  # not even partly (a "Bearer " prefix around it)
