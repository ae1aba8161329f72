"""OpenAI chat completions with audio input: GPT-4o-class audio models, and any model that
``vllm serve`` exposes through the same API (Ultravox, Qwen2-Audio, ...).

Routes:

* ``openai-chat``: OpenAI itself. The key comes from ``OPENAI_API_KEY`` (or the variables
  named by ``api_key_env``), the endpoint from ``base_url`` in params, else ``OPENAI_BASE_URL``,
  else api.openai.com. OpenAI's audio chat models return no log-probabilities (the API refuses
  ``logprobs`` for them), so entries default to ``logprobs: false``.
* ``openai-compatible``: a ``vllm serve`` (or other OpenAI-compatible) server. ``base_url``
  (or ``OPENAI_BASE_URL``) is required; a list of URLs is a pool of servers serving the same
  model (``ambiemo.models.api.pool``: spread, health-checked at ``/health`` or ``/v1/models``,
  failover). The key is optional (vLLM's ``--api-key``). vLLM
  returns log-probabilities, so entries default to ``logprobs: true``; it also continues an
  assistant prefix (label scoring with ``prefix``) and, with ``beam_search: true`` in the entry,
  runs beam search (``use_beam_search``).

The clip goes as a base64 16-bit PCM WAV ``input_audio`` part (``{"data", "format": "wav"}``, as
OpenAI documents it and vLLM accepts it), before the text of the turn ``AudioRequest.audio_turn``
names. Greedy decoding sends ``temperature: 0``; sampling sends ``n``,
``temperature``, ``top_p`` and ``seed``. With log-probabilities on, each candidate carries
its per-token log-probabilities and their sum. Label scoring asks for one token with
``top_logprobs`` and reads each label's log-probability off the alternatives of that first
token (``api.option_logprobs_from_top``).

Both routes talk plain HTTP through ``chat_http.ChatClient`` (httpx), not the OpenAI SDK: the same
requests, answers and faults, without the SDK's second of start-up (see that module).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ambiemo.models import register_model
from ambiemo.models.api.client import ApiModel, CallUsage, request_wav, share_gen_tokens
from ambiemo.models.api.faults import ConfigurationError, MalformedResponse, RequestFailed
from ambiemo.models.api.keys import api_key_from_env
from ambiemo.models.base import AudioRequest, Candidate, Capabilities, GenerationConfig

if TYPE_CHECKING:  # imported with the first request: a fully cached rerun needs no HTTP client
    from ambiemo.models.api.chat_http import ChatClient

OPENAI_URL = "https://api.openai.com/v1"  # route openai-chat without base_url or OPENAI_BASE_URL (the SDK's default)


@register_model("openai-chat")
@register_model("openai-compatible")
class OpenAIChatModel(ApiModel):
    default_key_env = ("OPENAI_API_KEY",)

    @property
    def is_openai(self) -> bool:
        return self.route == "openai-chat"

    @property
    def assistant_prefill(self) -> bool:
        return not self.is_openai  # OpenAI answers after a prefix instead of continuing it

    @property
    def pool_allowed(self) -> bool:
        return not self.is_openai

    @property
    def has_health_check(self) -> bool:
        return not self.is_openai

    @classmethod
    def spec_capabilities(cls, spec: dict[str, Any]) -> Capabilities:
        served = spec.get("adapter") != "openai-chat"
        logprobs = bool(spec.get("logprobs", served))
        beam = bool(spec.get("beam_search", False)) and served
        if served:
            urls = spec.get("base_url") or "OPENAI_BASE_URL"
            where = f"{len(urls)} vllm serve endpoints" if isinstance(urls, list) else f"a vllm serve endpoint ({urls})"
            needs = where  # no extra: the route talks plain HTTP (httpx, a core dependency)
        else:
            names = spec.get("api_key_env", list(cls.default_key_env))
            needs = " or ".join([names] if isinstance(names, str) else names)
        return Capabilities(logprobs=logprobs, beam_search=beam, option_scoring=logprobs, needs=needs)

    def _key(self) -> str | None:
        if self.is_openai:
            return api_key_from_env(self.key_names, self.key)
        if not all(self.base_urls) and not os.environ.get("OPENAI_BASE_URL"):
            raise ConfigurationError(
                f"model {self.key!r} ({self.route}) needs the server's URL: set base_url in "
                "its params entry (e.g. http://localhost:8000/v1, or a list for a pool) or OPENAI_BASE_URL"
            )
        # A vLLM server started without --api-key accepts any key (the client then sends EMPTY).
        return next((os.environ[n] for n in self.key_names if os.environ.get(n)), None)

    def _url(self, base_url: str | None) -> str | None:
        return base_url or os.environ.get("OPENAI_BASE_URL") or None

    def _make_client(self, base_url: str | None) -> ChatClient:
        from ambiemo.models.api.chat_http import ChatClient

        return ChatClient(self._url(base_url) or OPENAI_URL, self._secret, self.timeout_s)

    def _health(self, base_url: str) -> bool:
        """vLLM answers ``GET /health`` with 200 once the model is loaded; other OpenAI-compatible
        servers at least list their models at ``/v1/models``. The standard library's client, without
        the environment's proxies: two GETs need no connection pool."""
        import urllib.error
        import urllib.request

        url = (self._url(base_url) or "").rstrip("/")
        root = url[: -len("/v1")] if url.endswith("/v1") else url
        headers = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def status(address: str) -> int:
            try:
                with opener.open(
                    urllib.request.Request(address, headers=headers), timeout=min(5.0, self.timeout_s)
                ) as r:
                    return r.status
            except urllib.error.HTTPError as e:  # an answer, not a failure to answer
                return e.code

        return status(f"{root}/health") == 200 or status(f"{url}/models") == 200

    def messages(self, request: AudioRequest, prefix: str = "") -> list[dict[str, Any]]:
        """The chat messages for ``request`` (and an assistant turn to continue, if ``prefix``)."""
        turn = request.audio_turn()
        data = request_wav(request, as_base64=True)
        out: list[dict[str, Any]] = []
        for i, m in enumerate(request.messages):
            if i == turn:
                parts: list[dict[str, Any]] = [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]
                if m.text:
                    parts.append({"type": "text", "text": m.text})
                out.append({"role": "user", "content": parts})
            else:
                out.append({"role": m.role, "content": m.text})
        if prefix:
            out.append({"role": "assistant", "content": prefix})
        return out

    def _generate_once(
        self, client: ChatClient, request: AudioRequest, config: GenerationConfig, n: int, seed: int
    ) -> tuple[list[Candidate], CallUsage]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": self.messages(request),
            "max_completion_tokens": config.max_new_tokens,
            "seed": seed,
        }
        if config.mode == "greedy":
            body.update(temperature=0.0, n=1)
        elif config.mode == "sample":
            body.update(temperature=config.temperature, top_p=config.top_p, n=n)
        else:  # beam, on a vLLM server: it returns num_beams beams; the best n are kept
            body.update(temperature=0.0, n=config.num_beams, use_beam_search=True)
        if self.capabilities.logprobs:
            body["logprobs"] = True
        response = client.create(body)
        try:
            u = _usage(response)
            cands = [_candidate(choice) for choice in response["choices"]]
            served = response.get("model")
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise MalformedResponse(f"not a chat completion: {type(e).__name__}: {e}") from None
        for c in cands:  # the name the server answered under (ApiModel checks it against model_id)
            c.meta["served_model"] = served
        if config.mode == "beam":
            cands.sort(key=lambda c: -(c.logprob if c.logprob is not None else float("-inf")))
        n_returned = len(cands)
        cands = cands[:n]
        if len(cands) != n:
            # Recorded as a failed request (see api), not a crash: the other utterances go on.
            raise RequestFailed(f"asked for {n} choices, the server returned {len(cands)}", attempts=1)
        if any(c.token_logprobs is None for c in cands):  # without log-probabilities a choice's length is unknown
            share_gen_tokens(cands, u.gen_tokens, n_returned)
        return cands, u

    def _first_token_top(
        self, client: ChatClient, request: AudioRequest, prefix: str
    ) -> tuple[list[tuple[str, float]], CallUsage]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": self.messages(request, prefix),
            "max_completion_tokens": 1,
            "temperature": 0.0,
            "n": 1,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        if prefix:  # vLLM: continue the assistant turn instead of starting a new one
            body.update(continue_final_message=True, add_generation_prompt=False)
        response = client.create(body)
        try:
            logprobs = response["choices"][0].get("logprobs")
            content = logprobs.get("content") if logprobs is not None else None
            u = _usage(response)
        except (AttributeError, KeyError, TypeError, IndexError) as e:
            raise MalformedResponse(f"not a chat completion: {type(e).__name__}: {e}") from None
        if not content:
            raise ValueError(
                f"{self._what(request)}: the server returned no log-probabilities although they were "
                "requested; set logprobs: false in this model's params entry"
            )
        return [(t["token"], float(t["logprob"])) for t in content[0]["top_logprobs"]], u


# The answer is read as JSON, field by field, as the SDK's objects read it: a field the SDK typed as
# optional may be missing or null, one it required raises (KeyError), and either way a body that is
# no chat completion becomes a MalformedResponse above.
def _candidate(choice: dict[str, Any]) -> Candidate:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if logprobs is not None else None
    token_lps = [float(t["logprob"]) for t in content] if content else None
    message = choice["message"]
    cand = Candidate(
        text=message.get("content") or "",
        logprob=sum(token_lps) if token_lps is not None else None,
        token_logprobs=token_lps,
        n_tokens=len(token_lps) if token_lps is not None else 0,
        meta={"finish_reason": choice["finish_reason"]},
    )
    refusal = message.get("refusal")
    if refusal:  # the model declined: no content, a reason instead; it does not parse, like any non-answer
        cand.meta["refusal"] = refusal
    return cand


def _usage(response: dict[str, Any]) -> CallUsage:
    u = response.get("usage")
    if u is None:
        return CallUsage()
    details = u.get("prompt_tokens_details")
    audio = (details.get("audio_tokens") if details is not None else None) or 0
    return CallUsage(
        prompt_tokens=int(u["prompt_tokens"] or 0), audio_tokens=int(audio), gen_tokens=int(u["completion_tokens"] or 0)
    )
