"""Temporary stand-in for the closed model contract (issue 13 §2) until ``base.py`` carries it.

``AudioLanguageModel.generate`` / ``score_options`` become template methods that call the
adapter's ``_generate`` / ``_score_options`` and count usage once, from the candidates' ``meta``;
``identity`` drops the params key and gains ``version`` and ``settings_sha256``. The API routes
are written against that contract; this module gives it to them on a ``base.py`` that does not
have it yet. Delete it (and import from ``base``) once ``base.py`` defines ``OptionScores``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ambiemo.models.base import AudioLanguageModel, AudioRequest, Candidate, CapabilityError, GenerationConfig

COSMETIC_KEYS = frozenset(
    {
        "needs",
        "params_b",
        "family",
        "pricing",
        "concurrency",
        "api_key_env",
        "timeout_s",
        "retry",
        "batch_size",
        "base_url",
        "cache_dir",
    }
)
IDENTITY_KEYS = frozenset({"adapter", "checkpoint", "model_id", "revision"})


@dataclass
class OptionScores:
    logprobs: np.ndarray
    prompt_tokens: int | None = None
    wall_s: float = 0.0
    cost_usd: float = 0.0  # not in base.py's draft yet: asked for, so that label scoring's spend is counted


def settings_sha256(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ContractModel(AudioLanguageModel):
    version: ClassVar[int] = 1
    setting_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        key: str,
        model_id: str,
        revision: str | None = None,
        *,
        route: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(key, model_id, revision)
        self.route = route or type(self).__name__
        own = {k: v for k, v in (settings or {}).items() if k not in COSMETIC_KEYS and k not in IDENTITY_KEYS}
        self.settings = {**self.setting_defaults, **own}

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "version": type(self).version,
            "model_id": self.model_id,
            "revision": self.revision,
            "settings_sha256": settings_sha256(self.settings),
        }

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        requests = list(requests)
        if not requests:
            return []
        if config.mode == "beam" and not self.capabilities.beam_search:
            raise CapabilityError(
                f"model {self.key!r} ({self.route}) has no beam search; use mode='sample' or a strategy that samples"
            )
        for r in requests:
            r.audio_turn()
        results = self._generate(requests, config)
        for cands in results:
            self._count(cands)
        return results

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        if not self.capabilities.option_scoring:
            raise CapabilityError(f"model {self.key!r} ({self.route}) cannot score options")
        request.audio_turn()
        out = self._score_options(request, list(options), prefix)
        logprobs = np.asarray(out.logprobs, dtype=np.float64)
        self.usage.cost_usd += float(out.cost_usd or 0.0)
        if np.isnan(logprobs).any():
            self.usage.failures += 1
        else:
            self.usage.calls += 1
            self.usage.prompt_tokens += int(out.prompt_tokens or 0)
        return logprobs

    def _generate(self, requests: list[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        raise NotImplementedError

    def _score_options(self, request: AudioRequest, options: list[str], prefix: str) -> OptionScores:
        raise NotImplementedError

    def _count(self, cands: Sequence[Candidate]) -> None:
        calls: dict[Any, list[Candidate]] = {}
        for c in cands:
            calls.setdefault(c.meta.get("call", 0), []).append(c)
            self.usage.cost_usd += float(c.meta.get("cost_usd") or 0.0)
        for group in calls.values():
            if any("error" in c.meta for c in group):
                self.usage.failures += 1
                continue
            self.usage.calls += 1
            self.usage.prompt_tokens += int(group[0].meta.get("prompt_tokens") or 0)
            self.usage.gen_tokens += sum(int(c.n_tokens) for c in group)
