"""Small shared parts of the transformers routes: an encoded prompt, a failed request's candidates,
where built weights live, and the defaults the engine applies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BATCH_SIZE = 8  # utterances per generate() call; candidates multiply it by n
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class Encoded:
    """One prompt ready for the model: token ids plus the audio tensors its placeholders consume.

    Each feature tensor's first dimension counts rows that belong to this prompt (one per clip,
    or one per 30 s window for Audio Flamingo 3); collating concatenates them in prompt order.
    """

    input_ids: list[int]
    features: dict[str, Any] = field(default_factory=dict)


def _resolve_cache_root(spec: dict[str, Any], kwargs: dict[str, Any]) -> Path:
    """Where built or converted weights live: kwargs ``cache_dir``, else spec, else the default."""
    from ambiemo.core.config import cache_dir

    chosen = kwargs.get("cache_dir") or spec.get("cache_dir")
    return Path(chosen) if chosen else cache_dir({})
