"""The API routes (OpenAI chat with audio, vLLM's OpenAI-compatible server, Gemini) against fake
HTTP servers started here on 127.0.0.1: what is sent (model, audio, messages, sampling), what
comes back, retries, failures, cost, and that API keys never leak into files, logs or results."""

from __future__ import annotations

import json
import logging
import random
import time

import numpy as np
import pytest
import soundfile as sf
from fake_api import (
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
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp

from ambiemo.core.provenance import provenance
from ambiemo.inference.cache import CachedModel, GenerationCache
from ambiemo.models import load_model
from ambiemo.models.api.client import request_seed
from ambiemo.models.api.faults import ConfigurationError, RetryPolicy
from ambiemo.models.api.labels import option_logprobs_from_top
from ambiemo.models.base import AudioRequest, CapabilityError, GenerationConfig, Message

pytest.importorskip("google.genai")

pytestmark = pytest.mark.usefixtures("api_env")  # fake keys, nothing routed off 127.0.0.1


def three_choices(i, path, body, headers):
    return 200, chat_response([(f"happy {k}", [("happy", -0.25 * (k + 1)), (" {k}", -0.5)]) for k in range(body["n"])])


def test_vllm_route_sends_model_audio_messages_and_sampling(fake_api):
    api = fake_api(three_choices)
    model = load_model("ultravox-v0.4", vllm_spec(api.url))
    req = make_request(extra=[Message("assistant", "happy"), Message("user", "Are you sure?")])
    config = GenerationConfig(mode="sample", n=3, temperature=0.8, top_p=0.9, max_new_tokens=32, seed=7)
    [cands] = model.generate([req], config)

    [sent] = api.requests
    assert sent["path"] == "/v1/chat/completions"
    body = sent["body"]
    assert body["model"] == "fixie-ai/ultravox-v0_4"
    assert (body["n"], body["temperature"], body["top_p"], body["max_completion_tokens"]) == (3, 0.8, 0.9, 32)
    assert body["seed"] == request_seed(7, req, 0)
    assert body["logprobs"] is True
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"] == "You rate emotions." and msgs[2]["content"] == "happy"
    assert msgs[3]["content"] == "Are you sure?"
    audio, text = msgs[1]["content"]
    assert audio["type"] == "input_audio" and audio["input_audio"]["format"] == "wav"
    assert text == {"type": "text", "text": "Which emotion is this?"}
    assert_is_the_clip(audio["input_audio"]["data"], req)

    assert [c.text for c in cands] == ["happy 0", "happy 1", "happy 2"]
    assert [c.token_logprobs for c in cands] == [[-0.25, -0.5], [-0.5, -0.5], [-0.75, -0.5]]
    assert [c.logprob for c in cands] == [-0.75, -1.0, -1.25]
    assert [c.n_tokens for c in cands] == [2, 2, 2]
    assert all(c.meta["prompt_tokens"] == 60 and c.meta["wall_s"] > 0 for c in cands)
    assert model.usage.calls == 1 and model.usage.prompt_tokens == 60 and model.usage.gen_tokens == 6
    identity = model.identity
    assert (identity["route"], identity["model_id"], identity["revision"]) == (
        "openai-compatible",
        "fixie-ai/ultravox-v0_4",
        "abc123",
    )
    assert "ultravox-v0.4" not in json.dumps(identity)  # the params key is not part of it


def test_openai_route_without_logprobs(fake_api):
    api = fake_api(lambda i, p, b, h: (200, chat_response([("sad", None), ("angry", None)], completion_tokens=7)))
    model = load_model("gpt-4o", openai_spec(api.url))
    assert not model.capabilities.logprobs and not model.capabilities.option_scoring
    cands = model.generate([make_request()], GenerationConfig(mode="sample", n=2, temperature=1.0))[0]
    body = api.requests[0]["body"]
    assert "logprobs" not in body and "top_logprobs" not in body
    assert api.requests[0]["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert [c.text for c in cands] == ["sad", "angry"]
    assert all(c.logprob is None and c.token_logprobs is None for c in cands)
    # no per-choice lengths without log-probabilities: the total, shared and marked as an estimate
    assert [c.n_tokens for c in cands] == [4, 4] and all(c.meta["n_tokens_estimated"] for c in cands)
    with pytest.raises(CapabilityError, match="cannot score options"):
        model.score_options(make_request(), ["happy", "sad"])
    with pytest.raises(CapabilityError, match="beam"):
        model.generate([make_request()], GenerationConfig(mode="beam", n=2, num_beams=3))
    with pytest.raises(CapabilityError, match="'w-bon' needs logprobs"):
        model.require("logprobs", "w-bon")


def test_greedy_sends_temperature_zero(fake_api):
    api = fake_api(lambda i, p, b, h: (200, chat_response([("neutral", [("neutral", -0.1)])])))
    model = load_model("v", vllm_spec(api.url))
    [[c]] = model.generate([make_request()], GenerationConfig())
    body = api.requests[0]["body"]
    assert body["temperature"] == 0.0 and body["n"] == 1 and "top_p" not in body
    assert c.text == "neutral" and c.logprob == -0.1


def test_many_candidates_are_split_into_calls_with_distinct_seeds(fake_api):
    api = fake_api(three_choices)
    model = load_model("v", vllm_spec(api.url, max_candidates_per_call=2, concurrency=1))
    [cands] = model.generate([make_request()], GenerationConfig(mode="sample", n=5, seed=40))
    assert [r["body"]["n"] for r in api.requests] == [2, 2, 1]
    assert len({r["body"]["seed"] for r in api.requests}) == 3  # each call samples afresh
    assert [c.text for c in cands] == ["happy 0", "happy 1", "happy 0", "happy 1", "happy 0"]
    assert model.usage.calls == 3


def test_vllm_beam_search_keeps_the_most_likely_beams(fake_api):
    def beams(i, path, body, headers):
        return 200, chat_response(
            [("sad", [("sad", -2.0)]), ("happy", [("happy", -0.5)]), ("angry", [("angry", -1.0)])]
        )

    api = fake_api(beams)
    model = load_model("v", vllm_spec(api.url, beam_search=True))
    assert model.capabilities.beam_search
    [cands] = model.generate([make_request()], GenerationConfig(mode="beam", n=2, num_beams=3))
    body = api.requests[0]["body"]
    assert body["use_beam_search"] is True and body["n"] == 3 and body["temperature"] == 0.0
    assert [c.text for c in cands] == ["happy", "angry"]


TOP = [
    ("Happy", -0.4),
    (" happy", -1.9),
    ("happy", -2.5),
    ("sad", -1.2),
    ("ne", -3.0),
    ("neutral", -2.2),
    ("Ang", -2.9),
    ("I", -4.0),
    ("dis", -5.0),
    ("disgust", -6.0),
    ("sad", -1.2),
]
OPTIONS = ["happy", "Happy", "sad", "neutral", "angry", "Angry", "fear"]


def expected_scores():
    """By hand: spellings with and without a space summed, case kept apart, a 3-letter start counts
    ("Ang"), 2 letters do not ("ne"), a repeated entry counts once, unlisted options get -inf."""
    return np.array([logsumexp([-1.9, -2.5]), -0.4, -1.2, -2.2, -np.inf, -2.9, -np.inf])


def test_vllm_scores_options_from_first_token_top_logprobs(fake_api):
    api = fake_api(lambda i, p, b, h: (200, chat_response([("Happy", [("Happy", -0.4)])], top=TOP)))
    model = load_model("v", vllm_spec(api.url, top_logprobs=15))
    options = OPTIONS
    scores = model.score_options(make_request(), options)
    np.testing.assert_allclose(scores, expected_scores())
    body = api.requests[0]["body"]
    assert (body["logprobs"], body["top_logprobs"], body["max_completion_tokens"], body["temperature"]) == (
        True,
        15,
        1,
        0.0,
    )
    assert "continue_final_message" not in body

    model.score_options(make_request(), options, prefix="The emotion is")
    body = api.requests[1]["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "The emotion is"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_openai_cannot_continue_a_prefix(fake_api):
    api = fake_api(lambda i, p, b, h: (200, chat_response([("happy", [("happy", -0.1)])], top=TOP)))
    model = load_model("gpt-4o", openai_spec(api.url, logprobs=True))
    np.testing.assert_allclose(model.score_options(make_request(), OPTIONS[:3]), expected_scores()[:3])
    with pytest.raises(CapabilityError, match="prefix"):
        model.score_options(make_request(), ["happy", "sad"], prefix="Answer:")
    assert len(api.requests) == 1


def test_openai_base_url_from_environment(fake_api, monkeypatch):
    api = fake_api(lambda i, p, b, h: (200, chat_response([("sad", None)])))
    monkeypatch.setenv("OPENAI_BASE_URL", api.url + "/v1")
    model = load_model("gpt-4o", {"adapter": "openai-chat", "model_id": "gpt-audio"})
    assert model.generate([make_request()], GenerationConfig())[0][0].text == "sad"
    assert api.requests[0]["path"] == "/v1/chat/completions"


def test_retries_429_and_500_then_succeeds(fake_api):
    def flaky(i, path, body, headers):
        if i == 0:
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}
        if i == 1:
            return 500, {"error": {"message": "boom", "type": "server"}}
        return 200, chat_response([("happy", [("happy", -0.1)])])

    api = fake_api(flaky)
    model = load_model("v", vllm_spec(api.url))
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert len(api.requests) == 3 and c.text == "happy" and "error" not in c.meta
    assert model.usage.calls == 1 and model.usage.failures == 0


def test_persistent_failure_is_bounded_and_recorded(fake_api, caplog):
    api = fake_api(lambda i, p, b, h: (503, {"error": {"message": "overloaded", "type": "server"}}))
    model = load_model("v", vllm_spec(api.url))
    with caplog.at_level(logging.WARNING):
        [cands] = model.generate([make_request("u7")], GenerationConfig(mode="sample", n=2))
    assert len(api.requests) == FAST_RETRY["max_attempts"]
    assert [c.text for c in cands] == ["", ""]
    meta = cands[0].meta
    assert "503" in meta["error"] and "gave up after 3 attempts" in meta["error"] and meta["attempts"] == 3
    assert cands[0].logprob is None and cands[0].n_tokens == 0 and meta["prompt_tokens"] == 0
    assert model.usage.failures == 1 and model.usage.calls == 0
    assert "u7" in caplog.text and "retry 2 of 2" in caplog.text
    assert np.isnan(model.score_options(make_request(), ["happy", "sad"])).all()  # scoring fails the same way
    assert model.usage.failures == 2


def test_client_errors_are_not_retried_and_config_errors_stop(fake_api):
    api = fake_api(lambda i, p, b, h: (400, {"error": {"message": "audio too long", "type": "invalid_request"}}))
    model = load_model("v", vllm_spec(api.url))
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert len(api.requests) == 1 and "400" in c.meta["error"] and "audio too long" in c.meta["error"]

    api = fake_api(lambda i, p, b, h: (404, {"error": {"message": "model not found", "type": "invalid_request"}}))
    model = load_model("v", vllm_spec(api.url))
    with pytest.raises(ConfigurationError, match="model_id"):
        model.generate([make_request()], GenerationConfig())
    assert len(api.requests) == 1


def test_short_answers_and_refusals_are_recorded(fake_api):
    def reply(i, path, body, headers):
        if i == 0:  # one choice where three were asked for
            return 200, chat_response([("happy", [("happy", -0.1)])])
        out = chat_response([(None, [])])
        out["choices"][0]["message"]["refusal"] = "I can't help with that."
        return 200, out

    api = fake_api(reply)
    model = load_model("v", vllm_spec(api.url, concurrency=1))
    [short] = model.generate([make_request("a")], GenerationConfig(mode="sample", n=3))
    assert len(short) == 3 and short[0].meta["error"] == "asked for 3 choices, the server returned 1"
    assert len(api.requests) == 1  # not retried: the same request would come back short again
    [[refused]] = model.generate([make_request("b")], GenerationConfig())
    assert refused.text == "" and refused.meta["refusal"] == "I can't help with that."
    assert "error" not in refused.meta and model.usage.failures == 1


def test_gemini_blocked_prompt_is_a_recorded_failure(fake_api):
    api = fake_api(
        lambda i, p, b, h: (
            200,
            {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 80}},
        )
    )
    model = load_model("g", gemini_spec(api.url))
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert c.meta["error"] == "asked for 1 candidates, Gemini returned 0 (prompt blocked: SAFETY)"
    assert model.usage.failures == 1 and len(api.requests) == 1


def test_timeouts_are_retried(fake_api):
    def slow_first(i, path, body, headers):
        if i == 0:
            time.sleep(1.0)
        return 200, chat_response([("sad", [("sad", -0.3)])])

    api = fake_api(slow_first)
    model = load_model("v", vllm_spec(api.url, timeout_s=0.3))
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert len(api.requests) == 2 and c.text == "sad"


def test_concurrency_is_bounded_and_order_kept(fake_api):
    def slow(i, path, body, headers):
        time.sleep(0.05)
        text = body["messages"][0]["content"]
        return 200, chat_response([(text, [("x", -0.1)])])

    api = fake_api(slow)
    model = load_model("v", vllm_spec(api.url, concurrency=3))
    reqs = [
        AudioRequest(
            f"u{i}", make_request().waveform, 16000, [Message("system", f"s{i}"), Message("user", "?", audio=True)]
        )
        for i in range(9)
    ]
    out = model.generate(reqs, GenerationConfig())
    assert [c[0].text for c in out] == [f"s{i}" for i in range(9)]
    assert api.max_inflight == 3


def test_cost_from_price_table(fake_api):
    api = fake_api(
        lambda i, p, b, h: (
            200,
            chat_response([("sad", None)], prompt_tokens=1000, audio_tokens=800, completion_tokens=20),
        )
    )
    pricing = {"input_per_mtok": 2.5, "audio_input_per_mtok": 40.0, "output_per_mtok": 10.0}
    model = load_model("gpt-4o", openai_spec(api.url, pricing=pricing))
    out = model.generate([make_request(), make_request("u2")], GenerationConfig())
    assert model.usage.cost_usd == pytest.approx(2 * (200 * 2.5 + 800 * 40.0 + 20 * 10.0) / 1e6)
    assert sum(c.meta["cost_usd"] for c in out[0]) == pytest.approx((200 * 2.5 + 800 * 40.0 + 20 * 10.0) / 1e6)
    with pytest.raises(ValueError, match="per million"):
        load_model("gpt-4o", openai_spec(api.url, pricing={"input": 1.0}))


def test_audio_goes_to_the_turn_audio_turn_names(fake_api):
    """One rule on every route (AudioRequest.audio_turn): the marked user turn; a conversation with
    none marked is refused before anything is sent."""
    api = fake_api(three_choices)
    model = load_model("v", vllm_spec(api.url))
    wave = make_request().waveform
    turns = [Message("system", "s"), Message("user", "Which?", audio=True), Message("user", "Sure?")]
    req = AudioRequest("u1", wave, 16000, turns)
    model.generate([req], GenerationConfig())
    msgs = api.requests[0]["body"]["messages"]
    assert msgs[1]["content"][0]["type"] == "input_audio" and msgs[2]["content"] == "Sure?"
    assert_is_the_clip(msgs[1]["content"][0]["input_audio"]["data"], req)
    unmarked = [Message("system", "s"), Message("user", "Which?")]
    with pytest.raises(ValueError, match="'u2': no message has audio=True"):
        model.generate([AudioRequest("u2", wave, 16000, unmarked)], GenerationConfig())
    assert len(api.requests) == 1


def test_fully_cached_rerun_makes_no_request_and_needs_no_key(fake_api, tmp_path, monkeypatch):
    api = fake_api(lambda i, p, b, h: (200, chat_response([("sad", None)])))
    reqs = [make_request("a"), make_request("b", seconds=0.3)]
    first = CachedModel(load_model("gpt-4o", openai_spec(api.url)), GenerationCache(tmp_path)).generate(
        reqs, GenerationConfig()
    )
    assert len(api.requests) == 2
    monkeypatch.delenv("OPENAI_API_KEY")
    model = CachedModel(load_model("gpt-4o", openai_spec(api.url)), GenerationCache(tmp_path))
    assert model.generate(reqs, GenerationConfig()) == first
    assert len(api.requests) == 2 and model.usage.calls == 0 and model.usage.cache_hits == 2
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):  # a miss does need the key
        model.generate([make_request("c", seconds=0.2)], GenerationConfig())


# -- keys never leak ---------------------------------------------------------------------------
def echo_key(i, path, body, headers):
    """A hostile server that puts the caller's credentials into its error messages."""
    creds = f"{headers.get('authorization')} {headers.get('x-goog-api-key')}"
    if i % 3 == 0:
        return 500, {"error": {"message": f"bad gateway for {creds}", "code": 500, "status": "INTERNAL"}}
    if i % 3 == 1:
        return 400, {"error": {"message": f"invalid request from {creds}", "code": 400, "status": "INVALID_ARGUMENT"}}
    if "generateContent" in path:
        return 200, gemini_response(["happy"])
    return 200, chat_response([("happy", None)])


@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_api_keys_never_written(fake_api, tmp_path, caplog, route):
    api = fake_api(echo_key)
    spec = openai_spec(api.url, concurrency=1) if route == "openai" else gemini_spec(api.url, concurrency=1)
    params = {"models": {"m": spec}, "paths": {"cache_dir": str(tmp_path)}}
    model = CachedModel(load_model("m", spec), GenerationCache(tmp_path / "cache"))
    with caplog.at_level(logging.DEBUG):
        out = model.generate([make_request(f"u{i}", seconds=0.1 + i / 100) for i in range(3)], GenerationConfig())
    key = OPENAI_KEY if route == "openai" else GEMINI_KEY
    # the key was used (the server saw it) ...
    assert all(key in json.dumps(r["headers"]) for r in api.requests)
    # ... and echoed back in errors: the failure reasons, logs, cache, identity and provenance stay clean
    reasons = [c.meta.get("error", "") for cands in out for c in cands]
    assert [bool(r) for r in reasons] == [True, False, True]  # 500 then 400; success; 500 then 400
    assert all("***" in r and key not in r for r in reasons if r)
    assert key not in caplog.text and "***" in caplog.text
    assert key not in json.dumps(model.identity) and key not in json.dumps(provenance(params, model=model.identity))
    cache_bytes = b"".join(p.read_bytes() for p in (tmp_path / "cache").iterdir())
    assert b"happy" in cache_bytes and key.encode() not in cache_bytes
    with pytest.raises(ValueError, match="never write API keys"):
        load_model("m", {**spec, "api_key": key})


def test_missing_key_names_the_variable(fake_api, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    model = load_model("g", gemini_spec("http://127.0.0.1:9"))
    with pytest.raises(ConfigurationError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        model.generate([make_request()], GenerationConfig())


def test_auth_error_stops_without_echoing_the_key(fake_api):
    api = fake_api(lambda i, p, b, h: (401, {"error": {"message": f"bad key {h.get('authorization')}"}}))
    model = load_model("gpt-4o", openai_spec(api.url))
    with pytest.raises(ConfigurationError) as err:
        model.generate([make_request()], GenerationConfig())
    assert "401" in str(err.value) and OPENAI_KEY not in str(err.value)
    assert len(api.requests) == 1


def test_gemini_sends_inline_audio_and_sampling(fake_api):
    def reply(i, path, body, headers):
        n = body["generationConfig"]["candidateCount"]
        return 200, gemini_response(
            [f"sad {k}" for k in range(n)], tokens=[[("sad", -0.5 * (k + 1)), ("!", -0.25)] for k in range(n)]
        )

    api = fake_api(reply)
    model = load_model("gemini-2.0-flash", gemini_spec(api.url))
    req = make_request(extra=[Message("assistant", "sad"), Message("user", "Sure?")])
    [cands] = model.generate(
        [req], GenerationConfig(mode="sample", n=2, temperature=0.9, top_p=0.95, seed=3, max_new_tokens=40)
    )
    [sent] = api.requests
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY
    body = sent["body"]
    assert body["systemInstruction"]["parts"] == [{"text": "You rate emotions."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    audio, text = body["contents"][0]["parts"]
    blob = audio["inlineData"]
    # the SDK writes the blob's fields in proto style (mime_type); the REST API reads both spellings
    assert blob.get("mimeType", blob.get("mime_type")) == "audio/wav" and text == {"text": "Which emotion is this?"}
    assert_is_the_clip(blob["data"], req, urlsafe=True)  # the SDK sends bytes URL-safe base64-encoded
    assert body["contents"][1]["parts"] == [{"text": "sad"}] and body["contents"][2]["parts"] == [{"text": "Sure?"}]
    gc = body["generationConfig"]
    assert (gc["candidateCount"], gc["temperature"], gc["topP"], gc["maxOutputTokens"]) == (2, 0.9, 0.95, 40)
    assert gc["seed"] == request_seed(3, req, 0)
    assert gc["responseLogprobs"] is True and "logprobs" not in gc

    assert [c.text for c in cands] == ["sad 0", "sad 1"]
    assert [c.logprob for c in cands] == [-0.75, -1.25] and [c.n_tokens for c in cands] == [2, 2]
    assert all(c.meta["prompt_tokens"] == 80 and c.meta["finish_reason"] == "STOP" for c in cands)
    assert model.identity["route"] == "gemini"


def test_gemini_without_logprobs(fake_api):
    api = fake_api(lambda i, p, b, h: (200, gemini_response(["happy"])))
    model = load_model("gemini-2.5-pro", gemini_spec(api.url, model_id="gemini-2.5-pro", logprobs=False))
    [[c]] = model.generate([make_request()], GenerationConfig())
    gc = api.requests[0]["body"]["generationConfig"]
    assert "responseLogprobs" not in gc and gc["temperature"] == 0.0 and gc["candidateCount"] == 1
    assert c.text == "happy" and c.logprob is None and c.n_tokens == 3 and c.meta["n_tokens_estimated"]
    with pytest.raises(CapabilityError):
        model.score_options(make_request(), ["happy"])


def test_gemini_scores_options(fake_api):
    api = fake_api(lambda i, p, b, h: (200, gemini_response(["Happy"], tokens=[[("Happy", -0.4)]], top=TOP)))
    model = load_model("g", gemini_spec(api.url, top_logprobs=9))
    options = OPTIONS
    np.testing.assert_allclose(model.score_options(make_request(), options), expected_scores())
    gc = api.requests[0]["body"]["generationConfig"]
    assert (gc["responseLogprobs"], gc["logprobs"], gc["maxOutputTokens"], gc["temperature"]) == (True, 9, 1, 0.0)
    with pytest.raises(CapabilityError, match="prefix"):
        model.score_options(make_request(), options, prefix="Answer:")


def test_gemini_thinking_budget_and_cost(fake_api):
    api = fake_api(
        lambda i, p, b, h: (
            200,
            gemini_response(["angry"], prompt_tokens=1000, audio_tokens=900, thoughts=100, thought_text="Let me think"),
        )
    )
    pricing = {"input_per_mtok": 1.25, "output_per_mtok": 10.0}  # audio billed at the text rate
    model = load_model("g", gemini_spec(api.url, logprobs=False, thinking_budget=128, pricing=pricing))
    [[c]] = model.generate([make_request()], GenerationConfig(max_new_tokens=32))
    gc = api.requests[0]["body"]["generationConfig"]
    # nested messages go out proto-style (thinking_budget); the REST API reads both spellings
    assert gc["thinkingConfig"] in ({"thinkingBudget": 128}, {"thinking_budget": 128})
    assert gc["maxOutputTokens"] == 32 + 128
    assert c.text == "angry"  # the thought part is not the answer
    assert c.n_tokens == 3 and model.usage.gen_tokens == 3  # the answer's tokens; thoughts are billed:
    assert model.usage.cost_usd == pytest.approx((1000 * 1.25 + 103 * 10.0) / 1e6)


def test_gemini_retries_and_records_failure(fake_api):
    def flaky(i, path, body, headers):
        if i == 0:
            return 503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
        return 200, gemini_response(["neutral"], tokens=[[("neutral", -0.2)]])

    api = fake_api(flaky)
    model = load_model("g", gemini_spec(api.url))
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert len(api.requests) == 2 and c.text == "neutral" and c.logprob == -0.2

    api = fake_api(
        lambda i, p, b, h: (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    )
    model = load_model("g", gemini_spec(api.url))
    [[c]] = model.generate([make_request()], GenerationConfig())
    assert len(api.requests) == 3 and "429" in c.meta["error"] and model.usage.failures == 1

    api = fake_api(
        lambda i, p, b, h: (403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}})
    )
    with pytest.raises(ConfigurationError):
        load_model("g", gemini_spec(api.url)).generate([make_request()], GenerationConfig())


# -- pieces --------------------------------------------------------------------------------------
def test_backoff_grows_with_jitter_and_is_capped():
    policy = RetryPolicy(max_attempts=6, base_delay_s=1.0, max_delay_s=5.0)
    rng = random.Random(0)
    for retry, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (5, 5.0)]:
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert cap / 2 <= min(delays) and max(delays) <= cap and np.std(delays) > 0.05 * cap
    assert policy.delay(1, rng, retry_after=3.0) == 3.0  # the server's Retry-After is honoured ...
    assert policy.delay(1, rng, retry_after=60.0) == 60.0  # ... even past max_delay_s (max_total_s bounds it)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy.from_spec({"retry": {"attempts": 3}})


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["happy", "sad", "angry", "neutral"]),
            st.sampled_from(["", " ", "  "]),
            st.booleans(),
            st.floats(-20, 0),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda t: (t[0], t[1], t[2]),
    )
)
def test_option_scores_sum_the_spellings_of_each_option(entries):
    top = [(space + (w.capitalize() if cap else w), lp) for w, space, cap, lp in entries]
    options = ["happy", "sad", "angry", "neutral", "fear", "Happy", "Sad", "Angry", "Neutral"]
    scores = option_logprobs_from_top(top, options)
    for i, o in enumerate(options):
        lps = [lp for w, _s, cap, lp in entries if (w.capitalize() if cap else w) == o]
        expected = logsumexp(lps) if lps else -np.inf
        np.testing.assert_allclose(scores[i], expected, rtol=1e-12)


def test_option_scores_refuse_ambiguous_options():
    with pytest.raises(ValueError, match="distinct"):
        option_logprobs_from_top([("a", -1.0)], ["happy", " happy"])


# -- end to end: `ambiemo infer` machinery with a served model ------------------------------------
def test_inference_over_a_served_model(fake_api, tmp_path):
    """Baseline, W-BoN and label scoring through run_inference against a fake vLLM server; a rerun
    is answered from the cache without a request; GPT-4o (no log-probabilities) refuses W-BoN."""
    import pandas as pd

    from ambiemo.data.labels import AmbiguityBins, LabelSet
    from ambiemo.data.manifest import build_manifest, write_manifest
    from ambiemo.inference.predictions import read_predictions
    from ambiemo.inference.run import run_inference

    labels = ("neutral", "happy", "angry", "sad")
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"u{i}.wav"))
        sf.write(paths[-1], (0.1 * np.random.default_rng(i).standard_normal(8000)).astype("float32"), 16000)
    info = pd.DataFrame(
        {
            "utt_id": ["u0", "u1", "u2"],
            "dataset": "tiny",
            "audio_path": paths,
            "duration_s": 0.5,
            "speaker": ["s0", "s1", "s0"],
        }
    )
    votes = np.array([[3, 0, 0, 0], [1, 2, 0, 0], [0, 0, 2, 1]], dtype=float)
    label_set = LabelSet("four", labels)
    df, ambiguity = build_manifest(info, votes, votes.sum(axis=1).astype(int), label_set, AmbiguityBins())
    manifest = write_manifest(
        df, tmp_path / "manifest.parquet", label_set=label_set, ambiguity=ambiguity, exclusions={}
    )

    def server(i, path, body, headers):
        if body.get("top_logprobs"):  # label scoring
            return 200, chat_response(
                [("happy", [("happy", -0.5)])],
                top=[
                    ("happy", -0.5),
                    ("Happy", -1.5),
                    ("neutral", -1.0),
                    ("sad", -2.5),
                    ("angry", -3.0),
                    ("Neutral", -4.0),
                    ("Sad", -5.0),
                    ("Angry", -6.0),
                ],
            )
        answers = [
            '{"neutral": 0.1, "happy": 0.7, "angry": 0.1, "sad": 0.1}',
            '{"neutral": 0.5, "happy": 0.5, "angry": 0.0, "sad": 0.0}',
        ]
        return 200, chat_response([(answers[k % 2], [("x", -0.5 - k)] * 4) for k in range(body["n"])])

    api = fake_api(server)
    params = {
        "seed": 11,
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "prompts": {"label_order": "canonical"},
        "parsing": {"on_failure": "uniform"},
        "models": {"served": vllm_spec(api.url), "gpt-4o": openai_spec(api.url)},
        "strategies": {"w-bon": {"budgets": [2]}},
    }
    base = run_inference(params, "served", "baseline", manifest, tmp_path / "baseline.parquet")
    assert base["parsed_ok"].all() and (base["pred_label"] == "happy").all()
    run_inference(params, "served", "w-bon", manifest, tmp_path / "wbon.parquet")
    wbon = read_predictions(tmp_path / "wbon.parquet")
    # weights exp(mean log-prob): candidate 0 has -0.5 per token, candidate 1 -1.5
    w = np.exp([-0.5, -1.5]) / np.exp([-0.5, -1.5]).sum()
    np.testing.assert_allclose(
        wbon.distributions()[0], w[0] * np.array([0.1, 0.7, 0.1, 0.1]) + w[1] * np.array([0.5, 0.5, 0, 0]), atol=1e-9
    )
    scored = run_inference(params, "served", "label-scoring", manifest, tmp_path / "ls.parquet")
    p = np.exp([np.logaddexp(-1.0, -4.0), np.logaddexp(-0.5, -1.5), np.logaddexp(-3.0, -6.0), np.logaddexp(-2.5, -5.0)])
    np.testing.assert_allclose(scored[[f"p_{x}" for x in labels]].to_numpy()[0], p / p.sum())

    n_requests = len(api.requests)
    again = run_inference(params, "served", "w-bon", manifest, tmp_path / "wbon2.parquet")
    assert len(api.requests) == n_requests and again.attrs["usage"]["calls"] == 0
    assert (tmp_path / "wbon.parquet").read_bytes() == (tmp_path / "wbon2.parquet").read_bytes()
    with pytest.raises(CapabilityError, match="gpt-4o"):
        run_inference(params, "gpt-4o", "w-bon", manifest, tmp_path / "x.parquet")


def test_label_scoring_is_priced_and_counted(fake_api):
    api = fake_api(
        lambda i, p, b, h: (
            200,
            chat_response([("sad", [("sad", -0.1)])], prompt_tokens=500, audio_tokens=400, top=TOP),
        )
    )
    pricing = {"input_per_mtok": 2.0, "audio_input_per_mtok": 10.0, "output_per_mtok": 8.0}
    model = load_model("v", vllm_spec(api.url, pricing=pricing))
    model.score_options(make_request(), OPTIONS)
    assert model.usage.calls == 1 and model.usage.prompt_tokens == 500
    assert model.usage.cost_usd == pytest.approx((100 * 2.0 + 400 * 10.0 + 1 * 8.0) / 1e6)


def test_seed_belongs_to_the_request_not_to_its_batch(fake_api):
    """A request's seed is the same alone, in a batch, at any position; it differs between
    utterances, between the calls of one request, and when the run's seed changes."""
    api = fake_api(three_choices)
    model = load_model("v", vllm_spec(api.url, concurrency=1, max_candidates_per_call=2))
    a, b = make_request("a"), make_request("b", seconds=0.3)
    config = GenerationConfig(mode="sample", n=3, seed=9)

    def seeds(reqs, cfg=config):
        start = len(api.requests)
        model.generate(reqs, cfg)
        return [r["body"]["seed"] for r in api.requests[start:]]

    alone = seeds([a])
    assert len(alone) == 2 and alone[0] != alone[1]  # two calls (2 + 1 candidates), two seeds
    assert seeds([b, a])[2:] == alone and seeds([a, b])[:2] == alone
    assert not set(seeds([b])) & set(alone)
    assert not set(seeds([a], GenerationConfig(mode="sample", n=3, seed=10))) & set(alone)
