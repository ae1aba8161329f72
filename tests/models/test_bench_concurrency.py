"""What the concurrency benchmark rests on: its fake server counts what the client really held in
flight, and the endpoint pool builds one SDK client per endpoint however many threads start at once."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ambiemo.models.api.pool import EndpointPool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fake_server import FakeChatServer  # noqa: E402


def _post(url: str) -> dict:
    req = urllib.request.Request(
        url + "/chat/completions", data=json.dumps({"model": "fake", "n": 2}).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())


def test_fake_server_runs_apart_and_counts_requests_in_flight() -> None:
    with FakeChatServer(delay_s=0.5) as server:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _post(server.url), range(4)))
        assert [len(a["choices"]) for a in answers] == [2, 2, 2, 2]
        assert server.requests == 4
        assert server.max_in_flight == 4  # the four were held at once (0.5 s each)
        server.reset()
        assert server.requests == 0 and server.max_in_flight == 0
        _post(server.url)
        assert server.max_in_flight == 1


def test_fake_server_with_a_capacity_queues_what_it_cannot_take() -> None:
    with FakeChatServer(0.3, "--capacity", "2") as server:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _post(server.url), range(4)))
        wall = time.perf_counter() - t0
        assert [len(a["choices"]) for a in answers] == [2, 2, 2, 2]
        assert server.max_in_flight == 4  # all four were held ...
        assert wall >= 2 * 0.3  # ... but worked on two at a time: two rounds of the delay, at least


def test_pool_builds_one_client_per_endpoint_for_threads_that_start_together() -> None:
    built = []
    lock = threading.Lock()

    def make_client(url):
        time.sleep(0.2)  # as slow as building an HTTP client with its TLS context
        with lock:
            built.append(url)
        return object()

    pool = EndpointPool(["http://a", "http://b"], make_client, concurrency=8, is_down=lambda e: False)
    barrier = threading.Barrier(16)

    def call(_):
        barrier.wait()
        return pool.call(lambda client: id(client))

    with ThreadPoolExecutor(16) as ex:
        clients = set(ex.map(call, range(16)))
    assert sorted(built) == ["http://a", "http://b"]  # not one per thread
    assert len(clients) == 2
    assert sum(e["calls"] for e in pool.stats()) == 16
