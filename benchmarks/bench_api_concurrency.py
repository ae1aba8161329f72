"""Concurrency of the openai-compatible route against a fake server (its own process) that answers
every request after a fixed delay: requests per second at ``concurrency: C`` against ``concurrency: 1``,
handing the model the strategy's batch (``--batch``, 8) per ``generate`` call and handing it one
call of ``preferred_batch`` utterances or more. Target (issue 11): >= 0.8 x C.

    python benchmarks/bench_api_concurrency.py --requests 128 --concurrency 16

Prints the ratios side by side and writes one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message

ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "happy"},
            "finish_reason": "stop",
            "logprobs": {"content": [{"token": "happy", "logprob": -0.1, "bytes": None, "top_logprobs": []}]},
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
}


def serve(delay_s: float, port: mp.Queue) -> None:
    body = json.dumps(ANSWER).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delay_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port.put(server.server_address[1])
    server.serve_forever()


def per_request_s(url: str, concurrency: int, requests: list[AudioRequest], batch: int) -> float:
    spec = {"adapter": "openai-compatible", "model_id": "m", "base_url": url, "concurrency": concurrency}
    model = load_model("bench", spec)
    model.generate(requests[:1], GenerationConfig())  # client built, health checked
    t0 = time.perf_counter()
    for start in range(0, len(requests), batch):
        model.generate(requests[start : start + batch], GenerationConfig())
    return (time.perf_counter() - t0) / len(requests)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="utterances per generate call, as a strategy hands them")
    ap.add_argument("--delay-s", type=float, default=0.1, help="the fake server's answer time")
    args = ap.parse_args()

    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    port: mp.Queue = mp.Queue()
    server = mp.Process(target=serve, args=(args.delay_s, port), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port.get(timeout=30)}/v1"
    rng = np.random.default_rng(0)
    requests = [
        AudioRequest(f"u{i}", rng.normal(0, 0.1, 1600).astype(np.float32), 16000, [Message("user", "?", audio=True)])
        for i in range(args.requests)
    ]
    try:
        sequential = per_request_s(url, 1, requests[: max(16, args.requests // 4)], args.batch)
        batched = per_request_s(url, args.concurrency, requests, args.batch)
        one_call = per_request_s(url, args.concurrency, requests, len(requests))
    finally:
        server.terminate()
    target = 0.8 * args.concurrency
    result = {
        "workload": f"{args.requests} requests, fake server answering after {args.delay_s * 1000:.0f} ms",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "concurrency": args.concurrency,
        "speedup_strategy_batch": sequential / batched,
        "speedup_one_call": sequential / one_call,
        "strategy_batch": args.batch,
        "target": target,
    }
    print(
        f"concurrency {args.concurrency} vs 1: {result['speedup_strategy_batch']:.1f}x with {args.batch} utterances "
        f"per call, {result['speedup_one_call']:.1f}x with {args.requests} per call (target >= {target:.1f}x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
