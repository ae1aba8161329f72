"""A fake HTTP API server on 127.0.0.1 for the API-route tests: records every request and answers
with a scripted reply, and can inject the faults a real provider or server shows."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DROP = object()  # reply body: send the headers and part of the body, then close the connection


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 would make concurrent clients wait on TCP retries


class FakeAPI:
    """Records every POST (path, headers, JSON body) and answers with ``reply(i, path, body, headers)``,
    which returns ``(status, body)`` or ``(status, body, headers)``; ``body`` is a JSON-able object,
    raw ``bytes`` (a malformed answer), or ``DROP``. ``GET`` (vLLM's ``/health``) answers 200 while
    ``healthy``. ``kill()`` stops it as a dead process would: in-flight requests lose their
    connection and new ones are refused."""

    def __init__(self, reply):
        self.reply = reply
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.healthy = True
        self.health_checks = 0
        self.killed = False
        self.answered = 0  # requests that got a whole response
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with api.lock:
                    api.health_checks += 1
                self.send_response(200 if api.healthy else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with api.lock:
                    i = len(api.requests)
                    api.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    api.inflight += 1
                    api.max_inflight = max(api.max_inflight, api.inflight)
                try:
                    status, out, *extra = api.reply(i, self.path, body, self.headers)
                finally:
                    with api.lock:
                        api.inflight -= 1
                if api.killed:
                    out = DROP
                headers = extra[0] if extra else {}
                data = b'{"choices": [' if out is DROP else out if isinstance(out, bytes) else json.dumps(out).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data) + (1000 if out is DROP else 0)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    if out is DROP:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    else:
                        with api.lock:
                            api.answered += 1
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def kill(self):
        """Die: stop accepting (connections are refused) and drop what is in flight. Safe from a handler."""
        self.killed = True
        threading.Thread(target=self.close, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def fake_servers():
    """The body of a ``fake_api`` fixture: yields ``start(reply) -> FakeAPI``; closes them after."""
    servers = []

    def start(reply):
        servers.append(FakeAPI(reply))
        return servers[-1]

    yield start
    for s in servers:
        if not s.killed:
            s.close()


def set_api_env(monkeypatch, openai_key, gemini_key):
    """Fake keys in the environment and nothing that would send the SDKs elsewhere than 127.0.0.1."""
    for name in ("OPENAI_BASE_URL", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", openai_key)
    monkeypatch.setenv("GEMINI_API_KEY", gemini_key)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
