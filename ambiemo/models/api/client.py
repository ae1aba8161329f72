"""The base of the API routes (``openai_api``, ``gemini_api``): ``ApiModel``, with the faults of
a remote call classified and retried, keys, prices, audio encoding, and label scoring from top
log-probabilities.

Faults. Every call goes through ``call_with_retries`` (tenacity). What each fault becomes:

=============================================  ==========================================
HTTP 408, 429 (``Retry-After`` honoured), 5xx   retried
timeout, refused or dropped connection          retried (on another endpoint of a pool first)
a body that is not the JSON the SDK expects     retried (a proxy's error page, a cut stream)
400, 413, 422 (content policy, audio too long)  not retried: recorded with the server's reason
401, 403, 404 (key, access, model id)           ``ConfigurationError``: the run stops at once
=============================================  ==========================================

Before retry ``k`` (1, 2, ...) the wait is drawn uniformly from ``[d/2, d]`` with
``d = min(max_delay_s, base_delay_s * 2**(k-1))`` (jitter: concurrent requests that failed
together do not come back together), or is the server's ``Retry-After`` where it sends one. A
request gives up after ``max_attempts`` attempts, or earlier when the next wait would take it past
``max_total_s`` since its first attempt. The SDKs' own retries are off, so this is the only loop.

A request that fails for good does not stop the run: ``generate`` returns its candidates with
``meta["error"]`` (the reason, keys scrubbed) and empty text, ``score_options`` an array of NaN;
the base class counts each as a failure, strategies record the utterance as a model failure, and
the cache does not store it, so the next run asks again.

Keys come from environment variables only (``api_key_env``); a params entry holding a key is
refused. Every reason and log line passes through ``scrub``, so a server that echoes the key back
never gets it written anywhere.

Seeds. Call ``c`` of a request (a request wanting more candidates than ``max_candidates_per_call``
takes several calls) is sent with ``request_seed(config.seed, request, c)``, a hash of the
request's content: a sampled answer does not depend on the batch the request came in, on its
position there, or on which endpoint of a pool served it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import logging
import math
import os
import random
import threading
import time
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import tenacity

from ambiemo.core.secrets import scrub
from ambiemo.models.api.pool import EndpointPool
from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    Capabilities,
    CapabilityError,
    GenerationConfig,
    OptionScores,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

RETRY_STATUS = {408, 429}  # request timeout, rate limit; and every 5xx
FATAL_STATUS = {401, 403, 404}  # every request would fail alike: wrong key, no access, unknown model


class ConfigurationError(RuntimeError):
    """An API error that no retry and no other utterance can fix (key, access, model id)."""


class RequestFailed(RuntimeError):
    """A request that failed for good; ``reason`` is safe to record (keys scrubbed)."""

    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class MalformedResponse(ValueError):
    """The server answered 200 with a body the route cannot read."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # including the first
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_total_s: float = 300.0  # from the first attempt to the last one's start, waits included
    endpoint_cooldown_s: float = 30.0  # a pool endpoint that is out is checked again after this

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RetryPolicy:
        retry = dict(spec.get("retry") or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(retry) - known
        if unknown:
            raise ValueError(f"unknown retry settings {sorted(unknown)}; use {', '.join(sorted(known))}")
        policy = cls(**retry)
        if policy.max_attempts < 1:
            raise ValueError(f"retry.max_attempts must be >= 1, got {policy.max_attempts}")
        if min(policy.base_delay_s, policy.max_delay_s, policy.max_total_s, policy.endpoint_cooldown_s) < 0:
            raise ValueError(f"retry delays must be >= 0, got {retry}")
        return policy

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return max(0.0, retry_after)
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return rng.uniform(cap / 2, cap)


# -- classifying what went wrong ------------------------------------------------------------------
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


_TRANSPORT_NAMES = (
    "Timeout",
    "ConnectError",
    "ConnectionError",
    "TransportError",
    "RemoteProtocolError",
    "ReadError",
    "WriteError",
    "NetworkError",
    "ProtocolError",
)


def is_transport_error(exc: BaseException) -> bool:
    """Timeouts and refused or dropped connections, recognised by class name so that openai's
    wrappers, httpx and the standard library are all covered without importing them."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return any(k in n for n in names for k in _TRANSPORT_NAMES)


def is_malformed(exc: BaseException) -> bool:
    """A 200 whose body does not parse: JSON errors, the SDKs' validation errors."""
    if isinstance(exc, (json.JSONDecodeError, MalformedResponse)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return "APIResponseValidationError" in names or "ValidationError" in names


def is_retryable(exc: BaseException) -> bool:
    code = status_code(exc)
    if code is not None:
        return code in RETRY_STATUS or code >= 500
    return is_transport_error(exc) or is_malformed(exc)


def is_endpoint_down(exc: BaseException) -> bool:
    """A fault of the endpoint rather than of the request: another endpoint should take it."""
    return status_code(exc) is None and is_transport_error(exc)


def retry_after_s(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """The server's ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``, in seconds."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            return email.utils.parsedate_to_datetime(value).timestamp() - now()
    except (TypeError, ValueError, AttributeError):
        return None


def describe(exc: BaseException) -> str:
    code = status_code(exc)
    text = " ".join(str(exc).split())[:300]
    if code is not None:
        return f"HTTP {code}: {text}"
    if is_malformed(exc):
        return f"malformed response ({type(exc).__name__}): {text}"
    return f"{type(exc).__name__}: {text}"


class _StopAtTotal(tenacity.stop.stop_base):
    """Stop when the coming wait would end past ``max_total_s`` since the first attempt."""

    def __init__(self, max_total_s: float, clock: Callable[[], float], start: float) -> None:
        self.max_total_s, self.clock, self.start = max_total_s, clock, start

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() - self.start + retry_state.upcoming_sleep > self.max_total_s


class _Backoff(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self.policy, self.rng = policy, rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return self.policy.delay(retry_state.attempt_number, self.rng, retry_after_s(exc) if exc else None)


def call_with_retries(
    fn: Callable[[], R],
    policy: RetryPolicy,
    *,
    what: str,
    fatal_hint: str = "",
    secrets: Sequence[str | None] = (),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> tuple[R, int]:
    """Run ``fn`` until it succeeds; returns ``(result, attempts)``.

    Raises ``RequestFailed`` when it keeps failing or fails with a request error, and
    ``ConfigurationError`` on 401/403/404 (``fatal_hint`` says what to check). ``what`` names the
    request in messages. Anything that is not an API fault (a bug) is raised as it is.
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        reason = scrub(describe(state.outcome.exception()), secrets)
        log.warning(
            "%s: %s; retry %d of %d in %.1f s",
            what,
            reason,
            state.attempt_number,
            policy.max_attempts - 1,
            state.upcoming_sleep,
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_retryable),
        stop=tenacity.stop_after_attempt(policy.max_attempts) | _StopAtTotal(policy.max_total_s, clock, clock()),
        wait=_Backoff(policy, rng or random.Random()),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0

    def counted() -> R:
        nonlocal attempts
        attempts += 1
        return fn()

    try:
        return retrying(counted), attempts
    except Exception as exc:
        code = status_code(exc)
        reason = scrub(describe(exc), secrets)
        if code in FATAL_STATUS:
            raise ConfigurationError(f"{what}: {reason}. {fatal_hint}".strip()) from None
        if code is None and not (is_transport_error(exc) or is_malformed(exc)):
            raise  # not an API fault: a bug, surface it
        if is_retryable(exc):
            reason = f"{reason} (gave up after {attempts} attempts)"
        raise RequestFailed(reason, attempts) from None


def run_concurrently(fn: Callable[[T], R], items: Sequence[T], max_workers: int) -> list[R]:
    """``[fn(x) for x in items]`` with at most ``max_workers`` in flight, order kept. The first
    exception stops the rest: items not started are not started, and it is raised."""
    if max_workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    stop = threading.Event()

    def guarded(x: T) -> R | None:
        if stop.is_set():  # set by the worker that failed, before it could take the next item
            return None
        try:
            return fn(x)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        futures = [pool.submit(guarded, x) for x in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            raise failed.exception()  # type: ignore[misc]
        return [f.result() for f in futures]  # type: ignore[misc]  (no None: nothing failed)


def request_seed(seed: int, request: AudioRequest, call: int) -> int:
    """The seed of call ``call`` for ``request``: a hash of the run's seed, the clip and the
    conversation, so that it does not depend on the batch or the endpoint (31 bits: every
    provider accepts it)."""
    h = hashlib.sha256()
    h.update(f"{seed}|{call}|{request.audio_sha1()}|".encode())
    h.update(json.dumps(request.conversation(), sort_keys=True).encode())
    return int.from_bytes(h.digest()[:4], "big") & 0x7FFFFFFF


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


def request_wav(request: AudioRequest, *, as_base64: bool = False) -> bytes | str:
    """The request's clip as ``wav_bytes`` (or their base64 text), encoded once per clip and kept in
    ``ambiemo.data.audio.FEATURE_MEMO``: every candidate, retry, verifier turn and strategy that sends the
    same clip reuses it, so the client's CPU per request is the SDK's, not the encoder's."""
    from ambiemo.data.audio import FEATURE_MEMO

    def encode() -> bytes | str:
        wav = wav_bytes(request.waveform, request.sample_rate)
        return base64.b64encode(wav).decode("ascii") if as_base64 else wav

    return FEATURE_MEMO.get(request.audio_sha1(), "wav-pcm16-base64" if as_base64 else "wav-pcm16", encode)


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
    """What one API call reported: prompt tokens (of which audio), answer tokens and, for thinking
    models, thought tokens (billed as output, not part of any candidate)."""

    prompt_tokens: int = 0
    audio_tokens: int = 0
    gen_tokens: int = 0
    thought_tokens: int = 0


class ApiModel(AudioLanguageModel):
    """Base of the API routes: from_spec parsing, candidates split into calls, the endpoint pool,
    bounded concurrency, retries, failures and cost. A route implements ``_make_client(url)``,
    ``_generate_once(client, request, config, n, seed)`` (one API call for ``n`` candidates) and
    ``_first_token_top(client, request, prefix)``.

    Spec fields shared by the routes (``params.yaml`` ``models.<key>``), with defaults:
    ``model_id`` (required), ``revision`` (null), ``base_url`` (null: the SDK's, or its
    environment variable; a list: a pool of servers, route ``openai-compatible``), ``api_key_env``
    (route default), ``logprobs`` (route default), ``top_logprobs: 20``,
    ``max_candidates_per_call: 8`` (more candidates take several calls), ``concurrency: 4`` (calls
    in flight per endpoint), ``timeout_s: 120``, ``retry`` (see ``RetryPolicy``), ``pricing`` (USD
    per million tokens, see ``cost_usd``).
    """

    version: ClassVar[int] = 2  # 2: per-request seeds (request_seed)
    capabilities = Capabilities(logprobs=False, beam_search=False, option_scoring=False, needs="API key, extra: api")
    default_key_env: tuple[str, ...] = ()
    default_logprobs: bool = False
    assistant_prefill: bool = False  # can continue an assistant turn (label scoring with a prefix)
    pool_allowed: bool = False  # base_url may list several endpoints

    def __init__(self, key: str, spec: dict[str, Any], route: str) -> None:
        if not spec.get("model_id"):
            raise ValueError(f"params.yaml models.{key} needs a model_id (the provider's model name)")
        caps = self.spec_capabilities({**spec, "adapter": route})  # per entry: logprobs depend on the model
        # The defaults of the output-affecting fields enter the identity as if written out.
        self.setting_defaults = {"logprobs": caps.logprobs, "top_logprobs": 20, "max_candidates_per_call": 8}
        super().__init__(key, str(spec["model_id"]), spec.get("revision"), route=route, settings=spec)
        self.capabilities = caps
        self.key_names = api_key_names(spec, self.default_key_env)
        urls = spec.get("base_url")
        self.base_urls: list[str | None] = list(urls) if isinstance(urls, (list, tuple)) else [urls]
        if len(self.base_urls) > 1 and not self.pool_allowed:
            raise ValueError(f"params.yaml models.{key}: base_url lists several endpoints, which {route} cannot pool")
        self.policy = RetryPolicy.from_spec(spec)
        self.top_logprobs = int(spec.get("top_logprobs", 20))
        self.max_per_call = int(spec.get("max_candidates_per_call", 8))
        self.concurrency = int(spec.get("concurrency", 4))
        self.timeout_s = float(spec.get("timeout_s", 120))
        self.pricing = spec.get("pricing")
        cost_usd(self.pricing, text_in=0, audio_in=0, out=0)  # validate the fields now, not mid-run
        self._pool: EndpointPool | None = None
        self._secret: str | None = None
        self._lock = threading.Lock()
        # Injectable for tests: how retries wait and measure their total time.
        self.sleep: Callable[[float], None] = time.sleep
        self.clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> ApiModel:
        # kwargs (device, dtype, cache_dir, ...) concern local models; an API route has nothing to place.
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
    def preferred_batch(self) -> int:
        """Requests per ``generate`` call that keep every slot of the pool busy: a caller handing
        fewer leaves concurrency unused (``concurrency`` per endpoint times the endpoints)."""
        return self.concurrency * len(self.base_urls)

    # -- provider-specific ---------------------------------------------------------------
    def _make_client(self, base_url: str | None) -> Any:
        raise NotImplementedError

    def _health(self, base_url: str) -> bool:
        raise NotImplementedError

    has_health_check: bool = False

    def _generate_once(
        self, client: Any, request: AudioRequest, config: GenerationConfig, n: int, seed: int
    ) -> tuple[list[Candidate], CallUsage]:
        raise NotImplementedError

    def _first_token_top(
        self, client: Any, request: AudioRequest, prefix: str
    ) -> tuple[list[tuple[str, float]], CallUsage]:
        raise NotImplementedError

    def _key(self) -> str | None:
        """The API key from the environment (raises ``ConfigurationError`` where one is required)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    @property
    def pool(self) -> EndpointPool:
        """Built on the first real call: a fully cached rerun needs neither the SDK nor a key."""
        with self._lock:
            if self._pool is None:
                self._secret = self._key()
                self._pool = EndpointPool(
                    self.base_urls,
                    self._make_client,
                    concurrency=self.concurrency,
                    is_down=is_endpoint_down,
                    health=self._health if self.has_health_check else None,
                    cooldown_s=self.policy.endpoint_cooldown_s,
                    clock=self.clock,
                    redact=lambda s: scrub(s, [self._secret]),
                )
            return self._pool

    def _what(self, request: AudioRequest) -> str:
        return f"model {self.key!r} utterance {request.utt_id!r}"

    def _call(self, request: AudioRequest, fn: Callable[[Any], R]) -> tuple[R, int]:
        names = " or ".join(self.key_names) or "the API key's environment variable"
        return call_with_retries(
            lambda: self.pool.call(fn),
            self.policy,
            what=self._what(request),
            fatal_hint=f"Check {names}, access to the model, and models.{self.key}.model_id in params.yaml",
            secrets=[self._secret],
            sleep=self.sleep,
            clock=self.clock,
        )

    def _cost(self, u: CallUsage) -> float:
        return cost_usd(
            self.pricing,
            text_in=u.prompt_tokens - u.audio_tokens,
            audio_in=u.audio_tokens,
            out=u.gen_tokens + u.thought_tokens,
        )

    def _generate(self, requests: list[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        pool = self.pool  # fail fast (missing key, missing SDK) before any thread starts
        jobs = []  # (request index, call index, candidates in this call)
        for j in range(len(requests)):
            for c, start in enumerate(range(0, config.n, self.max_per_call)):
                jobs.append((j, c, min(self.max_per_call, config.n - start)))

        def run(job: tuple[int, int, int]) -> list[Candidate]:
            j, c, n = job
            request = requests[j]
            seed = request_seed(config.seed, request, c)
            t0 = time.perf_counter()
            try:
                (cands, u), _ = self._call(
                    request, lambda client: self._generate_once(client, request, config, n, seed)
                )
            except RequestFailed as e:
                log.warning("%s failed: %s", self._what(request), e.reason)
                return failed_candidates(n, e.reason, e.attempts, time.perf_counter() - t0, call=c)
            wall = time.perf_counter() - t0
            cost = self._cost(u)
            for c_ in cands:
                c_.meta.update(call=c, prompt_tokens=u.prompt_tokens, wall_s=wall / n, cost_usd=cost / n)
            return cands

        done = run_concurrently(run, jobs, pool.slots)
        out: list[list[Candidate]] = [[] for _ in requests]
        for (j, _c, _n), cands in zip(jobs, done, strict=True):
            out[j].extend(cands)
        return out

    def _score_options_many(self, requests: list[AudioRequest], options: list[str], prefix: str) -> list[OptionScores]:
        """The requests concurrently, at most the pool's slots in flight (a verifier's B ratings)."""
        _ = self.pool  # fail fast before any thread starts
        return run_concurrently(lambda r: self._score_options(r, options, prefix), requests, self.pool.slots)

    def _score_options(self, request: AudioRequest, options: list[str], prefix: str) -> OptionScores:
        if prefix and not self.assistant_prefill:
            raise CapabilityError(
                f"model {self.key!r} ({self.route}) cannot continue an assistant prefix, so it "
                f"cannot score options after {prefix!r}; ask for the bare label word (prefix='') "
                "or serve the model with vLLM (route openai-compatible)"
            )
        option_logprobs_from_top([], options)  # refuse ambiguous options before paying for a call
        _ = self.pool
        t0 = time.perf_counter()
        try:
            (top, u), _ = self._call(request, lambda client: self._first_token_top(client, request, prefix))
        except RequestFailed as e:
            log.warning("%s failed: %s", self._what(request), e.reason)
            return OptionScores(np.full(len(options), np.nan), None, time.perf_counter() - t0)
        wall = time.perf_counter() - t0
        return OptionScores(option_logprobs_from_top(top, options), u.prompt_tokens, wall, cost_usd=self._cost(u))


def failed_candidates(n: int, reason: str, attempts: int, wall_s: float, call: int = 0) -> list[Candidate]:
    return [
        Candidate(
            text="",
            logprob=None,
            token_logprobs=None,
            n_tokens=0,
            meta={"error": reason, "attempts": attempts, "call": call, "prompt_tokens": 0, "wall_s": wall_s / n},
        )
        for _ in range(n)
    ]
