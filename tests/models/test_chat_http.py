"""The OpenAI routes' plain HTTP client (ambiemo.models.api.chat_http) against the OpenAI SDK it
replaced, each sending to the same fake server: the same request bodies and headers, and every
fault (each error status, with and without a reason or Retry-After, a dropped or refused
connection, a timeout) classified the same way by ambiemo.models.api.faults: retried or not, the
endpoint down or not, the circuit breaker's signature, the recorded reason and the wait. The SDK is
the reference here, so these tests need it (the `dev` extra installs it); the routes themselves do not."""

from __future__ import annotations

import socket
import time

import openai  # the reference, not the code under test
import pytest
from fake_api import DROP, OPENAI_KEY, chat_response

from ambiemo.models.api import faults
from ambiemo.models.api.chat_http import ChatClient, StatusError

pytestmark = pytest.mark.usefixtures("api_env")  # fake keys, nothing routed off 127.0.0.1

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 4, "seed": 3}


VLLM_ONLY = ("use_beam_search", "continue_final_message", "add_generation_prompt")  # were extra_body


def sdk_call(url: str, body: dict, timeout: float = 5.0):
    """What the route sent before: the SDK, no retries, the messages and vLLM's fields as extra_body."""
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=url, timeout=timeout, max_retries=0)
    kwargs = {k: v for k, v in body.items() if k not in VLLM_ONLY} | {"messages": []}
    extra = {k: v for k, v in body.items() if k in VLLM_ONLY} | {"messages": body["messages"]}
    return client.chat.completions.create(**kwargs, extra_body=extra)


def http_call(url: str, body: dict, timeout: float = 5.0):
    return ChatClient(url, OPENAI_KEY, timeout).create(body)


def raised(fn) -> BaseException:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 (the fault under test, whatever its class)
        return e
    raise AssertionError("no exception")


def classified(exc: BaseException) -> dict:
    """Everything the retry loop, the pool and the breaker read off an exception."""
    return {
        "status": faults.status_code(exc),
        "retryable": faults.is_retryable(exc),
        "endpoint_down": faults.is_endpoint_down(exc),
        "transport": faults.is_transport_error(exc),
        "malformed": faults.is_malformed(exc),
        "signature": faults.failure_signature(exc),
        "retry_after": faults.retry_after_s(exc, now=lambda: 0.0),
    }


def test_the_same_request_goes_out(fake_api, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-test")
    api = fake_api(lambda i, p, b, h: (200, chat_response([("happy", [("happy", -0.1)])])))
    body = {**BODY, "temperature": 0.0, "n": 1, "logprobs": True, "use_beam_search": True}
    sdk_call(api.url + "/v1", body)
    answer = http_call(api.url + "/v1/", body)  # a trailing slash on base_url changes nothing
    before, after = api.requests
    assert after["path"] == before["path"] == "/v1/chat/completions"
    assert after["body"] == before["body"] == body
    for header in ("authorization", "content-type", "accept", "openai-organization", "openai-project"):
        assert after["headers"][header] == before["headers"][header], header
    assert after["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert answer["choices"][0]["message"]["content"] == "happy"


ERRORS = [
    (400, {"error": {"message": "audio too long", "type": "invalid_request"}}, {}),
    (401, {"error": {"message": "Incorrect API key provided: sk-1234", "code": "invalid_key"}}, {}),
    (403, {"error": {"message": "no access to model 7"}}, {}),
    (404, {"error": {"message": "The model `m` does not exist"}}, {}),
    (408, {"error": {"message": "request timeout"}}, {}),
    (410, {"message": "gone: a top-level message, no error object"}, {}),
    (413, b"<html>413 Request Entity Too Large</html>", {}),
    (422, {"error": "a string where the object would be"}, {}),
    (429, {"error": {"message": "rate limited"}}, {"Retry-After": "7"}),
    (429, {"error": {"message": "rate limited"}}, {"retry-after-ms": "250"}),
    (500, {"error": {"message": "boom at step 123"}}, {}),
    (502, b"", {}),
    (503, {"error": {"message": "overloaded"}}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
]


@pytest.mark.parametrize(("status", "body", "headers"), ERRORS)
def test_an_error_status_is_the_same_fault(fake_api, status, body, headers):
    api = fake_api(lambda i, p, b, h: (status, body, headers))
    url = api.url + "/v1"
    before, after = raised(lambda: sdk_call(url, BODY)), raised(lambda: http_call(url, BODY))
    assert isinstance(after, StatusError)
    assert str(after) == str(before)  # the recorded reason, and the breaker's signature below
    assert classified(after) == classified(before)
    assert faults.describe(after) == faults.describe(before)


def test_a_dropped_connection_is_the_same_fault(fake_api):
    api = fake_api(lambda i, p, b, h: (200, DROP))
    url = api.url + "/v1"
    before, after = raised(lambda: sdk_call(url, BODY)), raised(lambda: http_call(url, BODY))
    assert classified(after) == classified(before)
    assert classified(after)["endpoint_down"] and classified(after)["signature"] is None


def test_a_refused_connection_is_the_same_fault():
    with socket.socket() as s:  # a port that nothing listens on once this socket closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    before, after = raised(lambda: sdk_call(url, BODY)), raised(lambda: http_call(url, BODY))
    assert classified(after) == classified(before)
    assert classified(after)["endpoint_down"] and classified(after)["retryable"]


def test_a_timeout_is_the_same_fault(fake_api):
    def slow(i, p, b, h):
        time.sleep(0.5)
        return 200, chat_response([("late", None)])

    url = fake_api(slow).url + "/v1"
    before, after = raised(lambda: sdk_call(url, BODY, 0.1)), raised(lambda: http_call(url, BODY, 0.1))
    assert classified(after) == classified(before)
    assert classified(after)["transport"] and classified(after)["retryable"]


def test_a_body_that_is_not_json_is_malformed(fake_api):
    api = fake_api(lambda i, p, b, h: (200, b"<html>502 Bad Gateway</html>"))
    url = api.url + "/v1"
    before, after = raised(lambda: sdk_call(url, BODY)), raised(lambda: http_call(url, BODY))
    assert classified(after) == classified(before)
    assert faults.describe(after) == faults.describe(before)
    assert classified(after)["malformed"] and classified(after)["retryable"]


def test_a_body_that_is_not_utf8_is_malformed_too(fake_api):
    """A proxy's page in Latin-1 is retried as a malformed answer, not taken for a bug that stops the run."""
    api = fake_api(lambda i, p, b, h: (200, b"<html>passerelle d\xe9faillante</html>"))
    after = raised(lambda: http_call(api.url + "/v1", BODY))
    assert classified(after)["malformed"] and classified(after)["retryable"]


def test_the_key_is_not_in_the_clients_repr():
    assert OPENAI_KEY not in repr(ChatClient("http://127.0.0.1:9/v1", OPENAI_KEY, 1.0))


def test_clients_share_one_tls_context_that_verifies():
    import ssl

    a, b = (ChatClient(f"http://127.0.0.1:{port}/v1", None, 1.0) for port in (8, 9))
    [ctx] = {id(c.http._transport._pool._ssl_context): c.http._transport._pool._ssl_context for c in (a, b)}.values()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname  # what httpx builds, not verify=False
