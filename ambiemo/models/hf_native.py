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

Sampled candidates are reproducible for a given batch: the RNG is seeded per batch from
``GenerationConfig.seed`` and the batch's utterance ids. With ``batch_size: 1`` in the spec they
do not depend on which other utterances share a batch (at the cost of GPU throughput).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ambiemo.models import register_model
from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    Capabilities,
    GenerationConfig,
)

DEFAULT_BATCH_SIZE = 8  # utterances per generate() call; candidates multiply it by n
FEATURE_MEMO_SIZE = 256  # utterances whose audio features are kept in memory
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class Encoded:
    """One prompt ready for the model: token ids plus the audio tensors its placeholders consume.

    Each feature tensor's first dimension counts rows that belong to this prompt (one per clip,
    or one per 30 s window for Audio Flamingo 3); collating concatenates them in prompt order.
    """

    input_ids: list[int]
    features: dict[str, Any] = field(default_factory=dict)


def _batch_seed(seed: int, utt_ids: Sequence[str]) -> int:
    h = hashlib.sha1("\x00".join([str(seed), *utt_ids]).encode()).digest()
    return int.from_bytes(h[:4], "little")


def _resolve_cache_root(spec: dict[str, Any], kwargs: dict[str, Any]):
    """Where built or converted weights live: kwargs ``cache_dir``, else spec, else the default."""
    from pathlib import Path

    from ambiemo.config import cache_dir

    chosen = kwargs.get("cache_dir") or spec.get("cache_dir")
    return Path(chosen) if chosen else cache_dir({})


class TransformersALM(AudioLanguageModel):
    """Generation and option scoring for any transformers causal LM behind ``_encode``.

    Subclasses implement ``_load`` (set ``self.model`` and ``self.tokenizer``) and ``_encode``
    (an ``AudioRequest`` to an ``Encoded`` prompt).
    """

    capabilities = Capabilities(logprobs=True, beam_search=True, option_scoring=True, needs="")
    shared_prefill = True  # one prefill per prompt for n > 1 (see _generate_batch)

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
    ) -> None:
        super().__init__(key, model_id, revision)
        if dtype not in DTYPES:
            raise ValueError(f"model {key!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if batch_size < 1:
            raise ValueError(f"model {key!r}: batch_size must be >= 1, got {batch_size}")
        self.dtype = dtype
        self.device_map = device_map
        self.batch_size = batch_size
        if needs:
            self.capabilities = Capabilities(logprobs=True, beam_search=True, option_scoring=True, needs=needs)
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
        if config.mode == "greedy":
            return HFGenerationConfig(do_sample=False, num_beams=1, **common)
        if config.mode == "sample":
            return HFGenerationConfig(
                do_sample=True, num_beams=1, temperature=config.temperature, top_p=config.top_p, top_k=0, **common
            )
        return HFGenerationConfig(do_sample=False, num_beams=config.num_beams, length_penalty=1.0, **common)

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        import torch

        if not requests:
            return []
        self._ensure_loaded()
        encoded = [self._encode(r) for r in requests]
        # Length-sorted batches waste the least padding; results go back in request order.
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i].input_ids))
        results: list[list[Candidate]] = [[] for _ in requests]
        hf_config = self._hf_generation_config(config)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            rows = [encoded[i] for i in idx]
            batch = self._collate(rows, pad_left=True)
            t0 = time.perf_counter()
            with torch.inference_mode():
                torch.manual_seed(_batch_seed(config.seed, [requests[i].utt_id for i in idx]))
                out = self._generate_batch(batch, hf_config, config)
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
            for j, i in enumerate(idx):
                mine = cands[j * config.n : (j + 1) * config.n]
                for c in mine:
                    c.meta.update(prompt_tokens=len(encoded[i].input_ids), wall_s=per_cand_wall)
                results[i] = mine
                self.usage.calls += 1
                self.usage.prompt_tokens += len(encoded[i].input_ids)
                self.usage.gen_tokens += sum(c.n_tokens for c in mine)
        return results

    def _generate_batch(self, batch: dict[str, Any], hf_config, config: GenerationConfig):
        """``generate`` with one prefill per prompt, however many candidates or beams.

        transformers repeats every prompt (and its audio) ``num_return_sequences`` or
        ``num_beams`` times before the first forward pass. Instead the prompt minus its last
        token is run once, its KV cache repeated per candidate, and ``generate`` continues from
        there (it feeds only the uncached last token, so the audio is not needed again).
        """
        expand = config.num_beams if config.mode == "beam" else config.n
        if expand == 1 or not self.shared_prefill:
            return self.model.generate(**batch, generation_config=hf_config)
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
        return self.model.generate(input_ids=ids, attention_mask=mask, cache=cache, generation_config=hf_config)

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

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        import torch

        if not options:
            raise ValueError(f"utterance {request.utt_id!r}: score_options needs at least one option")
        self._ensure_loaded()
        enc = self._encode(request)
        conts = [self._option_ids(prefix, o) for o in options]
        empty = [o for o, c in zip(options, conts, strict=True) if not c]
        if empty:
            raise ValueError(f"utterance {request.utt_id!r}: options {empty!r} (with prefix {prefix!r}) have no tokens")
        with torch.inference_mode():
            logp = (
                self._continuation_logprobs(enc, conts) if self.shared_prefill else self._repeated_logprobs(enc, conts)
            )
        scores = np.empty(len(options))
        for i, c in enumerate(conts):
            tok = torch.tensor(c, device=logp.device)
            scores[i] = float(logp[i, torch.arange(len(c), device=logp.device), tok].sum())
        self.usage.calls += 1
        self.usage.prompt_tokens += len(enc.input_ids)
        return scores

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

    Subclasses set ``model_class`` (name in ``transformers``), ``audio_placeholder`` (the token
    the chat template writes once per clip) and implement ``_audio_features``.
    """

    model_class: str = ""
    audio_placeholder: str = ""
    use_processor: bool = True  # load tokenizer, feature extractor and template via AutoProcessor

    def __init__(self, key: str, model_id: str, revision: str | None = None, *, local_path=None, **kw: Any) -> None:
        super().__init__(key, model_id, revision, **kw)
        self.local_path = local_path  # a built tiny instance; None for hub checkpoints
        self.feature_extractor: Any = None
        self.chat_template: str | None = None
        self._feature_memo: dict[str, tuple[dict[str, Any], int]] = {}

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> NativeAudioALM:
        from ambiemo.models.tiny import TINY_VERSION, ensure_tiny, parse_tiny_checkpoint

        if "checkpoint" not in spec:
            raise KeyError(f"params.yaml models.{key} has no 'checkpoint' (a hub id or tiny:<arch>)")
        checkpoint = str(spec["checkpoint"])
        revision = spec.get("revision")
        local_path = None
        arch = parse_tiny_checkpoint(checkpoint)
        if arch is not None:
            # Built on first use into the cache folder; its identity is the builder version.
            local_path = ensure_tiny(arch, _resolve_cache_root(spec, kwargs))
            revision = TINY_VERSION
        return cls(
            key,
            checkpoint,
            None if revision is None else str(revision),
            local_path=local_path,
            dtype=spec.get("dtype", "auto"),
            device_map=spec.get("device_map", "auto"),
            batch_size=int(spec.get("batch_size", DEFAULT_BATCH_SIZE)),
            needs=spec.get("needs", ""),
        )

    def _source(self) -> tuple[str, dict[str, Any]]:
        if self.local_path is not None:
            return str(self.local_path), {}
        return self.model_id, ({"revision": self.revision} if self.revision else {})

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
        wav = np.asarray(request.waveform, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"utterance {request.utt_id!r}: waveform must be mono (1-D), got shape {wav.shape}")
        if request.sample_rate != self.sample_rate:
            import librosa

            wav = librosa.resample(wav, orig_sr=request.sample_rate, target_sr=self.sample_rate).astype(np.float32)
        return wav

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        """Feature tensors for one clip and the number of placeholder tokens it becomes."""
        raise NotImplementedError

    def features_for(self, request: AudioRequest) -> tuple[dict[str, Any], int]:
        key = request.audio_sha1()
        if key not in self._feature_memo:
            if len(self._feature_memo) >= FEATURE_MEMO_SIZE:
                self._feature_memo.pop(next(iter(self._feature_memo)))
            self._feature_memo[key] = self._audio_features(self._waveform(request))
        return self._feature_memo[key]

    def _encode(self, request: AudioRequest) -> Encoded:
        features, n_audio = self.features_for(request)
        text = self.prompt_text(request).replace(self.audio_placeholder, self.audio_placeholder * n_audio)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return Encoded(ids, features)


def _whisper_token_count(n_frames: int) -> int:
    """Audio tokens for ``n_frames`` mel frames: stride-2 conv, then stride-2 pooling."""
    return (((n_frames - 1) // 2 + 1) - 2) // 2 + 1


@register_model("hf-qwen2-audio")
class Qwen2AudioALM(NativeAudioALM):
    """Qwen2-Audio(-Instruct): ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>`` in the user turn;
    features padded to 30 s, one ``<|AUDIO|>`` per 40 ms of actual audio."""

    model_class = "Qwen2AudioForConditionalGeneration"
    audio_placeholder = "<|AUDIO|>"

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        fe = self.feature_extractor(
            wav, sampling_rate=self.sample_rate, return_attention_mask=True, padding="max_length", return_tensors="pt"
        )
        mask = fe["attention_mask"]
        return {"input_features": fe["input_features"], "feature_attention_mask": mask}, _whisper_token_count(
            int(mask.sum())
        )


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


@register_model("hf-audio-flamingo-3")
class AudioFlamingo3ALM(NativeAudioALM):
    """Audio Flamingo 3 (``nvidia/audio-flamingo-3-hf``): ``<sound>`` before the user text; audio
    cut into 30 s windows (up to 10 min), one ``<sound>`` per 40 ms across all windows.

    Several candidates for a clip of several windows are correct only because of the shared
    prefill: transformers' own row-wise expansion would interleave one clip's windows wrongly."""

    model_class = "AudioFlamingo3ForConditionalGeneration"
    audio_placeholder = "<sound>"
    max_audio_s = 600  # the processor's limit: 20 windows of 30 s

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
        return {"input_features": fe["input_features"], "input_features_mask": mask}, _whisper_token_count(
            int(mask.sum())
        )
