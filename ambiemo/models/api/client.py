"""The base of the API routes (``openai``, ``gemini``): ``ApiModel``, with audio encoding, seeds,
and label scoring from top log-probabilities. Its parts live beside it: the faults and the retry
loop in ``faults`` (every call goes through ``call_with_retries``), the endpoint pool, its circuit
breaker and bounded concurrency in ``pool``, keys and prices in ``keys``.

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
import hashlib
import io
import json
import logging
import threading
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from ambiemo.models.api.faults import (
    ModelMismatch,
    RequestFailed,
    RetryPolicy,
    call_with_retries,
    failure_signature,
    is_endpoint_down,
    scrub,
)
from ambiemo.models.api.keys import api_key_names, cost_usd
from ambiemo.models.api.labels import option_logprobs_from_top
from ambiemo.models.api.pool import EndpointPool, run_concurrently
from ambiemo.models.api.spec import check_api_spec
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
R = TypeVar("R")


def request_seed(seed: int, request: AudioRequest, call: int) -> int:
    """The seed of call ``call`` for ``request``: a hash of the run's seed, the clip and the
    conversation, so that it does not depend on the batch or the endpoint (31 bits: every
    provider accepts it)."""
    h = hashlib.sha256()
    h.update(f"{seed}|{call}|{request.audio_sha1()}|".encode())
    h.update(json.dumps(request.conversation(), sort_keys=True).encode())
    return int.from_bytes(h.digest()[:4], "big") & 0x7FFFFFFF


def share_gen_tokens(cands: Sequence[Candidate], gen_tokens: int, among: int) -> None:
    """Candidates whose provider gave no per-candidate length: each gets an equal share of the call's
    reported total of generated tokens (``among`` candidates made it), marked ``n_tokens_estimated``."""
    for c in cands:
        c.n_tokens = round(gen_tokens / among)
        c.meta["n_tokens_estimated"] = True


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
    same clip reuses it, so the client's CPU per request is the HTTP client's, not the encoder's."""
    from ambiemo.data.audio import FEATURE_MEMO

    def encode() -> bytes | str:
        wav = wav_bytes(request.waveform, request.sample_rate)
        return base64.b64encode(wav).decode("ascii") if as_base64 else wav

    return FEATURE_MEMO.get(request.audio_sha1(), "wav-pcm16-base64" if as_base64 else "wav-pcm16", encode)


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
    ``model_id`` (required), ``revision`` (null), ``base_url`` (null: the provider's, or the route's
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
        api_key_names(spec, self.default_key_env)  # a key written into params: refused with its own message first
        check_api_spec(key, {"adapter": route, **spec})
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
        self.spec = spec
        cost_usd(self.pricing, text_in=0, audio_in=0, out=0)  # validate the fields now, not mid-run
        self._pool: EndpointPool | None = None
        self._secret: str | None = None
        self._lock = threading.Lock()
        # Injectable for tests: how retries wait (None: the pool's wait, which the circuit breaker
        # cuts short) and measure their total time.
        self.sleep: Callable[[float], None] | None = None
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
        """Built on the first real call: a fully cached rerun needs neither a client nor a key."""
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
                    signature=failure_signature,
                    breaker_after=self.policy.breaker_after,
                    breaker_window_s=self.policy.breaker_window_s,
                    name=f"model {self.key!r} ({self.model_id})",
                    hint=self._breaker_hint(),
                )
            return self._pool

    def _breaker_hint(self) -> str:
        return (
            f"Check the provider's status and deprecation pages, run `ambiemo models check {self.key}`, and "
            f"see `ambiemo plan` for models.{self.key}.lifecycle; point model_id at the successor or base_url "
            "at a server that serves it (retry.breaker_after: 0 turns the breaker off)"
        )

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
            sleep=self.sleep or self.pool.wait,
            clock=self.clock,
        )

    def _check_served(self, cands: list[Candidate]) -> None:
        """Stop the cell when the answer came from another model than the one asked (the route
        records the name the response gives in ``meta["served_model"]``)."""
        from ambiemo.models.lifecycle import served_mismatch

        served = next((c.meta.get("served_model") for c in cands if c.meta.get("served_model")), None)
        why = served_mismatch(self.model_id, served, self.spec)
        if why:
            raise ModelMismatch(f"model {self.key!r}: {why} (models.{self.key}.lifecycle in params.yaml)")

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
                return Candidate.failed(n, e.reason, wall_s=time.perf_counter() - t0, attempts=e.attempts, call=c)
            wall = time.perf_counter() - t0
            cost = self._cost(u)
            self._check_served(cands)
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
