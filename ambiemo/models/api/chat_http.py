"""Chat completions over plain HTTP (httpx), the client of both OpenAI routes: ``POST
{base_url}/chat/completions`` with the JSON body the route builds, the answer read as JSON.

It stands where the OpenAI SDK stood. The route already built its body as plain JSON (merged in as
``extra_body``, so that the SDK would not walk it) and read a handful of fields off the answer, so
the SDK's typed objects bought nothing here, while its import was about 1 s of every ``ambiemo infer``
(its ``types`` package, and the aiohttp it imports when dvc has installed it) and its objects most of a
request's client CPU. What the SDK did that the faults depend on is kept as it was
(``ambiemo.models.api.faults`` classifies by status and by class, so the classes below are what it
sees):

* a non-2xx answer raises ``StatusError``, with ``status_code``, ``response`` (whose headers carry
  ``Retry-After``) and the SDK's message, ``Error code: 400 - <the body's error.message>``, which the
  circuit breaker's signature and the recorded reason read;
* a request that gets no answer raises httpx's own transport error (timeout, refused or dropped
  connection); any other failure to get an answer (a redirect loop) becomes a ``ConnectionError``,
  as the SDK made every such failure its ``APIConnectionError``;
* a 2xx whose body is not JSON (or not UTF-8) raises ``json.JSONDecodeError`` (a malformed response);
* the request: the key as a bearer token (``EMPTY`` without one, as the route gave the SDK),
  ``OpenAI-Organization`` and ``OpenAI-Project`` from ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID``,
  redirects followed, the environment's proxies, the SDK's connection limits, one timeout for
  every phase, and no retries of its own (``faults.call_with_retries`` is the one loop).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Any

import ambiemo

# The SDK's own limits: enough kept-alive connections that a pool's 48 calls in flight never reconnect.
MAX_CONNECTIONS, MAX_KEEPALIVE = 1000, 100


class StatusError(RuntimeError):
    """The server answered with an HTTP error status (``status_code``; ``response`` is httpx's)."""

    def __init__(self, message: str, response: Any) -> None:
        super().__init__(message)
        self.status_code: int = response.status_code
        self.response = response


def status_message(status: int, text: str) -> str:
    """The SDK's message for an error answer: the status, and the body's ``error.message`` (or its
    top-level ``message``) where the body is JSON that has one."""
    try:
        body = json.loads(text.strip())
    except ValueError:
        return f"Error code: {status}"
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f"Error code: {status} - {message}" if isinstance(message, str) and message else f"Error code: {status}"


def import_httpx() -> Any:
    """httpx, imported with the first client (a fully cached rerun sends nothing), without its
    command-line client: httpx's ``__init__`` imports ``httpx._main`` (click, rich and pygments,
    about 0.1 s, a third of httpx's import) whenever they are installed, and falls back to a stub
    when that import fails. No ambiemo process runs that client; the block is
    lifted once httpx is in, so a later ``import httpx._main`` works."""
    # httpx logs every request at INFO, which ambiemo infer's logging prints: a line per request, where
    # the SDK's client logged nothing. A level set by the user stands.
    quiet = logging.getLogger("httpx")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    blocked = sys.modules.setdefault("httpx._main", None) is None
    try:
        import httpx
    finally:
        if blocked and sys.modules.get("httpx._main", 0) is None:
            del sys.modules["httpx._main"]
    return httpx


@functools.cache
def tls_context() -> Any:
    """The SSL context of every client in the process: the one httpx would build for each client
    (certifi's roots; ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` honoured), built once. Loading the roots
    took about 50 ms per client, on the path of the first requests, once more for each endpoint of a
    pool; one context serves any number of connections."""
    return import_httpx().create_ssl_context()


class ChatClient:
    """One endpoint's client: a connection pool shared by every thread that calls it."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        httpx = self.httpx = import_httpx()
        headers = {
            "Authorization": f"Bearer {api_key or 'EMPTY'}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"ambiemo/{ambiemo.__version__}",
        }
        for header, env in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
            if os.environ.get(env) is not None:
                headers[header] = os.environ[env]
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.http = httpx.Client(
            headers=headers,
            timeout=timeout_s,
            follow_redirects=True,
            verify=tls_context(),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE),
        )

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"ChatClient({self.url!r})"

    def create(self, body: dict[str, Any]) -> Any:
        """POST ``body``; the answer's JSON (raises as the module docstring says)."""
        content = json.dumps(body).encode()  # outside the try: a body that does not serialise is a bug
        try:
            response = self.http.post(self.url, content=content)
        except self.httpx.TransportError:
            raise
        except self.httpx.HTTPError as e:
            raise ConnectionError(f"{type(e).__name__}: {e}") from e
        if not response.is_success:
            raise StatusError(status_message(response.status_code, response.text), response)
        try:
            return response.json()
        except UnicodeDecodeError as e:  # a proxy's page in Latin-1: malformed like any non-JSON answer
            raise json.JSONDecodeError(f"the answer is not UTF-8 ({e.reason})", repr(response.content[:80]), 0) from e
