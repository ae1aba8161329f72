"""The contract every audio-language model adapter implements.

A strategy needs three things from a model: several candidate answers for one request,
each with its log-likelihood; the log-probability of each of a few short options (label
words) as the answer; and an account of what that cost. Everything model-specific (chat
template, audio placeholder tokens, feature extraction, provider API) stays behind this
contract.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn of a conversation. ``audio=True`` marks the user turn that carries the clip."""

    role: Role
    text: str
    audio: bool = False


@dataclass
class AudioRequest:
    """One utterance's audio plus the conversation to run on it.

    ``waveform`` is mono float32 at ``sample_rate``; adapters resample to their own rate.
    Earlier assistant turns are allowed (the verifier needs them).
    """

    utt_id: str
    waveform: np.ndarray
    sample_rate: int
    messages: list[Message]

    def audio_sha1(self) -> str:
        """Content hash of the audio, part of every cache key."""
        h = hashlib.sha1()
        h.update(str(self.sample_rate).encode())
        h.update(np.ascontiguousarray(self.waveform, dtype=np.float32).tobytes())
        return h.hexdigest()

    def conversation(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.messages]

    def audio_turn(self) -> int:
        """Index of the turn that carries the clip: the one marked ``audio=True``, else the first
        user turn (the usual ALM prompt: audio, then the instruction)."""
        marked = [i for i, m in enumerate(self.messages) if m.audio]
        if len(marked) > 1:
            raise ValueError(
                f"utterance {self.utt_id!r}: {len(marked)} turns are marked audio=True; one clip per request"
            )
        if not marked:
            marked = [i for i, m in enumerate(self.messages) if m.role == "user"][:1]
        if not marked:
            raise ValueError(f"utterance {self.utt_id!r}: the conversation has no user turn to attach the audio to")
        return marked[0]


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. ``mode`` is greedy (n must be 1), sample, or beam (n <= num_beams)."""

    mode: Literal["greedy", "sample", "beam"] = "greedy"
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.mode == "greedy" and self.n != 1:
            raise ValueError("greedy decoding gives one candidate; use mode='sample' or 'beam' for n > 1")
        if self.mode == "beam" and self.num_beams < self.n:
            raise ValueError(f"beam search with num_beams={self.num_beams} cannot return n={self.n} candidates")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """One generated answer.

    ``logprob`` is the summed log-probability of the generated tokens (None where the
    route gives none); ``token_logprobs`` the per-token values.
    """

    text: str
    logprob: float | None
    token_logprobs: list[float] | None
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    def mean_logprob(self) -> float | None:
        if self.logprob is None:
            return None
        return self.logprob / max(self.n_tokens, 1)


@dataclass
class Usage:
    """What a model has cost so far. Cache hits count in ``cache_hits``, not in ``calls``."""

    calls: int = 0
    prompt_tokens: int = 0
    gen_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    failures: int = 0

    def add(self, other: Usage) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Capabilities:
    """What a route can do; strategies refuse models that lack what they need."""

    logprobs: bool = True  # summed log-likelihood of generated text
    beam_search: bool = True
    option_scoring: bool = True  # log p(option | request) without generation
    needs: str = ""  # human-readable: "GPU 16 GB", "OPENAI_API_KEY", "extra: api"


class CapabilityError(RuntimeError):
    """A strategy asked a model for something its route cannot do."""


class AudioLanguageModel(abc.ABC):
    """Base class of all adapters. Subclasses set ``capabilities`` and implement the two calls."""

    capabilities: Capabilities = Capabilities()
    sample_rate: int = 16_000

    def __init__(self, key: str, model_id: str, revision: str | None = None) -> None:
        self.key = key
        self.model_id = model_id
        self.revision = revision
        self.usage = Usage()

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies this model's outputs in caches and provenance."""
        return {"key": self.key, "model_id": self.model_id, "revision": self.revision, "route": type(self).__name__}

    @abc.abstractmethod
    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        """Return ``config.n`` candidates for each request, in request order."""

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        """Return ``log p(prefix + option | request)`` for each option (summed over its tokens)."""
        raise CapabilityError(f"model {self.key!r} ({type(self).__name__}) cannot score options")

    def require(self, capability: str, strategy: str) -> None:
        if not getattr(self.capabilities, capability):
            raise CapabilityError(
                f"strategy {strategy!r} needs {capability.replace('_', ' ')}, which model {self.key!r} "
                f"({type(self).__name__}) does not provide; choose another strategy or model"
            )
