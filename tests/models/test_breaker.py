"""The circuit breaker, on fake servers on 127.0.0.1: a server answering the same failure to
everything stops the model in a bounded number of requests with one message naming the model, the
endpoint, the status and what to do; a transient burst (429s, a few 5xx among successes) still
retries as before; a pool takes the failing endpoint out and stops only when every endpoint is out;
401/403/404/410 break an endpoint at once."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from fake_api import fake_servers, set_api_env

from ambiemo.models import load_model
from ambiemo.models.api.faults import CircuitOpen, ConfigurationError, failure_signature
from ambiemo.models.base import AudioRequest, GenerationConfig, Message

BREAKER = {"max_attempts": 5, "base_delay_s": 0.01, "max_delay_s": 0.05, "breaker_after": 6, "breaker_window_s": 0.0}
GREEDY = GenerationConfig(mode="greedy", n=1, max_new_tokens=8)


@pytest.fixture
def fake_api():
    yield from fake_servers()


@pytest.fixture(autouse=True)
def api_env(monkeypatch):
    set_api_env(monkeypatch, "sk-test-openai", "gm-test-gemini")


def ok(body):
    return 200, {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {"index": k, "message": {"role": "assistant", "content": '{"happy": 1}'}, "finish_reason": "stop"}
            for k in range(body.get("n", 1))
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def error(status, message="model withdrawn"):
    return status, {"error": {"message": message, "type": "server_error", "code": status}}


def requests(n):
    clip = np.sin(np.arange(1600) / 7).astype(np.float32) * 0.2
    return [
        AudioRequest(f"u{i}", clip * (1 + i / n), 16000, (Message("user", "Which emotion?", audio=True),))
        for i in range(n)
    ]


def spec(urls, **extra):
    return {
        "adapter": "openai-compatible",
        "model_id": "org/model",
        "base_url": urls if len(urls) > 1 else urls[0],
        "logprobs": False,
        "concurrency": 4,
        "retry": BREAKER,
        **extra,
    }


def test_signature_blanks_digits_and_ignores_rate_limits():
    class E(Exception):
        def __init__(self, code, text):
            super().__init__(text)
            self.status_code = code

    a, b = failure_signature(E(503, "no channel, request 123")), failure_signature(E(503, "no channel, request 987"))
    assert a == b and a[0].startswith("HTTP 503") and a[1] is False
    assert failure_signature(E(429, "slow down")) is None
    assert failure_signature(E(410, "gone"))[1] is True
    assert failure_signature(ValueError("a bug")) is None


def test_a_server_failing_everything_stops_the_model_in_a_bounded_number_of_requests(fake_api):
    server = fake_api(lambda i, path, body, headers: error(503))
    model = load_model("withdrawn", spec([server.url + "/v1"]))
    n = 200
    with pytest.raises(CircuitOpen) as e:
        model.generate(requests(n), GREEDY)
    msg = str(e.value)
    assert "withdrawn" in msg and "org/model" in msg and server.url in msg and "HTTP 503" in msg
    assert "ambiemo models check withdrawn" in msg  # what to do
    # Without the breaker every request would be tried max_attempts times: 1000 requests.
    assert len(server.requests) < 6 + 4 * BREAKER["max_attempts"] + 4
    assert len(server.requests) < n


def test_a_burst_of_rate_limits_is_retried_and_every_request_answered(fake_api):
    server = fake_api(lambda i, path, body, headers: error(429, "rate limited") if i < 10 else ok(body))
    model = load_model("burst", spec([server.url + "/v1"]))
    out = model.generate(requests(30), GREEDY)
    assert all(len(c) == 1 and "error" not in c[0].meta and c[0].text for c in out)
    assert len(server.requests) == 30 + 10


def test_a_few_server_errors_among_successes_do_not_trip_the_breaker(fake_api):
    # Every third request fails with 500: never six in a row, so every request is answered.
    server = fake_api(lambda i, path, body, headers: error(500, "overloaded") if i % 3 == 2 else ok(body))
    model = load_model("flaky", spec([server.url + "/v1"], concurrency=1))
    out = model.generate(requests(30), GREEDY)
    assert all("error" not in c[0].meta for c in out)
    assert model.pool.stats()[0]["broken"] is None


def test_the_streak_must_last_the_window(fake_api):
    """Four failures in a row (past breaker_after = 3) within a long window do not trip: a short outage is
    ridden out by the retries; the same streak with no window breaks the endpoint."""
    for window, broken in ((60.0, False), (0.0, True)):
        count = itertools.count()
        server = fake_api(lambda i, path, body, headers, count=count: error(503) if next(count) < 4 else ok(body))
        retry = {**BREAKER, "breaker_after": 3, "breaker_window_s": window}
        model = load_model("outage", spec([server.url + "/v1"], retry=retry, concurrency=1))
        if broken:
            with pytest.raises((CircuitOpen, ConfigurationError)):
                model.generate(requests(3), GREEDY)
        else:
            out = model.generate(requests(3), GREEDY)
            assert all("error" not in c[0].meta for c in out)
            assert model.pool.stats()[0]["broken"] is None


def test_a_pool_takes_the_failing_endpoint_out_and_answers_on_the_others(fake_api):
    bad = fake_api(lambda i, path, body, headers: error(503))
    good = [fake_api(lambda i, path, body, headers: ok(body)) for _ in range(2)]
    model = load_model("pool", spec([s.url + "/v1" for s in (bad, *good)]))
    out = model.generate(requests(60), GREEDY)
    assert all("error" not in c[0].meta for c in out)
    stats = {s["url"]: s for s in model.pool.stats()}
    assert stats[bad.url + "/v1"]["broken"].startswith("HTTP 503")
    assert all(stats[s.url + "/v1"]["broken"] is None for s in good)
    assert sum(len(s.requests) for s in good) >= 60


def test_a_pool_whose_every_endpoint_fails_stops(fake_api):
    servers = [fake_api(lambda i, path, body, headers: error(503)) for _ in range(3)]
    model = load_model("pool", spec([s.url + "/v1" for s in servers]))
    with pytest.raises(CircuitOpen) as e:
        model.generate(requests(100), GREEDY)
    assert all(s.url in str(e.value) for s in servers)


def test_a_404_on_one_endpoint_moves_the_call_and_a_410_alone_stops_at_once(fake_api):
    wrong = fake_api(lambda i, path, body, headers: error(404, "model org/model does not exist"))
    right = fake_api(lambda i, path, body, headers: ok(body))
    model = load_model("pool", spec([wrong.url + "/v1", right.url + "/v1"]))
    out = model.generate(requests(20), GREEDY)
    assert all("error" not in c[0].meta for c in out)
    assert len(wrong.requests) <= 4  # broken at its first 404s (one per slot at most)

    gone = fake_api(lambda i, path, body, headers: error(410, "model retired"))
    model = load_model("gone", spec([gone.url + "/v1"]))
    with pytest.raises(ConfigurationError, match="410"):
        model.generate(requests(20), GREEDY)
    assert len(gone.requests) <= 4


def test_a_cell_against_a_withdrawn_model_stops_with_one_message_and_writes_nothing(fake_api, tmp_path):
    import pandas as pd
    import soundfile as sf

    from ambiemo.data.labels import AmbiguityBins, LabelSet
    from ambiemo.data.manifest import build_manifest, write_manifest
    from ambiemo.inference.run import run_inference

    n = 60
    wav = tmp_path / "clip.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(4000) / 3)).astype("float32"), 16000)
    info = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(n)],
            "dataset": "t",
            "audio_path": str(wav),
            "duration_s": 0.25,
            "speaker": "s",
        }
    )
    votes = np.tile(np.eye(4), (n // 4, 1)) * 3
    label_set = LabelSet("four", ("neutral", "happy", "angry", "sad"))
    df, bins = build_manifest(info, votes, votes.sum(axis=1).astype(int), label_set, AmbiguityBins())
    manifest = write_manifest(df, tmp_path / "m.parquet", label_set=label_set, ambiguity=bins, exclusions={})
    server = fake_api(lambda i, path, body, headers: error(503, "no available channels for model org/model"))
    params = {
        "seed": 1,
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "models": {"gone": spec([server.url + "/v1"])},
    }
    out = tmp_path / "pred.parquet"
    with pytest.raises(CircuitOpen, match="every endpoint fails every request the same way"):
        run_inference(params, "gone", "baseline", manifest, out)
    assert not out.exists()
    assert len(server.requests) < n  # most utterances were never sent
