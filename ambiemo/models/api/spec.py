"""The typed params entry of the API routes (``models.<key>`` with adapter ``openai-chat``,
``openai-compatible`` or ``gemini``): every key the routes read, its type, unknown keys refused.
Checked when the model is built (``ApiModel.__init__``), so the config layer imports no model code;
the shared keys (``adapter``, ``revision``, ``family``, ``params_b``, ``lifecycle`` ...) are checked
again by ``ambiemo.core.params``. Defaults stay where the routes apply them (``ApiModel``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: Literal["openai-chat", "openai-compatible", "gemini"]
    model_id: str = Field(min_length=1)
    revision: str | None = None
    family: str | None = None
    params_b: float | None = None
    params_active_b: float | None = None
    needs: str | None = None
    batch_size: int | None = Field(None, ge=1)
    lifecycle: dict[str, Any] | None = None  # schema: ambiemo.core.params.Lifecycle
    # the request
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=1)
    beam_search: bool | None = None  # openai-compatible only (vLLM's use_beam_search)
    max_candidates_per_call: int | None = Field(None, ge=1)
    thinking_budget: int | None = Field(None, ge=0)  # gemini
    api_version: str | None = None  # gemini
    # where and how fast
    base_url: str | list[str] | None = None
    api_key_env: str | list[str] | None = None
    concurrency: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    retry: dict[str, float] | None = None  # checked by RetryPolicy.from_spec
    pricing: dict[str, float] | None = None  # checked by keys.cost_usd
    audio_tokens_per_s: float | None = Field(None, gt=0)  # ambiemo plan's estimate


def check_api_spec(key: str, spec: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming every bad key of ``models.<key>``."""
    try:
        ApiSpec.model_validate(spec)
    except ValidationError as e:
        problems = "; ".join(
            f"models.{key}.{'.'.join(str(x) for x in err['loc'])}: "
            + ("unknown key for an API model" if err["type"] == "extra_forbidden" else err["msg"])
            for err in e.errors()
        )
        raise ValueError(f"params.yaml: {problems}") from None
