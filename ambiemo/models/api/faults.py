"""What went wrong with a remote call, and the one retry loop (``call_with_retries``, tenacity).

Faults. What each becomes:

=============================================  ==========================================
HTTP 408, 429 (``Retry-After`` honoured), 5xx   retried
timeout, refused or dropped connection          retried (on another endpoint of a pool first)
a body that is not the JSON the route expects   retried (a proxy's error page, a cut stream)
400, 413, 422 (content policy, audio too long)  not retried: recorded with the server's reason
401, 403, 404, 410 (key, access, model id)      ``ConfigurationError``: the run stops at once
=============================================  ==========================================

Before retry ``k`` (1, 2, ...) the wait is drawn uniformly from ``[d/2, d]`` with
``d = min(max_delay_s, base_delay_s * 2**(k-1))`` (jitter: concurrent requests that failed
together do not come back together), or is the server's ``Retry-After`` where it sends one. A
request gives up after ``max_attempts`` attempts, or earlier when the next wait would take it past
``max_total_s`` since its first attempt. The Gemini SDK's own retries are off and the OpenAI routes'
client (``chat_http``) has none, so this is the only loop.

Above the per-request loop sits the circuit breaker of each endpoint (``ambiemo.models.api.pool``):
``breaker_after`` consecutive failures with the same ``failure_signature`` and no success between
them, over at least ``breaker_window_s``, take the endpoint out for the rest of the run; a cell
whose every endpoint is out stops with ``CircuitOpen``. A withdrawn model (503 to everything) stops
a cell in seconds instead of retrying every utterance for minutes.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from ambiemo.core.secrets import scrub

log = logging.getLogger(__name__)
R = TypeVar("R")

RETRY_STATUS = {408, 429}  # request timeout, rate limit; and every 5xx
FATAL_STATUS = {401, 403, 404, 410}  # every request would fail alike: key, access, unknown or withdrawn model


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


class ModelMismatch(ConfigurationError):
    """The response names another model than the one asked for (``ambiemo.models.lifecycle``)."""


class CircuitOpen(ConfigurationError):
    """Every endpoint of a model answered the same failure to every request: the cell stops.
    Not retried (it is no API fault of one request); the message names the model, the endpoint,
    the status and what to do."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # including the first
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_total_s: float = 300.0  # from the first attempt to the last one's start, waits included
    endpoint_cooldown_s: float = 30.0  # a pool endpoint that is out is checked again after this
    # The circuit breaker: this many consecutive failures of one endpoint with the same status and
    # reason, no success between them, spanning at least breaker_window_s, take the endpoint out for
    # the run (0: never). 429 never counts (a rate limit is a live server asking to slow down).
    breaker_after: int = 10
    breaker_window_s: float = 10.0

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> RetryPolicy:
        retry = dict(spec.get("retry") or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(retry) - known
        if unknown:
            raise ValueError(f"unknown retry settings {sorted(unknown)}; use {', '.join(sorted(known))}")
        policy = cls(**retry)
        if policy.breaker_after < 0:
            raise ValueError(f"retry.breaker_after must be >= 0 (0: no breaker), got {policy.breaker_after}")
        if policy.max_attempts < 1:
            raise ValueError(f"retry.max_attempts must be >= 1, got {policy.max_attempts}")
        delays = (policy.base_delay_s, policy.max_delay_s, policy.max_total_s, policy.endpoint_cooldown_s)
        if min(*delays, policy.breaker_window_s) < 0:
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
    """The HTTP status of a failed call: ``status_code`` (the OpenAI routes' ``chat_http.StatusError``),
    google-genai's ``code``, httpx's ``response.status_code``."""
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
    """Timeouts and refused or dropped connections, recognised by class name so that httpx (the
    OpenAI routes), google-genai's wrappers and the standard library are all covered without
    importing them."""
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


def failure_signature(exc: BaseException) -> tuple[str, bool] | None:
    """``(signature, at_once)`` of a failed call for the circuit breaker, or None where it does not
    count: a 429 (the server is alive and asks to slow down), a transport fault (the pool's cooldown
    handles a dead server), or an exception that is no API fault (a bug). The signature is the
    status and the reason with digits blanked (request ids and counters differ between requests,
    the fault does not); ``at_once`` for the statuses that no retry can fix (401, 403, 404, 410)."""
    code = status_code(exc)
    if code is None:
        if is_malformed(exc):
            return f"malformed response ({type(exc).__name__})", False
        return None
    if code == 429:
        return None
    reason = "".join("#" if ch.isdigit() else ch for ch in " ".join(str(exc).split())[:200])
    return f"HTTP {code}: {reason}", code in FATAL_STATUS


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
