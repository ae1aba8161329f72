"""Gemini through the google-genai SDK (route ``gemini``): Gemini 2.0 Flash, 2.5 Pro, ...

The clip goes as inline bytes (``inline_data`` with ``mime_type: audio/wav``, 16-bit PCM, as the
Gemini API documents audio under 20 MB) before the text of the turn ``AudioRequest.audio_turn``
names; system turns become ``system_instruction``, assistant turns ``model``
turns. Sampling sends ``candidate_count``, ``temperature``, ``top_p`` and ``seed``; greedy sends
``temperature: 0``. With ``logprobs: true`` in the params entry the request also sets
``response_logprobs`` (and ``logprobs``, the number of alternatives, for label scoring), and
each candidate carries the chosen tokens' log-probabilities.

Which models return log-probabilities depends on the model and on the backend: on the Gemini
Developer API, ``gemini-2.0-flash`` does and ``gemini-2.5-pro`` answered "Logprobs is not
enabled" (Vertex AI serves them for both), hence the defaults in params.yaml. There is no beam
search, and no assistant prefix for label scoring.

Thinking models (2.5) spend part of ``max_output_tokens`` on thoughts before answering;
``thinking_budget`` in the entry caps them and is added to ``max_new_tokens``, so a short
answer is not cut off by thinking. Thought tokens are billed as output (``cost_usd``) but are no
candidate's tokens.

Endpoint: the SDK's default, ``GOOGLE_GEMINI_BASE_URL``, or ``base_url`` in the entry (tests
point it at a local fake); ``api_version`` (e.g. ``v1beta``) likewise. Key: ``GEMINI_API_KEY``
or ``GOOGLE_API_KEY``.
"""

from __future__ import annotations

from typing import Any

from ambiemo.models import register_model
from ambiemo.models.api.client import ApiModel, CallUsage, request_wav, share_gen_tokens
from ambiemo.models.api.faults import MalformedResponse, RequestFailed
from ambiemo.models.api.keys import api_key_from_env
from ambiemo.models.base import AudioRequest, Candidate, GenerationConfig


@register_model("gemini")
class GeminiModel(ApiModel):
    default_key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

    def __init__(self, key: str, spec: dict[str, Any], route: str) -> None:
        super().__init__(key, spec, route)
        self.api_version: str | None = spec.get("api_version")
        budget = spec.get("thinking_budget")
        self.thinking_budget: int | None = int(budget) if budget is not None else None

    def _key(self) -> str | None:
        return api_key_from_env(self.key_names, self.key)

    def _make_client(self, base_url: str | None) -> Any:
        try:
            from google import genai
            from google.genai import types
        except ImportError as e:
            raise ImportError(f"model {self.key!r} needs the google-genai package: pip install -e '.[api]'") from e
        http_options = types.HttpOptions(
            base_url=base_url,
            api_version=self.api_version,
            timeout=int(self.timeout_s * 1000),
            # One attempt per SDK call: api.call_with_retries is the one retry loop.
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(api_key=self._secret, http_options=http_options)

    def contents(self, request: AudioRequest) -> tuple[str | None, list[Any]]:
        """``(system_instruction, contents)`` for ``request``."""
        from google.genai import types

        turn = request.audio_turn()
        audio = types.Part.from_bytes(data=request_wav(request), mime_type="audio/wav")
        system = [m.text for m in request.messages if m.role == "system"]
        contents = []
        for i, m in enumerate(request.messages):
            if m.role == "system":
                continue
            parts = [audio] if i == turn else []
            if m.text:
                parts.append(types.Part.from_text(text=m.text))
            contents.append(types.Content(role="model" if m.role == "assistant" else "user", parts=parts))
        return ("\n\n".join(system) if system else None), contents

    def _config(self, system: str | None, max_new_tokens: int, **kwargs: Any) -> Any:
        from google.genai import types

        extra: dict[str, Any] = {}
        if self.thinking_budget is not None:
            extra["thinking_config"] = types.ThinkingConfig(thinking_budget=self.thinking_budget)
            max_new_tokens += self.thinking_budget
        return types.GenerateContentConfig(
            system_instruction=system, max_output_tokens=max_new_tokens, **extra, **kwargs
        )

    def _generate_once(
        self, client: Any, request: AudioRequest, config: GenerationConfig, n: int, seed: int
    ) -> tuple[list[Candidate], CallUsage]:
        system, contents = self.contents(request)
        if config.mode == "greedy":
            sampling: dict[str, Any] = {"temperature": 0.0, "candidate_count": 1}
        else:
            sampling = {"temperature": config.temperature, "top_p": config.top_p, "candidate_count": n}
        if self.capabilities.logprobs:
            sampling["response_logprobs"] = True
        gen_config = self._config(system, config.max_new_tokens, seed=seed, **sampling)
        response = client.models.generate_content(model=self.model_id, contents=contents, config=gen_config)
        try:
            u = _usage(response)
            cands = [_candidate(c) for c in (response.candidates or [])]
        except (AttributeError, TypeError, ValueError) as e:
            raise MalformedResponse(f"not a GenerateContentResponse: {type(e).__name__}: {e}") from None
        if len(cands) != n:
            # Gemini drops candidates (all of them when it blocks the prompt); recorded as a failed request.
            feedback = getattr(response, "prompt_feedback", None)
            block = getattr(feedback, "block_reason", None)
            why = f" (prompt blocked: {getattr(block, 'value', block)})" if block else ""
            raise RequestFailed(f"asked for {n} candidates, Gemini returned {len(cands)}{why}", attempts=1)
        for c in cands:
            c.meta["served_model"] = getattr(response, "model_version", None)  # checked against model_id
        share_gen_tokens([c for c in cands if c.n_tokens == 0 and c.text], u.gen_tokens, n)
        return cands, u

    def _first_token_top(
        self, client: Any, request: AudioRequest, prefix: str
    ) -> tuple[list[tuple[str, float]], CallUsage]:
        system, contents = self.contents(request)
        gen_config = self._config(
            system, 1, temperature=0.0, candidate_count=1, response_logprobs=True, logprobs=self.top_logprobs
        )
        response = client.models.generate_content(model=self.model_id, contents=contents, config=gen_config)
        result = response.candidates[0].logprobs_result if response.candidates else None
        if result is None or not result.top_candidates:
            raise ValueError(
                f"{self._what(request)}: Gemini returned no log-probabilities although they were "
                "requested; set logprobs: false in this model's params entry"
            )
        top = result.top_candidates[0].candidates or []
        return [(t.token or "", float(t.log_probability)) for t in top if t.log_probability is not None], _usage(
            response
        )


def _candidate(c: Any) -> Candidate:
    parts = (c.content.parts if c.content is not None else None) or []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    chosen = c.logprobs_result.chosen_candidates if c.logprobs_result is not None else None
    token_lps = [float(t.log_probability) for t in chosen] if chosen else None
    finish = c.finish_reason.value if hasattr(c.finish_reason, "value") else c.finish_reason
    return Candidate(
        text=text,
        logprob=sum(token_lps) if token_lps is not None else None,
        token_logprobs=token_lps,
        n_tokens=len(token_lps) if token_lps is not None else int(c.token_count or 0),
        meta={"finish_reason": finish},
    )


def _usage(response: Any) -> CallUsage:
    m = getattr(response, "usage_metadata", None)
    if m is None:
        return CallUsage()
    audio = sum(
        d.token_count or 0
        for d in (m.prompt_tokens_details or [])
        if str(getattr(d.modality, "value", d.modality)).upper() == "AUDIO"
    )
    return CallUsage(
        prompt_tokens=int(m.prompt_token_count or 0),
        audio_tokens=int(audio),
        gen_tokens=int(m.candidates_token_count or 0),
        thought_tokens=int(m.thoughts_token_count or 0),
    )
