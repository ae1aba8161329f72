"""Audio-language models that transformers implements natively: Qwen2-Audio, the Qwen2.5-Omni
thinker, Audio Flamingo 3.

All three are a Whisper-style audio encoder whose frames replace a run of audio placeholder
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

CUDA out of memory halves the batch and tries again, down to one utterance; an utterance that
does not fit alone is recorded as failed (its candidates carry ``meta["error"]``) and the run
goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.models import register_model
from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    Capabilities,
    GenerationConfig,
    OptionScores,
    check_remote_code,
)
from ambiemo.models.hf.tiny import (
    AF3_TEMPLATE,
    CHATML_SPECIALS,
    QWEN2_AUDIO_TEMPLATE,
    QWEN_OMNI_TEMPLATE,
    _audio_encoder,
    _feature_extractor,
    _generation_config,
    _text_config,
    _train_tokenizer,
    register_tiny,
)

log = logging.getLogger(__name__)

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


def failed_candidates(n: int, reason: str, prompt_tokens: int) -> list[Candidate]:
    """``n`` candidates that record a failed request (no text, no log-probabilities)."""
    return [
        Candidate("", None, None, 0, meta={"error": reason, "prompt_tokens": prompt_tokens, "wall_s": 0.0})
        for _ in range(n)
    ]


def _resolve_cache_root(spec: dict[str, Any], kwargs: dict[str, Any]) -> Path:
    """Where built or converted weights live: kwargs ``cache_dir``, else spec, else the default."""
    from ambiemo.core.config import cache_dir

    chosen = kwargs.get("cache_dir") or spec.get("cache_dir")
    return Path(chosen) if chosen else cache_dir({})


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
        super().__init__(key, model_id, revision, route=route, settings=settings)
        if dtype not in DTYPES:
            raise ValueError(f"model {key!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if batch_size < 1:
            raise ValueError(f"model {key!r}: batch_size must be >= 1, got {batch_size}")
        self.dtype = dtype
        self.device_map = device_map
        self.batch_size = batch_size
        if needs:
            self.capabilities = replace(type(self).capabilities, needs=needs)
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
                results[idx[0]] = failed_candidates(config.n, reason, len(encoded[idx[0]].input_ids))
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


class NativeAudioALM(TransformersALM):
    """A transformers audio-language model: chat template with an audio placeholder, expanded to
    one placeholder token per audio frame the encoder emits, plus that clip's features.

    A new model is one subclass (README, "Extending it"): set ``model_class`` (its class in
    ``transformers``), ``audio_placeholder`` (the token the chat template writes once per clip) and
    ``capabilities`` (with ``max_audio_s``), and implement ``_audio_features``. Where the model
    differs further, override the hooks: ``_load_model`` (how the weights load), ``_load_parts``
    (tokenizer, feature extractor, template), ``hf_messages`` / ``prompt_text`` (the prompt).
    """

    model_class: str = ""
    audio_placeholder: str = ""
    use_processor: bool = True  # load tokenizer, feature extractor and template via AutoProcessor

    def __init__(
        self,
        key: str,
        model_id: str,
        revision: str | None = None,
        *,
        local_path: Path | None = None,
        trust_remote_code: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(key, model_id, revision, **kw)
        self.local_path = local_path  # a built tiny instance; None for hub checkpoints
        self.trust_remote_code = trust_remote_code
        self.feature_extractor: Any = None
        self.chat_template: str | None = None
        self._feature_settings: str | None = None  # settings_key of feature_settings(), once loaded

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> NativeAudioALM:
        from ambiemo.models.hf.tiny import TINY_VERSION, ensure_tiny, parse_tiny_checkpoint

        if "checkpoint" not in spec:
            raise KeyError(f"params.yaml models.{key} has no 'checkpoint' (a hub id or tiny:<arch>)")
        trust = check_remote_code(key, spec)  # refused here, before anything is downloaded
        checkpoint = str(spec["checkpoint"])
        revision = spec.get("revision")
        local_path = None
        arch = parse_tiny_checkpoint(checkpoint)
        if arch is not None:
            # Built on first use into the cache folder; its identity is the builder version.
            local_path = ensure_tiny(arch, _resolve_cache_root(spec, kwargs))
            revision = TINY_VERSION
        model = cls(
            key,
            checkpoint,
            None if revision is None else str(revision),
            local_path=local_path,
            trust_remote_code=trust,
            dtype=spec.get("dtype", "auto"),
            device_map=spec.get("device_map", "auto"),
            batch_size=int(spec.get("batch_size", DEFAULT_BATCH_SIZE)),
            needs=spec.get("needs", ""),
            settings=spec,
            route=spec.get("adapter"),
        )
        # Where fetched weights live (params paths.weights_dir): read before the hub, see ambiemo.models.weights.
        model.weights_dir = kwargs.get("weights_dir")
        return model

    def _source(self) -> tuple[str, dict[str, Any]]:
        """Where to load from and the ``from_pretrained`` kwargs that pin it (revision, remote code)."""
        if self.local_path is not None:
            return str(self.local_path), {}
        from ambiemo.models.weights import resolve

        # A fetched copy, the HF cache without network, or the hub if it answers; else a fast clear error.
        source, rev = resolve(
            self.key, {"checkpoint": self.model_id, "revision": self.revision}, getattr(self, "weights_dir", None)
        )
        if self.trust_remote_code:  # only ever with a pinned commit (check_remote_code)
            rev["trust_remote_code"] = True
        return source, rev

    def _load_parts(self, source: str, rev: dict[str, Any]) -> None:
        """Tokenizer, feature extractor and chat template."""
        if self.use_processor:
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(source, **rev)
            self.tokenizer = processor.tokenizer
            self.feature_extractor = processor.feature_extractor
            self.chat_template = processor.chat_template
        else:
            from transformers import AutoTokenizer, WhisperFeatureExtractor

            self.tokenizer = AutoTokenizer.from_pretrained(source, **rev)
            self.feature_extractor = WhisperFeatureExtractor.from_pretrained(source, **rev)
            self.chat_template = self.tokenizer.chat_template
        if not self.chat_template:
            raise ValueError(f"model {self.key!r}: {source} ships no chat template; add one to its processor files")

    def _load_model(self, source: str, rev: dict[str, Any]):
        import transformers

        return getattr(transformers, self.model_class).from_pretrained(source, **rev, **self._load_kwargs())

    def _load(self) -> None:
        source, rev = self._source()
        self._load_parts(source, rev)
        self.model = self._load_model(source, rev)
        if self.tokenizer.convert_tokens_to_ids(self.audio_placeholder) in (None, self.tokenizer.unk_token_id):
            raise ValueError(f"model {self.key!r}: tokenizer of {source} has no {self.audio_placeholder!r} token")

    # ----------------------------------------------------------------------------- prompt
    def hf_messages(self, request: AudioRequest) -> list[dict[str, Any]]:
        """The conversation in transformers' chat format, the clip attached to its user turn.

        The turn marked ``audio=True`` carries the clip; if none is marked, the first user turn
        does (the usual ALM prompt: audio, then the instruction).
        """
        audio_turn = request.audio_turn()
        out = []
        for i, m in enumerate(request.messages):
            if i == audio_turn:
                content: Any = [{"type": "audio", "audio": request.utt_id}, {"type": "text", "text": m.text}]
            else:
                content = m.text
            out.append({"role": m.role, "content": content})
        return out

    def prompt_text(self, request: AudioRequest) -> str:
        """The rendered prompt with one unexpanded audio placeholder (what the processor expands)."""
        text = self.tokenizer.apply_chat_template(
            self.hf_messages(request), chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        if text.count(self.audio_placeholder) != 1:
            raise ValueError(
                f"model {self.key!r}: the chat template wrote {text.count(self.audio_placeholder)} "
                f"{self.audio_placeholder!r} placeholders for utterance {request.utt_id!r}; expected exactly 1"
            )
        return text

    def _waveform(self, request: AudioRequest) -> np.ndarray:
        return request.waveform_at(self.sample_rate)

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        """Feature tensors for one clip and the number of placeholder tokens it becomes."""
        raise NotImplementedError

    def feature_settings(self) -> dict[str, Any]:
        """Everything ``_audio_features`` depends on besides the clip: the adapter (its code), its
        sample rate and the extractor's configuration. A subclass whose features depend on more
        (an instance setting) adds it here, or the feature memo would mix them up."""
        fe = self.feature_extractor
        return {
            "adapter": f"{type(self).__module__}.{type(self).__qualname__}",
            "sample_rate": self.sample_rate,
            "extractor": fe.to_dict() if hasattr(fe, "to_dict") else repr(fe),
        }

    def features_for(self, request: AudioRequest) -> tuple[dict[str, Any], int]:
        """The clip's feature tensors and audio-token count, from ``ambiemo.data.audio.FEATURE_MEMO`` when
        another strategy (or candidate, or verifier turn) of this process has already asked."""
        from ambiemo.data.audio import FEATURE_MEMO, settings_key

        if self._feature_settings is None:
            self._feature_settings = settings_key(self.feature_settings())
        return FEATURE_MEMO.get(
            request.audio_sha1(), self._feature_settings, lambda: self._audio_features(self._waveform(request))
        )

    def _encode(self, request: AudioRequest) -> Encoded:
        features, n_audio = self.features_for(request)
        text = self.prompt_text(request).replace(self.audio_placeholder, self.audio_placeholder * n_audio)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Encoded(ids, features)


def whisper_token_count(n_frames: int) -> int:
    """Audio tokens for ``n_frames`` mel frames: stride-2 conv, then stride-2 pooling."""
    return (((n_frames - 1) // 2 + 1) - 2) // 2 + 1


_whisper_token_count = whisper_token_count  # the name adapters written before it was public import


@register_model("hf-qwen2-audio")
class Qwen2AudioALM(NativeAudioALM):
    """Qwen2-Audio(-Instruct): ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>`` in the user turn;
    features padded to 30 s, one ``<|AUDIO|>`` per 40 ms of actual audio."""

    model_class = "Qwen2AudioForConditionalGeneration"
    audio_placeholder = "<|AUDIO|>"
    capabilities = Capabilities(max_audio_s=30.0)  # the Whisper encoder hears 30 s; the features are cut there

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        fe = self.feature_extractor(
            wav, sampling_rate=self.sample_rate, return_attention_mask=True, padding="max_length", return_tensors="pt"
        )
        mask = fe["attention_mask"]
        return {"input_features": fe["input_features"], "feature_attention_mask": mask}, whisper_token_count(
            int(mask.sum())
        )


@register_tiny("qwen2-audio")
def build_tiny_qwen2_audio(folder: Path) -> None:
    """A ~0.3M-parameter Qwen2-Audio with the released checkpoint's template and special tokens."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    tokenizer = _train_tokenizer(
        CHATML_SPECIALS + ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"], QWEN2_AUDIO_TEMPLATE
    )
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", **_audio_encoder()),
        text_config=_text_config(tokenizer),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(folder)
    Qwen2AudioProcessor(_feature_extractor(), tokenizer, chat_template=QWEN2_AUDIO_TEMPLATE).save_pretrained(folder)


@register_model("hf-qwen2.5-omni")
class Qwen25OmniALM(Qwen2AudioALM):
    """The Qwen2.5-Omni thinker, text out. Its processor needs an image processor (torchvision),
    so the inputs come from its tokenizer and Whisper feature extractor directly; the token count
    per clip is the processor's. A full Omni checkpoint loads without the talker."""

    model_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    use_processor = False
    # Its multimodal rotary offsets (rope_deltas) are set up inside generate() from the audio;
    # a prefill outside generate() would leave them sized for the unrepeated batch.
    shared_prefill = False

    def _load_model(self, source: str, rev: dict[str, Any]):
        import transformers

        config = transformers.AutoConfig.from_pretrained(source, **rev)
        if config.model_type == "qwen2_5_omni":
            # The released checkpoint holds thinker + talker; build without the talker, keep the thinker.
            full = transformers.Qwen2_5OmniForConditionalGeneration.from_pretrained(
                source, enable_audio_output=False, **rev, **self._load_kwargs()
            )
            return full.thinker
        return super()._load_model(source, rev)


@register_tiny("qwen2.5-omni")
def build_tiny_qwen2_5_omni_thinker(folder: Path) -> None:
    """A tiny Qwen2.5-Omni thinker (its vision tower one layer deep; the adapter never feeds it)."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    specials = CHATML_SPECIALS + [
        "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>",
    ]  # fmt: skip
    tokenizer = _train_tokenizer(specials, QWEN_OMNI_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    head_dim = 16  # hidden 64 / 4 heads; mrope sections (temporal, height, width) must sum to head_dim / 2
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(**_audio_encoder(), n_window=100, output_dim=64),
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [0],
        },
        text_config=_text_config(
            tokenizer,
            model_type="qwen2_5_omni_text",
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        ),
        audio_token_index=ids("<|AUDIO|>"),
        image_token_index=ids("<|IMAGE|>"),
        video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"),
        audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
        vision_end_token_id=ids("<|vision_eos|>"),
        user_token_id=ids("<|im_start|>"),
    )
    assert config.text_config.hidden_size // config.text_config.num_attention_heads == head_dim
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(folder)
    # No Qwen2_5OmniProcessor: it insists on an image processor (torchvision). The adapter builds
    # audio inputs from these two parts, exactly as it does for the released checkpoint.
    tokenizer.save_pretrained(folder)
    _feature_extractor().save_pretrained(folder)


@register_model("hf-audio-flamingo-3")
class AudioFlamingo3ALM(NativeAudioALM):
    """Audio Flamingo 3 (``nvidia/audio-flamingo-3-hf``): ``<sound>`` before the user text; audio
    cut into 30 s windows (up to 10 min), one ``<sound>`` per 40 ms across all windows.

    Several candidates for a clip of several windows are correct only because of the shared
    prefill: transformers' own row-wise expansion would interleave one clip's windows wrongly."""

    model_class = "AudioFlamingo3ForConditionalGeneration"
    audio_placeholder = "<sound>"
    max_audio_s = 600  # the processor's limit: 20 windows of 30 s
    capabilities = Capabilities(max_audio_s=float(max_audio_s))

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        window = int(self.sample_rate * self.feature_extractor.chunk_length)
        wav = wav[: self.max_audio_s * self.sample_rate]
        chunks = [wav[s : s + window] for s in range(0, max(len(wav), 1), window)]
        fe = self.feature_extractor(
            chunks,
            sampling_rate=self.sample_rate,
            return_attention_mask=True,
            padding="max_length",
            return_tensors="pt",
        )
        mask = fe["attention_mask"]
        return {"input_features": fe["input_features"], "input_features_mask": mask}, whisper_token_count(
            int(mask.sum())
        )


@register_tiny("audio-flamingo-3")
def build_tiny_audio_flamingo_3(folder: Path) -> None:
    """A tiny Audio Flamingo 3 with its processor."""
    from transformers import AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor

    tokenizer = _train_tokenizer(CHATML_SPECIALS + ["<sound>"], AF3_TEMPLATE)
    config = AudioFlamingo3Config(
        audio_config=dict(model_type="audioflamingo3_encoder", **_audio_encoder()),
        text_config=_text_config(tokenizer),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    model = AudioFlamingo3ForConditionalGeneration(config)
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(folder)
    AudioFlamingo3Processor(_feature_extractor(), tokenizer, chat_template=AF3_TEMPLATE).save_pretrained(folder)
