"""Cache keys and stored values: what a key covers, and how candidates and option scores are stored.

A key is the SHA-256 of the canonical JSON of everything that can change a result (see the
package docstring); a value is canonical JSON whose SHA-256 is stored beside it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ambiemo.models.base import AudioRequest, Candidate, GenerationConfig, OptionScores

# Bump when the key or value layout changes: entries of another format are then ignored (and reported).
# 1: keys on the params key, no checksums. 2: keys on the identity without the params key, checksums.
CACHE_FORMAT = 2


def _json_default(obj: Any) -> Any:
    """Numpy scalars and arrays that adapters put into meta become plain JSON values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} in the generation cache: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace); floats round-trip exactly."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def checksum(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def key_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a model identity that enters cache keys: all of it but the params key."""
    return {k: v for k, v in identity.items() if k != "key"}


def identity_sha(identity: dict[str, Any]) -> str:
    """A stable name for a model identity: sha256 of its canonical JSON (params key left out)."""
    return hashlib.sha256(canonical_json(key_identity(identity)).encode()).hexdigest()


def make_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"format": CACHE_FORMAT, **payload}).encode()).hexdigest()


def generation_key(identity: dict[str, Any], request: AudioRequest, config: GenerationConfig, sample_index: int) -> str:
    """Key of candidate ``sample_index`` of ``config.n`` for one request."""
    return make_key(
        {
            "kind": "generate",
            "model": key_identity(identity),
            "conversation": request.conversation(),
            "audio_sha1": request.audio_sha1(),
            "config": config.as_dict(),
            "sample_index": sample_index,
        }
    )


def generation_keys(identity: dict[str, Any], request: AudioRequest, config: GenerationConfig) -> list[str]:
    """``[generation_key(identity, request, config, i) for i in range(config.n)]``, hashing the
    audio and serialising the conversation once instead of once per candidate."""
    base = {
        "kind": "generate",
        "model": key_identity(identity),
        "conversation": request.conversation(),
        "audio_sha1": request.audio_sha1(),
        "config": config.as_dict(),
    }
    return [make_key({**base, "sample_index": i}) for i in range(config.n)]


def scoring_key(identity: dict[str, Any], request: AudioRequest, options: Sequence[str], prefix: str) -> str:
    return make_key(
        {
            "kind": "score_options",
            "model": key_identity(identity),
            "conversation": request.conversation(),
            "audio_sha1": request.audio_sha1(),
            "options": list(options),
            "prefix": prefix,
        }
    )


def candidate_to_json(c: Candidate) -> str:
    return canonical_json(
        {
            "text": c.text,
            "logprob": c.logprob,
            "token_logprobs": c.token_logprobs,
            "n_tokens": c.n_tokens,
            "meta": c.meta,
        }
    )


def scores_to_json(scores: OptionScores) -> str:
    """An option-scoring result as stored: log-probabilities, prompt tokens, seconds (cost is not
    stored: a cache hit costs nothing)."""
    return canonical_json(
        {
            "logprobs": [float(x) for x in scores.logprobs],
            "prompt_tokens": None if scores.prompt_tokens is None else int(scores.prompt_tokens),
            "wall_s": float(scores.wall_s),
        }
    )


def scores_from_json(s: str) -> OptionScores | None:
    """A stored option-scoring result; None for an entry of the old layout (a bare list of
    log-probabilities, without usage), which the caller recomputes."""
    d = json.loads(s)
    if not isinstance(d, dict):
        return None
    return OptionScores(np.asarray(d["logprobs"], dtype=np.float64), d["prompt_tokens"], float(d["wall_s"]))


def candidate_from_json(s: str) -> Candidate:
    d = json.loads(s)
    return Candidate(
        text=d["text"], logprob=d["logprob"], token_logprobs=d["token_logprobs"], n_tokens=d["n_tokens"], meta=d["meta"]
    )
