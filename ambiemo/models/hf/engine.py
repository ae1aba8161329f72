"""The transformers engine of the native routes (Qwen2-Audio, the Qwen2.5-Omni thinker, Audio
Flamingo 3, Qwen3-Omni, Phi-4, Ultravox, the cascade): ``TransformersALM``. The audio base class is
in ``ambiemo.models.hf.audio_base``, the adapters each in their own module.

The native adapters are a Whisper-style audio encoder whose frames replace a run of audio placeholder
tokens in a ChatML prompt of a causal LM. They differ only in the placeholder token, how many
placeholders one clip becomes, and how the features are batched; ``NativeAudioALM`` holds the
rest, and ``TransformersALM`` (its base, shared with the cascade) holds what any transformers
causal LM needs:

- batched, length-sorted generation (left padding) with ``num_return_sequences`` candidates per
  prompt from one prefill, by greedy decoding, sampling or beam search;
- per-token log-probabilities of each candidate under the model (the raw logits at temperature 1,
  so that likelihoods are comparable across decoding settings), via ``compute_transition_scores``
  with ``beam_indices`` for beams; a candidate's tokens (``meta["token_ids"]``) run up to and
  including its end-of-turn token;
- ``score_options``: ``log p(prefix + option | prompt)`` summed over the option's tokens: the prompt
  and its audio run once, then all options in one batched pass over its repeated KV cache;
- audio features computed once per utterance (memoised by the audio's content hash), so several
  prompts on one clip (prompt ensembles, verifiers) reuse them;
- ``torch.inference_mode``; ``dtype`` and ``device_map`` from the spec on a GPU, float32 on CPU.

Decoding is exactly what ``GenerationConfig`` says: the checkpoint's own sampling defaults
(``top_k``, repetition penalty) are not applied. Weights load on the first real call, so a fully
cached rerun never loads them.

Sampled candidates do not depend on how the run happened (``ambiemo.models.hf.sampling``).

CUDA out of memory halves the batch and tries again, down to one utterance; an utterance that
does not fit alone is recorded as failed (its candidates carry ``meta["error"]``) and the run
goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    Capabilities,
    GenerationConfig,
    OptionScores,
)
from ambiemo.models.hf.parts import DEFAULT_BATCH_SIZE, DTYPES, Encoded
from ambiemo.models.hf.sampling import GumbelMaxSampler, sample_seed

log = logging.getLogger(__name__)


class TransformersALM(AudioLanguageModel):
    """Generation and option scoring for any transformers causal LM behind ``_encode``.

    Subclasses implement ``_load`` (set ``self.model`` and ``self.tokenizer``) and ``_encode``
    (an ``AudioRequest`` to an ``Encoded`` prompt).
    """

    capabilities = Capabilities(logprobs=True, beam_search=True, option_scoring=True, needs="")
    shared_prefill = True  # one prefill per prompt for n > 1 (see _generate_batch)
    version = 2  # 2: per-candidate random streams (GumbelMaxSampler) instead of one per batch
    setting_defaults = {"dtype": "auto", "device_map": "auto"}

    def __init__(
        self,
        key: str,
        model_id: str,
        revision: str | None = None,
        *,
        dtype: str = "auto",
        device_map: str | dict | None = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        needs: str = "",
        settings: dict[str, Any] | None = None,
        route: str | None = None,
    ) -> None:
        settings = {**(settings or {}), "dtype": dtype, "device_map": device_map}
        super().__init__(key, model_id, revision, route=route, settings=settings, needs=needs)
        if dtype not in DTYPES:
            raise ValueError(f"model {key!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if batch_size < 1:
            raise ValueError(f"model {key!r}: batch_size must be >= 1, got {batch_size}")
        self.dtype = dtype
        self.device_map = device_map
        self.batch_size = batch_size
        self.model: Any = None
        self.tokenizer: Any = None

    # ----------------------------------------------------------------------------- loading
    def _load(self) -> None:
        raise NotImplementedError

    def _ensure_loaded(self) -> None:
        if self.model is None:
            self._load()
            self.model.eval()

    def _load_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` kwargs: the spec's dtype and device_map on a GPU, float32 on CPU."""
        import torch

        if not torch.cuda.is_available():
            return {"dtype": torch.float32}  # bf16 matmuls on CPU are slow and gain nothing here
        kw: dict[str, Any] = {"dtype": "auto" if self.dtype == "auto" else getattr(torch, self.dtype)}
        if self.device_map is not None:
            kw["device_map"] = self.device_map
        return kw

    # ----------------------------------------------------------------------------- encoding
    def _encode(self, request: AudioRequest) -> Encoded:
        raise NotImplementedError

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos)

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.model.generation_config.pad_token_id
        return pad if pad is not None else self._eos_ids()[0]

    def _collate(self, rows: Sequence[Encoded], *, pad_left: bool) -> dict[str, Any]:
        """Pad token ids (left for generation, right for scoring) and concatenate audio tensors."""
        import torch

        width = max(len(r.input_ids) for r in rows)
        pad = self._pad_id()
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.input_ids)
            sl = slice(width - n, width) if pad_left else slice(0, n)
            ids[i, sl] = torch.tensor(r.input_ids, dtype=torch.long)
            mask[i, sl] = 1
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        for name in rows[0].features:
            batch[name] = torch.cat([r.features[name] for r in rows], dim=0)
        device = self.model.device
        float_dtype = next(self.model.parameters()).dtype
        return {
            k: v.to(device=device, dtype=float_dtype) if v.is_floating_point() else v.to(device)
            for k, v in batch.items()
        }

    # ----------------------------------------------------------------------------- generation
    def _hf_generation_config(self, config: GenerationConfig):
        from transformers import GenerationConfig as HFGenerationConfig

        common = {
            "max_new_tokens": config.max_new_tokens,
            "num_return_sequences": config.n,
            "eos_token_id": self._eos_ids(),
            "pad_token_id": self._pad_id(),
            "bos_token_id": self.model.generation_config.bos_token_id,
            "return_dict_in_generate": True,
            # Raw logits only: the per-token log-probs are computed from them (processed scores
            # would be a second vocabulary-sized copy per step that nothing reads).
            "output_logits": True,
        }
        if config.mode in ("greedy", "sample"):
            # Sampling is greedy decoding over GumbelMaxSampler, one row per candidate (see _generate_batch).
            return HFGenerationConfig(do_sample=False, num_beams=1, **{**common, "num_return_sequences": 1})
        return HFGenerationConfig(do_sample=False, num_beams=config.num_beams, length_penalty=1.0, **common)

    def _generate(self, requests: list[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        import torch

        self._ensure_loaded()
        encoded = [self._encode(r) for r in requests]
        seeds = None
        if config.mode == "sample":
            identity = self.identity
            seeds = [[sample_seed(identity, r, config, k) for k in range(config.n)] for r in requests]
        # Length-sorted batches waste the least padding; results go back in request order.
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i].input_ids))
        results: list[list[Candidate]] = [[] for _ in requests]
        size = self.batch_size
        while order:
            idx, order = order[:size], order[size:]
            try:
                cands = self._run_batch([encoded[i] for i in idx], config, seeds and [seeds[i] for i in idx])
            except torch.cuda.OutOfMemoryError as e:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if len(idx) > 1:  # halve the batch and try these utterances again
                    size = max(1, len(idx) // 2)
                    log.warning("model %r: CUDA out of memory at batch size %d; trying %d", self.key, len(idx), size)
                    order = idx + order
                    continue
                reason = f"CUDA out of memory with the utterance alone (batch size 1): {e}"
                log.warning("model %r utterance %r failed: %s", self.key, requests[idx[0]].utt_id, reason)
                results[idx[0]] = Candidate.failed(config.n, reason, prompt_tokens=len(encoded[idx[0]].input_ids))
                continue
            for j, i in enumerate(idx):
                results[i] = cands[j * config.n : (j + 1) * config.n]
        return results

    def _run_batch(
        self, rows: list[Encoded], config: GenerationConfig, seeds: list[list[int]] | None
    ) -> list[Candidate]:
        """Generate for one batch of prompts: ``config.n`` candidates per prompt, prompt-major."""
        import torch

        batch = self._collate(rows, pad_left=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self._generate_batch(batch, rows, config, seeds)
            # float32 before the softmax: bf16 logits on a GPU would round the log-probs.
            token_lp = self.model.compute_transition_scores(
                out.sequences,
                tuple(step.float() for step in out.logits),
                getattr(out, "beam_indices", None),
                normalize_logits=True,
            )
        wall = time.perf_counter() - t0
        cands = self._candidates(out.sequences[:, batch["input_ids"].shape[1] :], token_lp, out)
        per_cand_wall = wall / max(len(cands), 1)
        for j, c in enumerate(cands):
            c.meta.update(prompt_tokens=len(rows[j // config.n].input_ids), wall_s=per_cand_wall)
        return cands

    def _generate_batch(
        self, batch: dict[str, Any], rows: list[Encoded], config: GenerationConfig, seeds: list[list[int]] | None
    ):
        """``generate`` with one prefill per prompt, however many candidates or beams.

        transformers repeats every prompt (and its audio) ``num_return_sequences`` or
        ``num_beams`` times before the first forward pass. Instead the prompt minus its last
        token is run once, its KV cache repeated per candidate, and ``generate`` continues from
        there (it feeds only the uncached last token, so the audio is not needed again).

        Sampling runs as greedy decoding over ``GumbelMaxSampler`` with the prompts repeated
        ``n`` times here, one row per candidate, each with its own random stream.
        """
        from transformers import LogitsProcessorList

        hf_config = self._hf_generation_config(config)
        extra: dict[str, Any] = {}
        if config.mode == "sample":
            assert seeds is not None
            device = batch["input_ids"].device
            flat = [s for per_prompt in seeds for s in per_prompt]
            extra["logits_processor"] = LogitsProcessorList(
                [GumbelMaxSampler(flat, config.temperature, config.top_p, device)]
            )
        expand = config.num_beams if config.mode == "beam" else config.n
        if expand == 1:
            return self.model.generate(**batch, generation_config=hf_config, **extra)
        if not self.shared_prefill:
            if config.mode == "beam":
                return self.model.generate(**batch, generation_config=hf_config)
            repeated = self._collate([r for r in rows for _ in range(config.n)], pad_left=True)
            return self.model.generate(**repeated, generation_config=hf_config, **extra)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        # The position ids generate() derives for left-padded rows, so both halves agree.
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        prefill = self.model(
            **{**batch, "input_ids": ids[:, :-1], "attention_mask": mask[:, :-1]},
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = prefill.cache
        cache.batch_repeat_interleave(expand)
        if config.mode == "sample":  # one row per candidate: the processor's streams line up with them
            ids, mask = ids.repeat_interleave(expand, dim=0), mask.repeat_interleave(expand, dim=0)
        return self.model.generate(
            input_ids=ids, attention_mask=mask, cache=cache, generation_config=hf_config, **extra
        )

    def _candidates(self, generated, token_lp, out) -> list[Candidate]:
        """Cut each sequence after its first end-of-turn token and sum its log-probabilities."""
        eos = set(self._eos_ids())
        beam_mask = None
        if getattr(out, "beam_indices", None) is not None:
            beam_mask = (out.beam_indices[:, : token_lp.shape[1]] >= 0).cpu().numpy()
        gen = generated.cpu().numpy()
        lps = token_lp.float().cpu().numpy()
        cands = []
        for r in range(gen.shape[0]):
            length = min(gen.shape[1], lps.shape[1])
            if beam_mask is not None:
                length = min(length, int(beam_mask[r].sum()))
            stop = next((t for t in range(length) if int(gen[r, t]) in eos), None)
            n = stop + 1 if stop is not None else length
            tokens = gen[r, :n]
            lp = [float(x) for x in lps[r, :n]]
            text_ids = tokens[:-1] if stop is not None else tokens
            text = self.tokenizer.decode(text_ids, skip_special_tokens=True).strip()
            cands.append(
                Candidate(
                    text=text,
                    logprob=float(np.sum(lp)),
                    token_logprobs=lp,
                    n_tokens=int(n),
                    meta={"finished": stop is not None, "token_ids": [int(t) for t in tokens]},
                )
            )
        return cands

    # ----------------------------------------------------------------------------- option scoring
    def _option_ids(self, prefix: str, option: str) -> list[int]:
        """The continuation's tokens, tokenised on their own (the prompt ends at a turn boundary)."""
        return self.tokenizer(prefix + option, add_special_tokens=False)["input_ids"]

    def _score_options(self, request: AudioRequest, options: list[str], prefix: str) -> OptionScores:
        import torch

        self._ensure_loaded()
        t0 = time.perf_counter()
        enc = self._encode(request)
        conts = [self._option_ids(prefix, o) for o in options]
        empty = [o for o, c in zip(options, conts, strict=True) if not c]
        if empty:
            raise ValueError(f"utterance {request.utt_id!r}: options {empty!r} (with prefix {prefix!r}) have no tokens")
        try:
            with torch.inference_mode():
                logp = (
                    self._continuation_logprobs(enc, conts)
                    if self.shared_prefill
                    else self._repeated_logprobs(enc, conts)
                )
        except torch.cuda.OutOfMemoryError as e:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("model %r utterance %r: option scoring ran out of CUDA memory: %s", self.key, request.utt_id, e)
            return OptionScores(np.full(len(options), np.nan), len(enc.input_ids), time.perf_counter() - t0)
        scores = np.empty(len(options))
        for i, c in enumerate(conts):
            tok = torch.tensor(c, device=logp.device)
            scores[i] = float(logp[i, torch.arange(len(c), device=logp.device), tok].sum())
        return OptionScores(scores, len(enc.input_ids), time.perf_counter() - t0)

    def _continuation_logprobs(self, enc: Encoded, conts: list[list[int]]):
        """Log-softmax rows predicting each continuation token (``[option, t, vocab]``), the prompt
        (and its audio) run once: its KV cache is repeated per option and the options run after it."""
        import torch

        prompt = self._collate([enc], pad_left=False)
        out = self.model(**prompt, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # predicts every option's first token
        width = max(len(c) for c in conts)
        if width == 1:
            return first.expand(len(conts), 1, -1)
        cache = out.cache
        cache.batch_repeat_interleave(len(conts))
        p = prompt["input_ids"].shape[1]
        ids = torch.full((len(conts), width - 1), self._pad_id(), dtype=torch.long)
        for i, c in enumerate(conts):  # right padding: pads come after a row's tokens and see nothing of them
            ids[i, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
        device = prompt["input_ids"].device
        rest = self.model(
            input_ids=ids.to(device),
            attention_mask=torch.ones((len(conts), p + width - 1), dtype=torch.long, device=device),
            position_ids=torch.arange(p, p + width - 1, device=device).expand(len(conts), -1),
            cache=cache,
        ).logits
        rest = torch.log_softmax(rest.float(), dim=-1)
        return torch.cat([first.expand(len(conts), 1, -1), rest], dim=1)

    def _repeated_logprobs(self, enc: Encoded, conts: list[list[int]]):
        """The same rows from one forward pass over prompt + option per option (prompt repeated)."""
        import torch

        width = max(len(c) for c in conts)
        batch = self._collate([Encoded(enc.input_ids + c, enc.features) for c in conts], pad_left=False)
        # Right padding: every row's continuation starts at position p, so the last width + 1
        # positions' logits (from p - 1 on) predict all continuation tokens.
        logits = self.model(**batch, logits_to_keep=width + 1).logits[:, -(width + 1) : -1]
        return torch.log_softmax(logits.float(), dim=-1)
