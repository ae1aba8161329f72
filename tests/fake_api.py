"""A fake HTTP API server on 127.0.0.1 for the API-route tests: records every request and answers
with a scripted reply, and can inject the faults a real provider or server shows. Below it, what
those tests send and expect: a request with a known clip, OpenAI and Gemini answers, route specs.
The ``fake_api`` and ``api_env`` fixtures (tests/conftest.py) wrap ``fake_servers`` and ``set_api_env``."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import soundfile as sf

from ambiemo.models.base import AudioRequest, Message

DROP = object()  # reply body: send the headers and part of the body, then close the connection


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 would make concurrent clients wait on TCP retries


class FakeAPI:
    """Records every POST (path, headers, JSON body) and answers with ``reply(i, path, body, headers)``,
    which returns ``(status, body)`` or ``(status, body, headers)``; ``body`` is a JSON-able object,
    raw ``bytes`` (a malformed answer), or ``DROP``. ``GET`` (vLLM's ``/health``) answers 200 while
    ``healthy``. ``kill()`` stops it as a dead process would: in-flight requests lose their
    connection and new ones are refused."""

    def __init__(self, reply):
        self.reply = reply
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.healthy = True
        self.health_checks = 0
        self.killed = False
        self.answered = 0  # requests that got a whole response
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with api.lock:
                    api.health_checks += 1
                self.send_response(200 if api.healthy else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with api.lock:
                    i = len(api.requests)
                    api.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    api.inflight += 1
                    api.max_inflight = max(api.max_inflight, api.inflight)
                try:
                    status, out, *extra = api.reply(i, self.path, body, self.headers)
                finally:
                    with api.lock:
                        api.inflight -= 1
                if api.killed:
                    out = DROP
                headers = extra[0] if extra else {}
                data = b'{"choices": [' if out is DROP else out if isinstance(out, bytes) else json.dumps(out).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data) + (1000 if out is DROP else 0)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    if out is DROP:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    else:
                        with api.lock:
                            api.answered += 1
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def kill(self):
        """Die: stop accepting (connections are refused) and drop what is in flight. Safe from a handler."""
        self.killed = True
        threading.Thread(target=self.close, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def fake_servers():
    """The body of a ``fake_api`` fixture: yields ``start(reply) -> FakeAPI``; closes them after."""
    servers = []

    def start(reply):
        servers.append(FakeAPI(reply))
        return servers[-1]

    yield start
    for s in servers:
        if not s.killed:
            s.close()


def set_api_env(monkeypatch, openai_key, gemini_key):
    """Fake keys in the environment and nothing that would send the SDKs elsewhere than 127.0.0.1."""
    for name in ("OPENAI_BASE_URL", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", openai_key)
    monkeypatch.setenv("GEMINI_API_KEY", gemini_key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


# -- what the API-route tests send and expect -------------------------------------------------
OPENAI_KEY = "sk-test-0123456789abcdefSECRET"
GEMINI_KEY = "AIza-test-9876543210SECRET"
FAST_RETRY = {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05}


def make_request(utt_id="u1", seconds=0.25, extra=()):
    t = np.arange(int(16000 * seconds)) / 16000
    wave = (0.6 * np.sin(2 * np.pi * 220 * t) + np.random.default_rng(0).normal(0, 0.3, t.size)).astype(np.float32)
    wave[:10] = [1.5, -1.5, 1.0, -1.0, 0.5, -0.5, 0, 1e-5, -1e-5, 0.99999]  # clipping and rounding edges
    return AudioRequest(
        utt_id,
        wave,
        16000,
        [Message("system", "You rate emotions."), Message("user", "Which emotion is this?", audio=True), *extra],
    )


def assert_is_the_clip(b64: str, request: AudioRequest, urlsafe: bool = False):
    """Decode what was sent with an independent WAV reader and compare with the waveform."""
    raw = base64.urlsafe_b64decode(b64) if urlsafe else base64.b64decode(b64, validate=True)
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    samples, rate = sf.read(io.BytesIO(raw), dtype="int16")
    info = sf.info(io.BytesIO(raw))
    assert (rate, info.channels, info.subtype) == (request.sample_rate, 1, "PCM_16")
    expected = np.round(np.clip(request.waveform.astype(np.float64), -1, 1) * 32767).astype(np.int16)
    np.testing.assert_array_equal(samples, expected)
    assert samples[:4].tolist() == [32767, -32767, 32767, -32767]


# -- OpenAI / vLLM ---------------------------------------------------------------------------
def chat_response(choices, prompt_tokens=60, audio_tokens=50, completion_tokens=None, top=None):
    """An OpenAI chat.completion; ``choices`` is a list of (text, [(token, logprob), ...] or None)."""
    out = []
    for i, (text, tokens) in enumerate(choices):
        lp = None
        if tokens is not None:
            lp = {
                "content": [
                    {
                        "token": t,
                        "logprob": v,
                        "bytes": None,
                        "top_logprobs": [{"token": a, "logprob": b, "bytes": None} for a, b in (top or [])],
                    }
                    for t, v in tokens
                ]
            }
        out.append(
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": lp}
        )
    if completion_tokens is None:
        completion_tokens = sum(len(t or []) for _, t in choices)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": out,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"audio_tokens": audio_tokens},
        },
    }


def vllm_spec(url, **extra):
    return {
        "adapter": "openai-compatible",
        "model_id": "fixie-ai/ultravox-v0_4",
        "revision": "abc123",
        "base_url": url + "/v1",
        "retry": FAST_RETRY,
        **extra,
    }


def openai_spec(url, **extra):
    return {"adapter": "openai-chat", "model_id": "gpt-audio", "base_url": url + "/v1", "retry": FAST_RETRY, **extra}


# -- Gemini ------------------------------------------------------------------------------------
def gemini_spec(url, **extra):
    return {
        "adapter": "gemini",
        "model_id": "gemini-2.0-flash",
        "base_url": url,
        "api_version": "v1beta",
        "retry": FAST_RETRY,
        "logprobs": True,
        **extra,
    }


def gemini_response(texts, tokens=None, top=None, prompt_tokens=80, audio_tokens=64, thoughts=0, thought_text=None):
    cands = []
    for i, text in enumerate(texts):
        parts = ([{"text": thought_text, "thought": True}] if thought_text else []) + [{"text": text}]
        cand = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": i}
        if tokens is not None:
            cand["logprobsResult"] = {
                "chosenCandidates": [{"token": t, "logProbability": v} for t, v in tokens[i]],
                "topCandidates": [{"candidates": [{"token": a, "logProbability": b} for a, b in (top or [])]}],
            }
        cands.append(cand)
    out_tokens = sum(len(t) for t in tokens) if tokens else 3 * len(texts)
    return {
        "candidates": cands,
        "modelVersion": "gemini-2.0-flash",
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": out_tokens,
            "thoughtsTokenCount": thoughts,
            "promptTokensDetails": [
                {"modality": "AUDIO", "tokenCount": audio_tokens},
                {"modality": "TEXT", "tokenCount": prompt_tokens - audio_tokens},
            ],
        },
    }
