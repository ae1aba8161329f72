"""The model as a strategy sees it during a run: a failed request becomes a per-utterance ``ModelCallError``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ambiemo.core.errors import ModelCallError, check_candidates
from ambiemo.inference.wrapper import ModelWrapper
from ambiemo.models.base import AudioRequest, Candidate, GenerationConfig, OptionScores


class Guarded(ModelWrapper):
    """The model as a strategy sees it during a run: a failed request (a candidate whose ``meta`` has
    ``"error"``, NaN option scores) raises ``ModelCallError`` naming the utterance, so that the run
    records that utterance instead of mistaking the failure for a bug. Everything else is delegated."""

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        out = self.model.generate(requests, config)
        for request, cands in zip(requests, out, strict=True):
            check_candidates(f"model {self.key!r}", request.utt_id, cands)
        return out

    def score_options_many(
        self, requests: Sequence[AudioRequest], options: Sequence[str], prefix: str = ""
    ) -> list[OptionScores]:
        out = self.model.score_options_many(requests, options, prefix)
        for request, scores in zip(requests, out, strict=True):
            if np.isnan(np.asarray(scores.logprobs, dtype=float)).any():
                raise ModelCallError(
                    f"model {self.key!r} could not score options for {request.utt_id!r}", request.utt_id
                )
        return out
