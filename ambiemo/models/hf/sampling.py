"""Batch-invariant sampling for the transformers routes (and the upstream adapters that share it):
``sample_seed`` gives each candidate its own random stream, ``GumbelMaxSampler`` draws from it (see
``ambiemo.models.hf.engine``).

Sampled candidates do not depend on how the run happened. Candidate ``i`` of a request is drawn
from its own random stream, seeded by ``sample_seed`` from the seed, the model's identity, the
conversation, the audio, the temperature and top-p and ``i``: each step adds Gumbel noise from
that stream to the tempered, top-p-truncated logits and takes the argmax (the Gumbel-max trick,
an exact sample of the same distribution ``do_sample`` draws from). Batch size, which utterances
share a batch, manifest order and what a cache already held therefore change nothing, and
candidate ``i`` is the same whatever ``n`` is (a budget-4 run's samples are the first four of a
budget-8 run's). ``max_new_tokens`` is not part of the stream either: a longer cap continues the
same sample. What remains is arithmetic: padding changes the shapes of the matrix products, so
the log-probabilities of one candidate can differ in the last bits between batch sizes (bounded
in the tests on CPU); on a GPU, kernels may differ more, and in the rare case where two tokens'
noisy scores tie within that difference, the sampled token can differ too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from ambiemo.models.base import (
    AudioRequest,
    GenerationConfig,
)

log = logging.getLogger(__name__)


def sample_seed(identity: dict[str, Any], request: AudioRequest, config: GenerationConfig, index: int) -> int:
    """The seed of candidate ``index``'s random stream: a hash of everything the sample may depend
    on (seed, model identity, conversation, audio, temperature, top-p, index) and nothing else."""
    payload = {
        "seed": config.seed,
        "model": identity,
        "conversation": request.conversation(),
        "audio_sha1": request.audio_sha1(),
        "temperature": config.temperature,
        "top_p": config.top_p,
        "index": index,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class GumbelMaxSampler:
    """A transformers logits processor that turns greedy decoding into sampling with one random
    stream per row: tempered and top-p-truncated scores (transformers' own warpers) plus Gumbel
    noise drawn from the row's generator, whose argmax is a sample of the truncated softmax.

    Every row draws one noise vector per step, so a row's ``t``-th token depends on its own
    stream's ``t``-th draw only, never on the other rows."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: Any) -> None:
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if scores.shape[0] != len(self.generators):
            raise RuntimeError(f"sampler built for {len(self.generators)} rows got {scores.shape[0]}")
        scores = scores.float()
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        u = torch.stack(
            [
                torch.rand(scores.shape[1], generator=g, device=scores.device, dtype=torch.float32)
                for g in self.generators
            ]
        )
        tiny = torch.finfo(torch.float32).tiny
        gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-7)))
        return scores + gumbel
