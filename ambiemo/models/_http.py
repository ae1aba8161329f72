"""Plumbing shared by the API routes (``openai_api``, ``gemini_api``): retries, failures,
concurrency, audio encoding, prices, keys, and label scoring from top log-probabilities.

Retries. A request is retried on HTTP 408, 429 and 5xx, on timeouts and on dropped
connections, with exponential backoff and jitter: before retry ``k`` (1, 2, ...) the wait
is drawn uniformly from ``[d/2, d]`` with ``d = min(max_delay_s, base_delay_s * 2**(k-1))``,
or the server's ``Retry-After`` if that is longer (still capped at ``max_delay_s``), at most
``max_attempts`` attempts in all. The providers' SDKs get ``max_retries=0`` so that this is
the only retry loop.

Failures. A request that still fails, or fails with a client error that a retry cannot fix
(400, 413, 422: an utterance the provider refuses), does not stop the run. It becomes

* for ``generate``: ``n`` candidates ``Candidate(text="", logprob=None, token_logprobs=None,
  n_tokens=0, meta={"error": reason, "attempts": k, "prompt_tokens": 0, "wall_s": ...})``.
  The ``"error"`` key is what callers test: ``ambiemo.strategies`` records the utterance as a
  model failure (not a parse failure), and ``ambiemo.cache`` does not store it, so the next
  run tries it again. Code that ignores ``meta`` sees an empty answer, which does not parse.
* for ``score_options``: an array of NaN (never cached either; label scoring treats a
  non-finite score as a model failure of that utterance).

and ``usage.failures`` counts it. Errors that would fail every request the same way
(401, 403, 404: a wrong key, no access, an unknown model id) raise ``ConfigurationError``
at once instead.

Keys. API keys come from environment variables only (``api_key_env`` in the model's
params entry names them); a params entry holding a key is refused. Failure reasons and log
lines pass through ``scrub`` so that a provider echoing the key back never writes it anywhere.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import threading
import time
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    Capabilities,
    CapabilityError,
    GenerationConfig,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Status codes worth retrying: request timeout, rate limit, server errors.
RETRY_STATUS = {408, 429}
# Status codes that mean the configuration is wrong: every request would fail alike.
FATAL_STATUS = {401, 403, 404}


class ConfigurationError(RuntimeError):
    """An API error that no retry and no other utterance can fix (key, access, model id)."""


class RequestFailed(RuntimeError):
    """A request that failed for good; ``reason`` is safe to record (keys scrubbed)."""

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # including the first
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RetryPolicy:
        retry = dict(spec.get("retry") or {})
        unknown = set(retry) - {"max_attempts", "base_delay_s", "max_delay_s"}
        if unknown:
            raise ValueError(f"unknown retry settings {sorted(unknown)}; use max_attempts, base_delay_s, max_delay_s")
        policy = cls(**retry)
        if policy.max_attempts < 1:
            raise ValueError(f"retry.max_attempts must be >= 1, got {policy.max_attempts}")
        return policy

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        d = rng.uniform(cap / 2, cap)
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_delay_s))
        return d


def scrub(text: str, secrets: Sequence[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of an SDK exception: openai's ``status_code``, google-genai's ``code``,
    httpx's ``response.status_code``."""
    for attr in ("status_code", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int):
            return v
    response = getattr(exc, "response", None)
    v = getattr(response, "status_code", None)
    return v if isinstance(v, int) else None


def is_transport_error(exc: BaseException) -> bool:
    """Timeouts and dropped connections, recognised by class name so that openai's wrappers,
    httpx, httpx2 and the standard library are all covered without importing them."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return any(
        k in n
        for n in names
        for k in (
            "Timeout",
            "ConnectError",
            "ConnectionError",
            "TransportError",
            "RemoteProtocolError",
            "ReadError",
            "NetworkError",
        )
    )


def retry_after_s(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def describe(exc: BaseException) -> str:
    code = status_code(exc)
    text = " ".join(str(exc).split())[:300]
    return f"HTTP {code}: {text}" if code is not None else f"{type(exc).__name__}: {text}"


def call_with_retries(
    fn: Callable[[], R],
    policy: RetryPolicy,
    *,
    what: str,
    secrets: Sequence[str | None] = (),
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> tuple[R, int]:
    """Run ``fn`` until it succeeds; returns ``(result, attempts)``.

    Raises ``RequestFailed`` when it keeps failing or fails with a request error, and
    ``ConfigurationError`` on 401/403/404. ``what`` names the request in messages.
    """
    rng = rng or random.Random()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return fn(), attempt
        except Exception as exc:  # classified below; anything that is not an API error re-raises
            code = status_code(exc)
            reason = scrub(describe(exc), secrets)
            if code in FATAL_STATUS:
                raise ConfigurationError(
                    f"{what}: {reason}. Check the API key's environment variable, access to "
                    "the model, and the model_id in params.yaml"
                ) from None
            retryable = (
                code in RETRY_STATUS or (code is not None and code >= 500) or (code is None and is_transport_error(exc))
            )
            if code is None and not retryable:
                raise  # not an API error at all: a bug, surface it
            if not retryable:
                raise RequestFailed(reason, attempt) from None
            if attempt == policy.max_attempts:
                raise RequestFailed(f"{reason} (gave up after {attempt} attempts)", attempt) from None
            delay = policy.delay(attempt, rng, retry_after_s(exc))
            log.warning("%s: %s; retry %d of %d in %.1f s", what, reason, attempt, policy.max_attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def failed_candidates(n: int, reason: str, attempts: int, wall_s: float) -> list[Candidate]:
    return [
        Candidate(
            text="",
            logprob=None,
            token_logprobs=None,
            n_tokens=0,
            meta={"error": reason, "attempts": attempts, "prompt_tokens": 0, "wall_s": wall_s / n},
        )
        for _ in range(n)
    ]


def run_concurrently(fn: Callable[[T], R], items: Sequence[T], max_workers: int) -> list[R]:
    """``[fn(x) for x in items]`` with at most ``max_workers`` in flight; order kept."""
    if max_workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        return list(pool.map(fn, items))


def wav_bytes(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV, the format every provider accepts. Samples are clipped to [-1, 1]."""
    x = np.clip(np.asarray(waveform, dtype=np.float64), -1.0, 1.0)
    pcm = np.round(x * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def cost_usd(pricing: dict[str, float] | None, *, text_in: int, audio_in: int, out: int) -> float:
    """Cost from ``pricing`` (USD per million tokens: ``input_per_mtok``, ``audio_input_per_mtok``
    (defaults to the text rate), ``output_per_mtok``). No pricing: 0."""
    if not pricing:
        return 0.0
    unknown = set(pricing) - {"input_per_mtok", "audio_input_per_mtok", "output_per_mtok"}
    if unknown:
        raise ValueError(
            f"unknown pricing fields {sorted(unknown)}; use input_per_mtok, audio_input_per_mtok, "
            "output_per_mtok (USD per million tokens)"
        )
    p_in = float(pricing.get("input_per_mtok", 0.0))
    p_audio = float(pricing.get("audio_input_per_mtok", p_in))
    p_out = float(pricing.get("output_per_mtok", 0.0))
    return (text_in * p_in + audio_in * p_audio + out * p_out) / 1e6


def api_key_names(spec: dict[str, Any], default: Sequence[str]) -> list[str]:
    """The environment variables that may hold the key; refuses a key written into params."""
    for field in ("api_key", "key", "token"):
        if field in spec:
            raise ValueError(
                f"params.yaml model entry has {field!r}: never write API keys into files. Remove it "
                "and export the key in an environment variable named by 'api_key_env' "
                f"(default {default[0] if default else 'none'})"
            )
    names = spec.get("api_key_env", list(default))
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def api_key_from_env(names: Sequence[str], model_key: str) -> str:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise ConfigurationError(
        f"model {model_key!r} needs an API key in the environment variable "
        f"{' or '.join(names)}; export it (keys are never read from files)"
    )


# -- label scoring from the first answer token's top log-probabilities -----------------------
_STRIP = " \t\n\"'`*_.,:;{}[]()<>"


def option_logprobs_from_top(top: Sequence[tuple[str, float]], options: Sequence[str]) -> np.ndarray:
    """``log p(option)`` from the top alternatives of the first answer token.

    A top token counts for an option when, stripped of spaces, quotes and brackets, it is the
    option itself or a start of it at least three characters long that starts no other option
    ("disg" for "disgust"); its spellings with and without a leading space (" happy", "happy")
    are summed. Matching is case-sensitive, as for the local models, whose ``score_options``
    scores each option string exactly: pass "happy" and "Happy" to count both. This reads the
    answer off its first token, which is exact when the options' first tokens differ, as label
    words do. Options that no top token matches get ``-inf``: their probability is below the
    last listed alternative's, and the API does not say by how much.
    """
    stripped = [o.strip(_STRIP) for o in options]
    if len(set(stripped)) != len(stripped) or any(not o for o in stripped):
        raise ValueError(f"options must be distinct non-empty words, got {list(options)}")
    out = np.full(len(options), -np.inf)
    seen: set[str] = set()
    for token, lp in top:
        if token in seen:  # the same token listed twice would be counted twice
            continue
        seen.add(token)
        t = token.strip(_STRIP)
        if not t:
            continue
        matches = [i for i, o in enumerate(stripped) if o == t]
        if not matches and len(t) >= 3:
            matches = [i for i, o in enumerate(stripped) if o.startswith(t)]
        if len(matches) == 1:
            i = matches[0]
            out[i] = np.logaddexp(out[i], lp) if math.isfinite(out[i]) else lp
    return out


# -- the part of an API adapter that does not depend on the provider ---------------------------
@dataclass
class CallUsage:
    """What one API call reported: prompt tokens (of which audio) and generated tokens."""

    prompt_tokens: int = 0
    audio_tokens: int = 0
    gen_tokens: int = 0


class ApiModel(AudioLanguageModel):
    """Base of the API routes: from_spec parsing, candidates split into calls, bounded
    concurrency, retries, failures, usage and cost. A route implements ``_make_client``,
    ``_generate_once`` (one API call for ``n`` candidates) and ``_first_token_top``.

    Spec fields shared by the routes (``params.yaml`` ``models.<key>``), with defaults:
    ``model_id`` (required), ``revision`` (null), ``base_url`` (null: the SDK's, or its
    environment variable), ``api_key_env`` (route default), ``logprobs`` (route default),
    ``top_logprobs: 20``, ``max_candidates_per_call: 8`` (more candidates take several calls,
    call ``c`` with seed ``seed + c``), ``concurrency: 4`` (calls in flight), ``timeout_s: 120``,
    ``retry: {max_attempts: 5, base_delay_s: 1.0, max_delay_s: 30.0}``, ``pricing`` (USD per
    million tokens, see ``cost_usd``).
    """

    # What the route can do before a params entry says more (``spec_capabilities`` per entry).
    capabilities = Capabilities(logprobs=False, beam_search=False, option_scoring=False, needs="API key, extra: api")
    default_key_env: tuple[str, ...] = ()
    default_logprobs: bool = False
    assistant_prefill: bool = False  # can continue an assistant turn (label scoring with a prefix)

    def __init__(self, key: str, spec: dict[str, Any], route: str) -> None:
        if not spec.get("model_id"):
            raise ValueError(f"params.yaml models.{key} needs a model_id (the provider's model name)")
        super().__init__(key, str(spec["model_id"]), spec.get("revision"))
        self.route = route
        self.key_names = api_key_names(spec, self.default_key_env)
        self.capabilities = self.spec_capabilities(spec)  # per entry: logprobs depend on the model
        self.base_url: str | None = spec.get("base_url")
        self.policy = RetryPolicy.from_spec(spec)
        self.top_logprobs = int(spec.get("top_logprobs", 20))
        self.max_per_call = int(spec.get("max_candidates_per_call", 8))
        self.concurrency = int(spec.get("concurrency", 4))
        self.timeout_s = float(spec.get("timeout_s", 120))
        self.pricing = spec.get("pricing")
        cost_usd(self.pricing, text_in=0, audio_in=0, out=0)  # validate the fields now, not mid-run
        self._client: Any = None
        self._secret: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> ApiModel:
        # kwargs (device, dtype, ...) concern local models; an API route has nothing to place.
        return cls(key, spec, route=spec.get("adapter", cls.__name__))

    @classmethod
    def spec_capabilities(cls, spec: dict[str, Any]) -> Capabilities:
        """What this params entry can do (``ambiemo models list`` shows it)."""
        logprobs = bool(spec.get("logprobs", cls.default_logprobs))
        names = spec.get("api_key_env", list(cls.default_key_env))
        names = [names] if isinstance(names, str) else list(names or [])
        needs = ", ".join(filter(None, [" or ".join(names), "extra: api"]))
        return Capabilities(logprobs=logprobs, beam_search=False, option_scoring=logprobs, needs=needs)

    @property
    def identity(self) -> dict[str, Any]:
        # The route name, not the class: one class serves OpenAI and vLLM servers.
        return {"key": self.key, "model_id": self.model_id, "revision": self.revision, "route": self.route}

    # -- provider-specific ---------------------------------------------------------------
    def _make_client(self) -> Any:
        raise NotImplementedError

    def _generate_once(
        self, request: AudioRequest, config: GenerationConfig, n: int, seed: int
    ) -> tuple[list[Candidate], CallUsage]:
        raise NotImplementedError

    def _first_token_top(self, request: AudioRequest, prefix: str) -> tuple[list[tuple[str, float]], CallUsage]:
        raise NotImplementedError

    def _check_config(self, config: GenerationConfig) -> None:
        if config.mode == "beam" and not self.capabilities.beam_search:
            raise CapabilityError(
                f"model {self.key!r} ({self.route}) has no beam search; use mode='sample' or a strategy that samples"
            )

    # -- shared ----------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """Built on the first real call: a fully cached rerun needs neither the SDK nor a key."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _what(self, request: AudioRequest) -> str:
        return f"model {self.key!r} utterance {request.utt_id!r}"

    def _account(self, u: CallUsage) -> None:
        with self._lock:
            self.usage.calls += 1
            self.usage.prompt_tokens += u.prompt_tokens
            self.usage.gen_tokens += u.gen_tokens
            self.usage.cost_usd += cost_usd(
                self.pricing, text_in=u.prompt_tokens - u.audio_tokens, audio_in=u.audio_tokens, out=u.gen_tokens
            )

    def _fail(self, what: str, reason: str) -> None:
        with self._lock:
            self.usage.failures += 1
        log.warning("%s failed: %s", what, reason)

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        self._check_config(config)
        _ = self.client  # fail fast (missing key, missing SDK) before any thread starts
        jobs = []  # (request index, candidates in this call, seed)
        for j in range(len(requests)):
            for c, start in enumerate(range(0, config.n, self.max_per_call)):
                jobs.append((j, min(self.max_per_call, config.n - start), config.seed + c))

        def run(job: tuple[int, int, int]) -> list[Candidate]:
            j, n, seed = job
            request = requests[j]
            t0 = time.perf_counter()
            try:
                (cands, u), _attempts = call_with_retries(
                    lambda: self._generate_once(request, config, n, seed),
                    self.policy,
                    what=self._what(request),
                    secrets=[self._secret],
                )
            except RequestFailed as e:
                self._fail(self._what(request), e.reason)
                return failed_candidates(n, e.reason, e.attempts, time.perf_counter() - t0)
            wall = time.perf_counter() - t0
            self._account(u)
            for c in cands:
                c.meta.update(prompt_tokens=u.prompt_tokens, wall_s=wall / len(cands))
            return cands

        done = run_concurrently(run, jobs, self.concurrency)
        out: list[list[Candidate]] = [[] for _ in requests]
        for (j, _n, _seed), cands in zip(jobs, done, strict=True):
            out[j].extend(cands)
        return out

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        if not self.capabilities.option_scoring:
            raise CapabilityError(
                f"model {self.key!r} ({self.route}, {self.model_id}) returns no log-probabilities, "
                "so it cannot score label options; set logprobs: true in its params entry only "
                "if the provider serves them for this model"
            )
        if prefix and not self.assistant_prefill:
            raise CapabilityError(
                f"model {self.key!r} ({self.route}) cannot continue an assistant prefix, so it "
                f"cannot score options after {prefix!r}; ask for the bare label word (prefix='') "
                "or serve the model with vLLM (route openai-compatible)"
            )
        _ = self.client
        try:
            (top, u), _attempts = call_with_retries(
                lambda: self._first_token_top(request, prefix),
                self.policy,
                what=self._what(request),
                secrets=[self._secret],
            )
        except RequestFailed as e:
            self._fail(self._what(request), e.reason)
            return np.full(len(options), np.nan)
        self._account(u)
        return option_logprobs_from_top(top, options)


def audio_turns(request: AudioRequest) -> int:
    """How many turns carry the clip; an API request without one would silently lose the audio."""
    n = sum(m.audio for m in request.messages)
    if n == 0:
        raise ValueError(
            f"utterance {request.utt_id!r}: no message has audio=True, so the model would not hear "
            "the clip; mark the user turn that carries it"
        )
    for m in request.messages:
        if m.audio and m.role != "user":
            raise ValueError(f"utterance {request.utt_id!r}: only user turns can carry audio, got {m.role!r}")
    return n
