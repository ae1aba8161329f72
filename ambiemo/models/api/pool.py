"""A pool of endpoints serving one model (several ``vllm serve`` processes, or one provider URL).

``EndpointPool.call(fn)`` runs ``fn(client)`` on an endpoint that is up and has a free slot
(at most ``concurrency`` calls in flight per endpoint; the least busy first, then the least used). An endpoint whose
connection fails (refused, reset, dropped mid-response, timed out) is taken out and the call moves
to another endpoint at once, without waiting and without spending one of the request's retries:
a dead server is not the request's fault. An endpoint that is out is health-checked again after
``cooldown_s`` and comes back when it answers. When every endpoint has failed a call, ``call`` raises
the last transport error (or ``NoEndpoint`` when none passes its check), and the request's retry
loop (``ambiemo.models.api.client``) backs off; each later attempt checks the endpoint due soonest again.

HTTP errors (429, 5xx, 400) come from a live server and go to the caller, whose retry loop
decides; the pool only counts them for each endpoint's circuit breaker. An endpoint that answers
the same failure (``signature``: status and reason) to ``breaker_after`` calls in a row, with no
success between them and over at least ``breaker_window_s``, or a 401/403/404/410 at once, is
*broken*: out for the rest of the run (a withdrawn model does not come back after a cooldown). A
call that meets a 401/403/404/410 moves to another endpoint; when every endpoint is broken, every
call raises ``CircuitOpen`` naming the model, the endpoints, their failures and what to do, and
``wait`` (the retry loop's sleep) wakes at once, so that a cell stops in seconds.

Which endpoint served a call never reaches the result: a
request carries its own seed (``api.request_seed``), so the answer is the same from any of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ambiemo.models.api.faults import CircuitOpen

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
Signature = Callable[[BaseException], "tuple[str, bool] | None"]


class NoEndpoint(ConnectionError):
    """Every endpoint of the pool is out (failed its health check or its last call)."""


@dataclass
class Endpoint:
    url: str
    client: Any = None
    inflight: int = 0
    up: bool | None = None  # None: not checked yet
    probing: bool = False
    retry_at: float = 0.0  # when an endpoint that is out may be checked again
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    streak: str | None = None  # the circuit breaker: the failure repeated since the last success
    streak_n: int = 0
    streak_since: float = 0.0
    broken: str | None = None  # why the breaker took the endpoint out for good


class EndpointPool:
    """Endpoints of one model. ``make_client(url)`` builds a client for an endpoint (lazily);
    ``health(url)`` says whether a server answers (None: no health check, an endpoint is up until
    a call to it fails); ``is_down(exc)`` says whether an exception means the endpoint is gone."""

    def __init__(
        self,
        urls: Sequence[str | None],
        make_client: Callable[[str | None], Any],
        *,
        concurrency: int,
        is_down: Callable[[BaseException], bool],
        health: Callable[[str], bool] | None = None,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        redact: Callable[[str], str] = str,
        signature: Signature | None = None,
        breaker_after: int = 0,
        breaker_window_s: float = 0.0,
        name: str = "the model",
        hint: str = "",
    ) -> None:
        if not urls:
            raise ValueError("an endpoint pool needs at least one endpoint")
        if len(set(urls)) != len(urls):
            raise ValueError(f"base_url lists an endpoint twice: {list(urls)}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.endpoints = [Endpoint(u) for u in urls]
        self.make_client = make_client
        self.concurrency = concurrency
        self.is_down = is_down
        self.health = health
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.redact = redact  # failure reasons pass through it before they are logged or raised (keys)
        self.signature = signature  # None: no circuit breaker
        self.breaker_after = breaker_after
        self.breaker_window_s = breaker_window_s
        self.name, self.hint = name, hint  # the model, and what to do, for CircuitOpen's message
        self.open = threading.Event()  # set once every endpoint is broken
        self._cond = threading.Condition()
        self._client_lock = threading.Lock()  # one client per endpoint, however many threads start at once

    @property
    def slots(self) -> int:
        """Calls that may be in flight at once over the whole pool."""
        return self.concurrency * len(self.endpoints)

    def stats(self) -> list[dict[str, Any]]:
        with self._cond:
            return [
                {"url": e.url, "up": e.up, "calls": e.calls, "failures": len(e.failures), "broken": e.broken}
                for e in self.endpoints
            ]

    def wait(self, seconds: float) -> None:
        """The retry loop's sleep: returns early once every endpoint is broken (the next call raises)."""
        self.open.wait(seconds)

    def call(self, fn: Callable[[Any], R]) -> R:
        """``fn(client)`` on a live endpoint; moves to another endpoint while endpoints die."""
        tried: set[int] = set()
        while True:
            i = self._acquire(tried)
            ep = self.endpoints[i]
            try:
                result = fn(self._client(ep))
            except Exception as exc:
                if not self.is_down(exc):
                    if self._count_failure(i, exc) and len(tried | {i}) < len(self.endpoints):
                        tried.add(i)  # this endpoint refuses the model for good: another may serve it
                        continue
                    raise
                tried.add(i)
                self._take_out(i, self.redact(f"{type(exc).__name__}: {exc}"))
                if len(tried) == len(self.endpoints):
                    raise  # every endpoint failed this request: the caller's retry loop backs off
                continue
            finally:
                self._release(i)
            with self._cond:
                ep.calls += 1
                ep.streak, ep.streak_n = None, 0
            return result

    def _client(self, ep: Endpoint) -> Any:
        """The endpoint's client, built by the first call that needs it. Threads that start
        together wait for that one: each building its own (an HTTP connection pool, a TLS context)
        cost more CPU than the calls themselves at 16 in flight, and all but one were thrown away."""
        if ep.client is None:
            with self._client_lock:
                if ep.client is None:
                    ep.client = self.make_client(ep.url)
        return ep.client

    # -- the circuit breaker -----------------------------------------------------------------------
    def _count_failure(self, i: int, exc: BaseException) -> bool:
        """Count a failed call of endpoint ``i``; True when it broke the endpoint at once (401/403/404/410)."""
        found = self.signature(exc) if self.signature is not None else None
        if found is None:
            return False
        sig, at_once = found
        with self._cond:
            ep = self.endpoints[i]
            now = self.clock()
            if ep.streak != sig:
                ep.streak, ep.streak_n, ep.streak_since = sig, 0, now
            ep.streak_n += 1
            if (
                ep.broken is None
                and self.breaker_after
                and (at_once or (ep.streak_n >= self.breaker_after and now - ep.streak_since >= self.breaker_window_s))
            ):
                said = " ".join(str(exc).split())[:200]  # the server's own words, not the digit-blanked signature
                ep.broken = self.redact(
                    f"{sig.split(':')[0]}: {said}"
                    + ("" if at_once else f" ({ep.streak_n} calls in a row over {now - ep.streak_since:.0f} s)")
                )
                log.error("%s: endpoint %s broken: %s", self.name, ep.url or "(default)", ep.broken)
                if all(e.broken for e in self.endpoints):
                    self.open.set()
                self._cond.notify_all()
            return at_once and ep.broken is not None

    def _circuit_open(self) -> CircuitOpen:
        where = "; ".join(f"{e.url or 'the provider endpoint'}: {e.broken}" for e in self.endpoints)
        return CircuitOpen(
            f"{self.name}: every endpoint fails every request the same way, so the cell stops "
            f"({where}). The model may be withdrawn or renamed, or the server broken. {self.hint}".strip()
        )

    # -- bookkeeping ------------------------------------------------------------------------------
    def _acquire(self, tried: set[int]) -> int:
        """A slot on a live endpoint not in ``tried``; checks endpoints that are due first."""
        forced: set[int] = set()
        with self._cond:
            while True:
                if self.open.is_set():
                    raise self._circuit_open()
                tried = tried | {i for i, e in enumerate(self.endpoints) if e.broken}
                now = self.clock()
                due = [
                    i
                    for i, e in enumerate(self.endpoints)
                    if i not in tried and not e.up and not e.probing and e.retry_at <= now
                ]
                if due:  # an endpoint that may be back is checked first, so that it returns at once
                    self._probe(due[0])
                    continue
                free = [
                    i
                    for i, e in enumerate(self.endpoints)
                    if i not in tried
                    and (e.up or (e.up is None and self.health is None))
                    and e.inflight < self.concurrency
                ]
                if free:  # the least busy, then the least used: an endpoint that came back gets work
                    i = min(free, key=lambda k: (self.endpoints[k].inflight, self.endpoints[k].calls, k))
                    self.endpoints[i].inflight += 1
                    self.endpoints[i].up = True
                    return i
                waiting = any(
                    i not in tried and (e.up or e.probing) for i, e in enumerate(self.endpoints)
                )  # busy or being checked: a slot will come
                if waiting:
                    self._cond.wait(timeout=0.5)
                    continue
                # Nothing is up and nothing is due: check the soonest anyway, once per call (the
                # caller's retry loop, which backs off, paces these checks).
                rest = [i for i, e in enumerate(self.endpoints) if i not in tried | forced and not e.probing]
                if rest:
                    i = min(rest, key=lambda k: self.endpoints[k].retry_at)
                    forced.add(i)
                    self._probe(i)
                    continue
                down = "; ".join(f"{e.url}: {e.failures[-1] if e.failures else 'unchecked'}" for e in self.endpoints)
                raise NoEndpoint(f"no endpoint is up ({down})")

    def _probe(self, i: int) -> None:
        """Health-check endpoint ``i`` outside the lock (called with it held)."""
        ep = self.endpoints[i]
        ep.probing = True
        self._cond.release()
        try:
            ok = True if self.health is None else self.health(ep.url or "")
            reason = "" if ok else "failed its health check"
        except Exception as exc:  # any failure to answer is a failed check
            ok, reason = False, self.redact(f"health check: {type(exc).__name__}: {exc}")
        finally:
            self._cond.acquire()
        ep.probing = False
        if ok:
            if ep.up is False:
                log.warning("endpoint %s is back", ep.url)
            ep.up = True
        else:
            self._mark_out(ep, reason)
        self._cond.notify_all()

    def _take_out(self, i: int, reason: str) -> None:
        with self._cond:
            self._mark_out(self.endpoints[i], reason)
            self._cond.notify_all()

    def _mark_out(self, ep: Endpoint, reason: str) -> None:
        if ep.up is not False:
            log.warning("endpoint %s taken out of the pool (%s); retried in %.0f s", ep.url, reason, self.cooldown_s)
        ep.up = False
        ep.failures.append(reason)
        ep.retry_at = self.clock() + self.cooldown_s

    def _release(self, i: int) -> None:
        with self._cond:
            self.endpoints[i].inflight -= 1
            self._cond.notify_all()


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
