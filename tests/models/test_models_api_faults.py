"""API faults, injected by fake servers on 127.0.0.1, each classified as ambiemo.models.api.client says:
retried (429 with and without Retry-After, 5xx, timeouts, dropped connections, malformed bodies),
recorded (400 refusals), or stopping the run (401). Waits and the total-time bound are checked
with an injected sleep and clock, by counts, never by wall time. Then: the key leaks nowhere, the
clip is in every route's request body, a pool of three servers survives one dying mid-run, and
concurrency is not capped by the caller's batch."""

from __future__ import annotations

import json
import logging
import traceback

import pytest
from fake_api import (
    DROP,
    FAST_RETRY,
    GEMINI_KEY,
    OPENAI_KEY,
    assert_is_the_clip,
    chat_response,
    gemini_response,
    gemini_spec,
    make_request,
    openai_spec,
    vllm_spec,
)

from ambiemo.inference.cache import CachedModel, GenerationCache
from ambiemo.models import load_model
from ambiemo.models.api.faults import ConfigurationError, RetryPolicy, call_with_retries, is_retryable
from ambiemo.models.base import GenerationConfig

pytest.importorskip("google.genai")


pytestmark = pytest.mark.usefixtures("api_env")  # fake keys, nothing routed off 127.0.0.1


OK = chat_response([("happy", [("happy", -0.1)])])
ERR = {"error": {"message": "injected", "type": "server"}}


class FakeTime:
    """An injected clock that only the injected sleep moves."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s

    def clock(self):
        return self.now


def timed(model):
    t = FakeTime()
    model.sleep, model.clock = t.sleep, t.clock
    return t


def fail_first(k, status, body=ERR, headers=None):
    def reply(i, path, b, h):
        if i < k:
            return (status, body, headers or {})
        return 200, OK

    return reply


# -- each fault --------------------------------------------------------------------------------
def test_429_retry_after_is_honoured(fake_api):
    api = fake_api(fail_first(2, 429, headers={"Retry-After": "7"}))
    model = load_model("v", vllm_spec(api.url, retry={"max_attempts": 5, "base_delay_s": 0.5, "max_delay_s": 2}))
    t = timed(model)
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert c.text == "happy" and len(api.requests) == 3
    assert t.sleeps == [7.0, 7.0]  # the server's wait, although max_delay_s is 2


def test_429_without_retry_after_backs_off_with_jitter(fake_api):
    api = fake_api(fail_first(4, 429))
    model = load_model("v", vllm_spec(api.url, retry={"max_attempts": 5, "base_delay_s": 1.0, "max_delay_s": 3.0}))
    t = timed(model)
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert c.text == "happy" and len(api.requests) == 5
    caps = [1.0, 2.0, 3.0, 3.0]  # base * 2**k, capped at max_delay_s; each wait in [cap/2, cap]
    assert all(cap / 2 <= s <= cap for s, cap in zip(t.sleeps, caps, strict=True))


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(fake_api, status):
    api = fake_api(fail_first(2, status))
    model = load_model("v", vllm_spec(api.url))
    timed(model)
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert c.text == "happy" and "error" not in c.meta and len(api.requests) == 3
    assert model.usage.calls == 1 and model.usage.failures == 0


def test_dropped_connection_is_retried(fake_api):
    api = fake_api(fail_first(1, 200, body=DROP))
    model = load_model("v", vllm_spec(api.url))
    timed(model)
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert c.text == "happy" and len(api.requests) == 2


def test_malformed_body_is_retried_then_recorded(fake_api):
    api = fake_api(lambda i, p, b, h: (200, b"<html>502 Bad Gateway</html>"))
    model = load_model("v", vllm_spec(api.url))
    timed(model)
    [[c]] = model.generate([make_request("u3")], GenerationConfig())
    assert len(api.requests) == FAST_RETRY["max_attempts"]
    assert c.text == "" and "malformed response" in c.meta["error"] and "gave up after 3" in c.meta["error"]
    assert model.usage.failures == 1 and model.usage.calls == 0


def test_400_content_policy_is_recorded_with_its_reason_not_retried(fake_api):
    body = {"error": {"message": "Your request was rejected by the safety system", "code": "content_policy_violation"}}
    api = fake_api(lambda i, p, b, h: (400, body))
    model = load_model("gpt-4o", openai_spec(api.url))
    t = timed(model)
    [cands] = model.generate([make_request()], GenerationConfig(mode="sample", n=2))
    assert len(api.requests) == 1 and t.sleeps == []
    assert all("HTTP 400" in c.meta["error"] and "safety system" in c.meta["error"] for c in cands)
    assert "gave up" not in cands[0].meta["error"] and model.usage.failures == 1


def test_expired_key_stops_the_run_at_once(fake_api, tmp_path):
    api = fake_api(
        lambda i, p, b, h: (401, {"error": {"message": "Incorrect API key provided", "code": "invalid_key"}})
    )
    inner = load_model("gpt-4o", openai_spec(api.url, concurrency=2))
    model = CachedModel(inner, GenerationCache(tmp_path))
    reqs = [make_request(f"u{i}", seconds=0.1 + i / 100) for i in range(20)]
    with pytest.raises(ConfigurationError) as err:
        model.generate(reqs, GenerationConfig())
    msg = str(err.value)
    assert "'gpt-4o'" in msg and "OPENAI_API_KEY" in msg and "401" in msg
    assert len(api.requests) <= 2  # those in flight when the first answer came; the other 18 never went
    assert inner.usage.calls == 0 and inner.usage.failures == 0  # nothing answered, nothing recorded
    assert not any(p.is_file() and p.stat().st_size for p in tmp_path.rglob("*.json*"))


def test_total_time_bounds_the_retries():
    """Waits of 3 s each and max_total_s = 10: attempts at t = 0, 3, 6, 9; a fifth would start at 12."""
    t = FakeTime()
    calls = []

    class RateLimited(Exception):
        status_code = 429
        response = type("R", (), {"headers": {"retry-after": "3"}})()

    def fn():
        calls.append(t.now)
        raise RateLimited("slow down")

    from ambiemo.models.api.faults import RequestFailed

    policy = RetryPolicy(max_attempts=100, max_total_s=10.0)
    with pytest.raises(RequestFailed) as err:
        call_with_retries(fn, policy, what="x", sleep=t.sleep, clock=t.clock)
    assert calls == [0.0, 3.0, 6.0, 9.0] and err.value.attempts == 4
    assert "gave up after 4 attempts" in err.value.reason


def test_timeout_is_retryable_and_a_bug_is_not():
    assert is_retryable(TimeoutError()) and not is_retryable(KeyError("x"))
    with pytest.raises(KeyError):  # a bug in the route surfaces, it is not recorded as a failed request
        call_with_retries(lambda: {}["x"], RetryPolicy(), what="x", sleep=lambda s: None)


# -- the key leaks nowhere -----------------------------------------------------------------------
def hostile(i, path, body, headers):
    """Every fault in turn, each echoing the caller's credentials back."""
    creds = f"{headers.get('authorization')} {headers.get('x-goog-api-key')}"
    err = {"error": {"message": f"for {creds}", "code": 500, "status": "INTERNAL"}}
    k = i % 6
    if k == 0:
        return 429, {**err, "error": {**err["error"], "code": 429}}, {"Retry-After": "0"}
    if k == 1:
        return 503, err
    if k == 2:
        return 200, f"not json {creds}".encode()
    if k == 3:
        return 200, DROP
    if k == 4:
        return 400, {"error": {"message": f"refused {creds}", "code": 400, "status": "INVALID_ARGUMENT"}}
    return 200, gemini_response(["happy"]) if "generateContent" in path else chat_response([("happy", None)])


@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_planted_key_is_in_no_message_log_meta_or_identity(fake_api, caplog, route):
    api = fake_api(hostile)
    retry = {"max_attempts": 2, "base_delay_s": 0.0, "max_delay_s": 0.0}
    spec = (openai_spec if route == "openai" else gemini_spec)(api.url, concurrency=1, retry=retry)
    key = OPENAI_KEY if route == "openai" else GEMINI_KEY
    model = load_model("m", spec)
    with caplog.at_level(logging.DEBUG):
        out = model.generate([make_request(f"u{i}") for i in range(4)], GenerationConfig())
        api.reply = lambda i, p, b, h: (401, {"error": {"message": f"bad key {h.get('authorization')}", "code": 401}})
        with pytest.raises(ConfigurationError) as err:
            model.generate([make_request("u9")], GenerationConfig())
    assert all(key in json.dumps(r["headers"]) for r in api.requests)  # the server did see it
    metas = json.dumps([c.meta for cands in out for c in cands])
    assert metas.count("error") >= 2  # the faults happened and were recorded
    texts = [metas, caplog.text, json.dumps(model.identity), "".join(traceback.format_exception(err.value))]
    texts += [r.getMessage() for r in caplog.records]
    assert all(key not in t for t in texts)


# -- the clip reaches every route ---------------------------------------------------------------
@pytest.mark.parametrize("route", ["openai-chat", "openai-compatible", "gemini"])
def test_request_body_carries_the_clip(fake_api, route):
    def reply(i, path, body, headers):
        return 200, gemini_response(["sad"]) if "generateContent" in path else chat_response([("sad", None)])

    api = fake_api(reply)
    spec = {"openai-chat": openai_spec, "openai-compatible": vllm_spec, "gemini": gemini_spec}[route](
        api.url, concurrency=1
    )  # requests arrive in order
    model = load_model("m", spec)
    reqs = [make_request("a"), make_request("b", seconds=0.3)]
    assert len(reqs[0].waveform) != len(reqs[1].waveform)  # two different clips, each must arrive as itself
    model.generate(reqs, GenerationConfig())
    for req, sent in zip(reqs, api.requests, strict=True):
        if route == "gemini":  # Gemini documents inline_data {mime_type, data}
            [part] = [p for c in sent["body"]["contents"] for p in c["parts"] if "inlineData" in p]
            blob = part["inlineData"]
            assert blob.get("mimeType", blob.get("mime_type")) == "audio/wav"
            assert_is_the_clip(blob["data"], req, urlsafe=True)
        else:  # OpenAI documents input_audio {data, format}; vLLM accepts the same
            parts = [p for m in sent["body"]["messages"] if isinstance(m["content"], list) for p in m["content"]]
            [part] = [p for p in parts if p["type"] == "input_audio"]
            assert part["input_audio"]["format"] == "wav"
            assert_is_the_clip(part["input_audio"]["data"], req)
