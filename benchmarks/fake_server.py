"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 for the concurrency benchmark.

It answers every ``POST /v1/chat/completions`` after a fixed delay with a JSON distribution, and
counts the requests it held at once (the concurrency the client really achieved). Bounded: it
serves until ``stop()`` and never talks to any other address.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = '{"neutral": 0.4, "happy": 0.3, "angry": 0.2, "sad": 0.1}'


class FakeChatServer:
    def __init__(self, delay_s: float = 0.1) -> None:
        self.delay_s = delay_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # /v1/models, /health
                self._send({"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
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
                    self._send(
                        {
                            "id": "cmpl-fake",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body.get("model", "fake"),
                            "choices": choices,
                            "usage": {"prompt_tokens": 50, "completion_tokens": 20 * n, "total_tokens": 50 + 20 * n},
                        }
                    )
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests = self.max_in_flight = 0
