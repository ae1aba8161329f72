"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 for the concurrency benchmark.

It answers every ``POST /v1/chat/completions`` after a fixed delay with a JSON distribution, and
counts the requests it held at once (the concurrency the client really achieved). Bounded: it
serves until stopped and never talks to any other address.

With ``--capacity N`` it works on at most N requests at once and queues the rest, as one GPU does:
a vLLM server batches up to its ``max_num_seqs`` sequences (and what its KV cache holds) and keeps
the others waiting, so one endpoint's throughput is fixed and more requests in flight than it takes
only queue. Without a capacity every request is answered after the delay however many arrive, which
is no endpoint's behaviour: a pool of three such servers would then be no better than one server
driven at three times the concurrency. Requests held (running or queued) are what ``max_in_flight``
counts.

It runs in its own process, as a real server does: in the client's process its handler threads
(reading 200 kB JSON bodies of base64 audio) would compete for the client's interpreter lock and
the benchmark would measure the two together. It keeps connections alive (HTTP/1.1), as vLLM's
server does; an HTTP/1.0 server makes the client open a TCP connection per request. It sets
TCP_NODELAY, as uvicorn (asyncio) under vLLM does: without it each kept-alive answer (headers and body
written apart) waited for the client's delayed ACK, about 45 ms added to every request.

    python benchmarks/fake_server.py --delay 0.1      # prints its URL, serves until killed
    python benchmarks/fake_server.py --delay 0.4 --capacity 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = '{"neutral": 0.4, "happy": 0.3, "angry": 0.2, "sad": 0.1}'


def make_server(
    delay_s: float, status: int = 200, fail_first: int = 0, fail_status: int = 429, capacity: int = 0
) -> ThreadingHTTPServer:
    """``status``: answer every request with this HTTP error instead (503: a withdrawn model);
    ``fail_first``: answer the first N requests with ``fail_status`` (a burst of rate limits);
    ``capacity``: work on at most this many requests at once, the rest queue (0: no limit)."""
    state = {"requests": 0, "in_flight": 0, "max_in_flight": 0}
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(capacity) if capacity > 0 else contextlib.nullcontext()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        disable_nagle_algorithm = True  # TCP_NODELAY, as asyncio servers set it

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # /v1/models, /health; /stats for the benchmark
            if self.path.rstrip("/").endswith("/stats"):
                with lock:
                    self._send(dict(state))
                return
            self._send({"object": "list", "data": [{"id": "fake", "object": "model"}]})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            if self.path.rstrip("/").endswith("/reset"):
                with lock:
                    state.update(requests=0, in_flight=0, max_in_flight=0)
                self._send({})
                return
            body = json.loads(raw or b"{}")
            with lock:
                state["requests"] += 1
                nth = state["requests"]
                state["in_flight"] += 1
                state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            failing = status if status != 200 else fail_status if nth <= fail_first else 200
            if failing != 200:
                with lock:
                    state["in_flight"] -= 1
                self._send({"error": {"message": f"fake server answers {failing}", "code": failing}}, failing)
                return
            try:
                with slots:  # the endpoint's capacity: a request beyond it waits for a slot
                    time.sleep(delay_s)
                n = int(body.get("n", 1))
                choices = [
                    {
                        "index": i,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": ANSWER},
                        "logprobs": None,
                    }
                    for i in range(n)
                ]
                payload = {
                    "id": "cmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": choices,
                    "usage": {"prompt_tokens": 50, "completion_tokens": 20 * n, "total_tokens": 50 + 20 * n},
                }
            finally:
                with lock:
                    state["in_flight"] -= 1
            self._send(payload)

        def _send(self, payload: dict, code: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the default backlog of 5 drops a burst of new connections (1 s TCP retries)

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    return httpd


class FakeChatServer:
    """The server in a child process: ``url``, ``reset()`` and ``max_in_flight`` from the client side."""

    def __init__(self, delay_s: float = 0.1, *extra: str) -> None:
        self.delay_s = delay_s
        self.extra = list(extra)  # more command-line options: --status 503, --fail-first 10
        self.url = ""
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> FakeChatServer:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--delay", str(self.delay_s), *self.extra], stdout=subprocess.PIPE, text=True
        )
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError(f"the fake server did not start (it printed {self.url!r})")
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def _ask(self, path: str, data: bytes | None = None) -> dict:
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data=data), timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        self._ask("/reset", b"{}")

    @property
    def max_in_flight(self) -> int:
        return int(self._ask("/stats")["max_in_flight"])

    @property
    def requests(self) -> int:
        return int(self._ask("/stats")["requests"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="a fake chat-completions server on 127.0.0.1")
    ap.add_argument("--delay", type=float, default=0.1, help="seconds before each answer")
    ap.add_argument("--status", type=int, default=200, help="answer every request with this status")
    ap.add_argument("--fail-first", type=int, default=0, help="answer the first N requests with --fail-status")
    ap.add_argument("--fail-status", type=int, default=429)
    ap.add_argument("--capacity", type=int, default=0, help="requests worked on at once, the rest queue (0: all)")
    args = ap.parse_args()
    server = make_server(args.delay, args.status, args.fail_first, args.fail_status, args.capacity)
    print(f"http://127.0.0.1:{server.server_address[1]}/v1", flush=True)
    server.serve_forever()
