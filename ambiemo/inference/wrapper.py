"""One base for models that wrap a model: the generation cache's ``CachedModel`` and the run's guard.

A wrapper keeps the wrapped model's contract: its key, identity, revision, sample rate, usage and
capabilities are the wrapped model's (read through, never copied, so usage counted by the wrapped
model is the wrapper's), and any adapter-specific attribute is looked up on it. A subclass
overrides ``generate`` and ``score_options_many``; ``score_options`` is the one-request form of
the latter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ambiemo.models import base


class ModelWrapper(base.AudioLanguageModel):
    """Forwards the contract to ``self.model`` (see the module docstring)."""

    # Attributes of the wrapper itself: never looked up on the wrapped model.
    OWN: frozenset[str] = frozenset({"model"})

    def __init__(self, model: base.AudioLanguageModel) -> None:
        # Deliberately no super().__init__: usage, identity and capabilities are the wrapped model's.
        self.model = model

    key = property(lambda self: self.model.key)  # type: ignore[assignment]
    model_id = property(lambda self: self.model.model_id)  # type: ignore[assignment]
    revision = property(lambda self: self.model.revision)  # type: ignore[assignment]
    sample_rate = property(lambda self: self.model.sample_rate)  # type: ignore[assignment]

    @property  # type: ignore[override]
    def usage(self) -> base.Usage:
        return self.model.usage

    @property  # type: ignore[override]
    def capabilities(self) -> base.Capabilities:
        return self.model.capabilities

    @property
    def identity(self) -> dict[str, Any]:
        return self.model.identity

    def __getattr__(self, name: str) -> Any:
        # Anything else (adapter-specific attributes) comes from the wrapped model.
        if name in type(self).OWN:
            raise AttributeError(name)
        return getattr(self.model, name)

    def generate(
        self, requests: Sequence[base.AudioRequest], config: base.GenerationConfig
    ) -> list[list[base.Candidate]]:
        return self.model.generate(requests, config)

    def score_options(self, request: base.AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        return self.score_options_many([request], options, prefix)[0].logprobs

    def score_options_many(
        self, requests: Sequence[base.AudioRequest], options: Sequence[str], prefix: str = ""
    ) -> list[base.OptionScores]:
        return self.model.score_options_many(requests, options, prefix)
