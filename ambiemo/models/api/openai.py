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
"""

from __future__ import annotations

import os
from typing import Any

from ambiemo.models import register_model
from ambiemo.models.api.client import ApiModel, CallUsage, request_wav, share_gen_tokens
from ambiemo.models.api.faults import ConfigurationError, MalformedResponse, RequestFailed
from ambiemo.models.api.keys import api_key_from_env
from ambiemo.models.base import AudioRequest, Candidate, Capabilities, GenerationConfig


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
            needs = f"{where}, extra: api"
        else:
            names = spec.get("api_key_env", list(cls.default_key_env))
            needs = f"{' or '.join([names] if isinstance(names, str) else names)}, extra: api"
        return Capabilities(logprobs=logprobs, beam_search=beam, option_scoring=logprobs, needs=needs)

    def _key(self) -> str | None:
        if self.is_openai:
            return api_key_from_env(self.key_names, self.key)
        if not all(self.base_urls) and not os.environ.get("OPENAI_BASE_URL"):
            raise ConfigurationError(
                f"model {self.key!r} ({self.route}) needs the server's URL: set base_url in "
                "its params entry (e.g. http://localhost:8000/v1, or a list for a pool) or OPENAI_BASE_URL"
            )
        # A vLLM server started without --api-key accepts any key; the SDK insists on one.
        return next((os.environ[n] for n in self.key_names if os.environ.get(n)), None)

    def _url(self, base_url: str | None) -> str | None:
        return base_url or os.environ.get("OPENAI_BASE_URL") or None

    def _make_client(self, base_url: str | None) -> Any:
        try:
            import openai
        except ImportError as e:
            raise ImportError(f"model {self.key!r} needs the openai package: pip install -e '.[api]'") from e
        # max_retries=0: api.call_with_retries is the one retry loop.
        return openai.OpenAI(
            api_key=self._secret or "EMPTY", base_url=self._url(base_url), timeout=self.timeout_s, max_retries=0
        )

    def _health(self, base_url: str) -> bool:
        """vLLM answers ``GET /health`` with 200 once the model is loaded; other OpenAI-compatible
        servers at least list their models at ``/v1/models``. The standard library's client, without
        the environment's proxies: importing httpx for two GETs was 0.2 s of the command's start-up
        (the SDK carries its own HTTP client)."""
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
        self, client: Any, request: AudioRequest, config: GenerationConfig, n: int, seed: int
    ) -> tuple[list[Candidate], CallUsage]:
        kwargs: dict[str, Any] = {
            "model": self.model_id,
            "messages": [],  # sent as is through extra_body (see _create)
            "max_completion_tokens": config.max_new_tokens,
            "seed": seed,
        }
        if config.mode == "greedy":
            kwargs.update(temperature=0.0, n=1)
        elif config.mode == "sample":
            kwargs.update(temperature=config.temperature, top_p=config.top_p, n=n)
        else:  # beam, on a vLLM server: it returns num_beams beams; the best n are kept
            kwargs.update(temperature=0.0, n=config.num_beams, extra_body={"use_beam_search": True})
        if self.capabilities.logprobs:
            kwargs["logprobs"] = True
        response = _create(client, kwargs, self.messages(request))
        try:
            u = _usage(response)
            cands = [_candidate(choice) for choice in response.choices]
        except (AttributeError, TypeError, ValueError) as e:
            raise MalformedResponse(f"not a chat completion: {type(e).__name__}: {e}") from None
        for c in cands:  # the name the server answered under (ApiModel checks it against model_id)
            c.meta["served_model"] = getattr(response, "model", None)
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
        self, client: Any, request: AudioRequest, prefix: str
    ) -> tuple[list[tuple[str, float]], CallUsage]:
        kwargs: dict[str, Any] = {
            "model": self.model_id,
            "messages": [],
            "max_completion_tokens": 1,
            "temperature": 0.0,
            "n": 1,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        if prefix:  # vLLM: continue the assistant turn instead of starting a new one
            kwargs["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        response = _create(client, kwargs, self.messages(request, prefix))
        try:
            content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
            u = _usage(response)
        except (AttributeError, TypeError, IndexError) as e:
            raise MalformedResponse(f"not a chat completion: {type(e).__name__}: {e}") from None
        if not content:
            raise ValueError(
                f"{self._what(request)}: the server returned no log-probabilities although they were "
                "requested; set logprobs: false in this model's params entry"
            )
        return [(t.token, float(t.logprob)) for t in content[0].top_logprobs], u


def _create(client: Any, kwargs: dict[str, Any], messages: list[dict[str, Any]]) -> Any:
    """``chat.completions.create`` with the messages merged into the body as they are. The SDK
    otherwise walks them against its typed schema, which cost about 12 ms of CPU per request (most of
    a request's client CPU), and at 48 requests in flight on a small machine that bounded a pool; the
    JSON sent is the same."""
    return client.chat.completions.create(
        **{**kwargs, "extra_body": {**kwargs.get("extra_body", {}), "messages": messages}}
    )


def _candidate(choice: Any) -> Candidate:
    content = choice.logprobs.content if choice.logprobs is not None else None
    token_lps = [float(t.logprob) for t in content] if content else None
    cand = Candidate(
        text=choice.message.content or "",
        logprob=sum(token_lps) if token_lps is not None else None,
        token_logprobs=token_lps,
        n_tokens=len(token_lps) if token_lps is not None else 0,
        meta={"finish_reason": choice.finish_reason},
    )
    refusal = getattr(choice.message, "refusal", None)
    if refusal:  # the model declined: no content, a reason instead; it does not parse, like any non-answer
        cand.meta["refusal"] = refusal
    return cand


def _usage(response: Any) -> CallUsage:
    u = getattr(response, "usage", None)
    if u is None:
        return CallUsage()
    details = getattr(u, "prompt_tokens_details", None)
    audio = getattr(details, "audio_tokens", None) or 0
    return CallUsage(
        prompt_tokens=int(u.prompt_tokens or 0), audio_tokens=int(audio), gen_tokens=int(u.completion_tokens or 0)
    )
