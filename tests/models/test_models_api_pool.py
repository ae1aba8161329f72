"""A pool of vLLM servers (``base_url`` a list): three fake servers on 127.0.0.1, one killed
mid-run, give the same candidates as one server, nothing lost or duplicated; an endpoint failing
its health check gets no request until it passes again after its cooldown (injected clock); and
concurrency is bounded per endpoint but not capped by the caller's batch."""

from __future__ import annotations

import threading
import time

import pytest
from fake_api import chat_response, gemini_spec, make_request, openai_spec, vllm_spec

from ambiemo.models import load_model
from ambiemo.models.api.client import request_seed
from ambiemo.models.api.pool import EndpointPool, NoEndpoint
from ambiemo.models.base import GenerationConfig

pytestmark = pytest.mark.usefixtures("api_env")  # fake keys, nothing routed off 127.0.0.1


def seeded(i, path, body, headers):
    """An answer that is a function of the request alone (as vLLM's is, given the seed)."""
    time.sleep(0.01)
    seed = body["seed"]
    return 200, chat_response([(f"{seed}-{k}", [("x", -((seed + k) % 97) / 10)]) for k in range(body["n"])])


def pool_spec(urls, **extra):
    return {**vllm_spec(urls[0]), "base_url": [u + "/v1" for u in urls], **extra}


def answers(out):
    return [[(c.text, c.logprob, c.n_tokens) for c in cands] for cands in out]


def test_pool_with_a_server_killed_mid_run_equals_one_server(fake_api):
    reqs = [make_request(f"u{i}", seconds=0.1 + i / 1000) for i in range(24)]
    config = GenerationConfig(mode="sample", n=3, temperature=0.7, seed=5)
    single = load_model("served", vllm_spec(fake_api(seeded).url)).generate(reqs, config)

    def dies(i, path, body, headers):
        if i == 0:  # its first request: the first wave fills every slot, so b always gets one, however slow the machine
            b.kill()  # this request and those in flight lose their connection; new ones are refused
        return seeded(i, path, body, headers)

    a, b, c = fake_api(seeded), fake_api(dies), fake_api(seeded)
    model = load_model("served", pool_spec([a.url, b.url, c.url], concurrency=2))
    assert model.preferred_batch == 6
    out = model.generate(reqs, config)

    assert answers(out) == answers(single)  # the same candidates, in request order: nothing lost or moved
    assert all("error" not in c.meta for cands in out for c in cands)
    assert model.usage.failures == 0 and model.usage.calls == 24  # each request counted once
    assert b.killed and b.answered < len(b.requests)  # it did die with requests in flight ...
    assert a.answered + b.answered + c.answered == 24  # ... which the others answered, once each
    assert max(s.max_inflight for s in (a, b, c)) <= 2
    stats = {s["url"]: s for s in model.pool.stats()}
    assert stats[b.url + "/v1"]["up"] is False and stats[b.url + "/v1"]["failures"] >= 1
    seeds = {r["body"]["seed"] for s in (a, b, c) for r in s.requests}
    assert seeds == {request_seed(5, r, 0) for r in reqs}


def test_endpoint_failing_its_health_check_is_skipped_then_retried_after_cooldown(fake_api):
    a, b = fake_api(seeded), fake_api(seeded)
    b.healthy = False
    model = load_model("served", pool_spec([a.url, b.url], concurrency=1, retry={"endpoint_cooldown_s": 30}))
    now = [0.0]
    model.clock = lambda: now[0]
    model.generate([make_request(f"u{i}") for i in range(4)], GenerationConfig())
    assert b.health_checks >= 1 and b.requests == [] and len(a.requests) == 4

    b.healthy = True
    model.generate([make_request(f"v{i}") for i in range(4)], GenerationConfig())
    assert b.requests == []  # still out: its cooldown has not passed
    now[0] = 31.0
    model.generate([make_request(f"w{i}") for i in range(8)], GenerationConfig())
    assert len(b.requests) > 0 and len(a.requests) + len(b.requests) == 16


def test_pool_unit_failover_and_all_down():
    """The pool alone: a dead endpoint is taken out and the call moves on; when every endpoint is
    out, NoEndpoint (a ConnectionError, which the retry loop backs off on) is raised."""
    alive = {"a": True, "b": True}
    served = []

    def call(client):
        if not alive[client]:
            raise ConnectionRefusedError(client)
        served.append(client)
        return client

    pool = EndpointPool(["a", "b"], lambda url: url, concurrency=1, is_down=lambda e: isinstance(e, ConnectionError))
    alive["a"] = False
    assert [pool.call(call) for _ in range(3)] == ["b", "b", "b"]
    assert [s["up"] for s in pool.stats()] == [False, True]
    alive["b"] = False
    with pytest.raises(ConnectionError):
        pool.call(call)
    health = EndpointPool(["a"], lambda url: url, concurrency=1, is_down=lambda e: True, health=lambda url: False)
    with pytest.raises(NoEndpoint, match="failed its health check"):
        health.call(call)
    with pytest.raises(ValueError, match="twice"):
        EndpointPool(["a", "a"], lambda url: url, concurrency=1, is_down=lambda e: True)


@pytest.mark.parametrize(("n_servers", "concurrency"), [(1, 16), (3, 4)])
def test_concurrency_fills_every_slot_of_one_generate_call(fake_api, n_servers, concurrency):
    """Issue 11's finding: 8 utterances per call cannot keep 16 slots busy. One call with
    ``preferred_batch`` utterances (or more) does: the servers see that many requests at once."""
    cond = threading.Condition()
    count = {"now": 0, "max": 0, "target": n_servers * concurrency, "open": False}

    def slow(i, path, body, headers):
        # Hold the first requests until the expected number is in flight at once (or 5 s pass), then
        # let all through: the peak is what the pool allows, whatever the machine's speed.
        with cond:
            count["now"] += 1
            count["max"] = max(count["max"], count["now"])
            count["open"] = count["open"] or count["now"] >= count["target"]
            cond.notify_all()
            cond.wait_for(lambda: count["open"], timeout=5)
        with cond:
            count["now"] -= 1
        return 200, chat_response([("happy", [("happy", -0.1)])])

    servers = [fake_api(slow) for _ in range(n_servers)]
    model = load_model("served", pool_spec([s.url for s in servers], concurrency=concurrency))
    slots = n_servers * concurrency
    assert model.preferred_batch == slots
    model.generate([make_request(f"u{i}") for i in range(2 * slots)], GenerationConfig())
    assert count["max"] == slots and all(s.max_inflight <= concurrency for s in servers)
    count.update(max=0, target=min(8, slots), open=False)
    model.generate([make_request(f"v{i}") for i in range(8)], GenerationConfig())  # the strategy's batch of 8
    assert count["max"] == min(8, slots)


def test_only_served_routes_take_a_list_of_endpoints():
    for spec in (openai_spec("http://127.0.0.1:9"), gemini_spec("http://127.0.0.1:9")):
        with pytest.raises(ValueError, match="cannot pool"):
            load_model("m", {**spec, "base_url": ["http://127.0.0.1:9", "http://127.0.0.1:10"]})
    assert (
        load_model("m", pool_spec(["http://127.0.0.1:9", "http://127.0.0.1:10"])).preferred_batch == 2 * 4
    )  # default concurrency 4 per endpoint
