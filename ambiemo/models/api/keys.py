"""Keys and prices of the API routes: keys come from environment variables only, prices from the
params entry (USD per million tokens)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ambiemo.models.api.faults import ConfigurationError


def cost_usd(pricing: dict[str, float] | None, *, text_in: int, audio_in: int, out: int) -> float:
    """Cost from ``pricing`` (USD per million tokens: ``input_per_mtok``, ``audio_input_per_mtok``
    (defaults to the text rate), ``output_per_mtok``). No pricing: 0."""
    if not pricing:
        return 0.0
    unknown = set(pricing) - {"input_per_mtok", "audio_input_per_mtok", "output_per_mtok"}
    if unknown:
        raise ValueError(
            f"unknown pricing fields {sorted(unknown)}; use input_per_mtok, audio_input_per_mtok, "
            "output_per_mtok (USD per million tokens)"
        )
    p_in = float(pricing.get("input_per_mtok", 0.0))
    p_audio = float(pricing.get("audio_input_per_mtok", p_in))
    p_out = float(pricing.get("output_per_mtok", 0.0))
    return (text_in * p_in + audio_in * p_audio + out * p_out) / 1e6


def api_key_names(spec: dict[str, Any], default: Sequence[str]) -> list[str]:
    """The environment variables that may hold the key; refuses a key written into params."""
    for field in ("api_key", "key", "token"):
        if field in spec:
            raise ValueError(
                f"params.yaml model entry has {field!r}: never write API keys into files. Remove it "
                "and export the key in an environment variable named by 'api_key_env' "
                f"(default {default[0] if default else 'none'})"
            )
    names = spec.get("api_key_env", list(default))
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def api_key_from_env(names: Sequence[str], model_key: str) -> str:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise ConfigurationError(
        f"model {model_key!r} needs an API key in the environment variable "
        f"{' or '.join(names)}; export it (keys are never read from files)"
    )
