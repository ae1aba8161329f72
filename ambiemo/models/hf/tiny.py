"""Tiny, randomly initialised instances of the native ALM architectures, built offline.

Each instance is the *real* transformers architecture (Qwen2-Audio, the Qwen2.5-Omni thinker,
Audio Flamingo 3) shrunk to a few hundred thousand parameters, with a byte-level BPE tokenizer
trained here in about a second (carrying the model's special tokens and a chat template of the
same shape as the released checkpoint's) and a ``WhisperFeatureExtractor`` constructed locally
(its mel filters are computed, not downloaded). Nothing is fetched from a hub.

Each build is registered beside its adapter with ``@register_tiny("<arch>")``; this module holds
the shared parts (tokenizer training, text and audio configs, the feature extractor, the
generation config, the released chat templates) and the build-once machinery.

They exist so that each native adapter's real code path (chat template, audio placeholder
expansion, feature extraction, batched generation with scores, option scoring) runs in tests
and in the offline demo profile (``checkpoint: tiny:qwen2-audio``). Their answers are random
text: no result from them is a finding.

Builds are deterministic (fixed corpus, fixed seed) and written atomically, so concurrent
pipeline stages that build the same instance on first use do not trip over each other.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ambiemo.core.registry import Registry

# Bump when anything below changes what a build produces; it is part of the folder name and of
# the model identity, so caches never mix outputs of two different tiny models.
TINY_VERSION = "v1"
TINY_PREFIX = "tiny:"
SEED = 0

LABEL_WORDS = ["neutral", "happy", "angry", "sad", "disgust", "fear", "surprise", "calm", "frustrated", "excited"]

# The Qwen2-Audio-7B-Instruct template (as shipped in its chat_template.json): a default
# system turn, "Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>\n" for each audio item.
QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5-Omni: the same ChatML frame; audio items render as <|audio_bos|><|AUDIO|><|audio_eos|>
# with no "Audio N:" label, and the default system turn is Qwen's Omni persona.
QWEN_OMNI_SYSTEM = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)
QWEN_OMNI_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    + QWEN_OMNI_SYSTEM
    + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Audio Flamingo 3 (nvidia/audio-flamingo-3-hf): ChatML with a default system turn; every audio
# item of a turn renders as <sound> *before* the turn's text, whatever the content order.
AF3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'audio' %}<sound>{% endif %}{% endfor %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    """A few hundred sentences in the register the prompts and answers use (fixed, no randomness)."""
    lines = [
        "You are a helpful assistant.",
        "You are an expert in speech emotion recognition.",
        "Listen to the audio and describe the emotion of the speaker.",
        "What emotion does the speaker express? Answer with one word.",
        "Give a probability for each emotion as a JSON object that sums to 1.",
        "Think step by step about the tone, pitch, loudness and the words, then answer.",
        "Which of the candidate answers describes the speaker's emotion best?",
        "The transcript is: I can't believe you did that again.",
        "Acoustic features: mean pitch, pitch variability, loudness, speech rate, jitter, shimmer.",
        QWEN_OMNI_SYSTEM,
    ]
    for i, a in enumerate(LABEL_WORDS):
        b = LABEL_WORDS[(i + 3) % len(LABEL_WORDS)]
        lines.append(f"The speaker sounds {a}.")
        lines.append(f"The emotion is {a}, with some {b}.")
        lines.append(f"Answer: {a}")
        for p in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85):
            q = round(1 - p, 2)
            lines.append(f'{{"{a}": {p}, "{b}": {q}}}')
    for n in range(100):
        lines.append(f"{n} {n / 100:.2f} {n * 7 % 13}")
    return lines


def _train_tokenizer(specials: list[str], template: str, extra: dict[str, Any] | None = None):
    """A byte-level BPE tokenizer with the model's special tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # ChatML's end and padding tokens unless ``extra`` names the model's own (Gemma 4: <turn|>, <pad>).
    named = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", **(extra or {})}
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **named)


def _text_config(tokenizer, **overrides: Any) -> dict[str, Any]:
    cfg = {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
    }
    cfg.update(overrides)
    return cfg


def _audio_encoder(**overrides: Any) -> dict[str, Any]:
    cfg = {
        "num_mel_bins": 128,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 128,
        "d_model": 64,
        "max_source_positions": 1500,
    }
    cfg.update(overrides)
    return cfg


# The Omni thinkers' text models: multimodal rotary sections (temporal, height, width) summing to
# head_dim / 2 (head_dim 16: hidden 64 over 4 heads).
OMNI_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}


def _omni_vision_tower(**overrides: Any) -> dict[str, Any]:
    """The Omni thinkers' vision tower, one layer deep: built because the architecture has one, never fed."""
    return {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64, **overrides}


def _feature_extractor():
    from transformers import WhisperFeatureExtractor

    # The 128-mel Whisper front end that Qwen2-Audio, Qwen2.5-Omni and AF3 all use.
    return WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000, hop_length=160, chunk_length=30, n_fft=400)


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )


def save_tiny(folder: Path, model: Any, tokenizer: Any, processor: type | None = None) -> None:
    """Write a built tiny ``model`` into ``folder`` with the shared generation config, and its inputs:
    a ``processor`` (the model's transformers processor class) over the Whisper feature extractor and
    ``tokenizer``, or, where the model ships none, the tokenizer and the feature extractor side by side."""
    model.generation_config = _generation_config(tokenizer)
    model.save_pretrained(folder)
    if processor is not None:
        processor(_feature_extractor(), tokenizer, chat_template=tokenizer.chat_template).save_pretrained(folder)
    else:
        tokenizer.save_pretrained(folder)
        _feature_extractor().save_pretrained(folder)


TINY: Registry[Callable[[Path], None]] = Registry("tiny model build")


def register_tiny(arch: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    """Register ``build(folder) -> None`` as the tiny ``arch`` (``checkpoint: tiny:<arch>``).

    Each builder lives beside its adapter, in the adapter's module; ``build`` writes a
    ``from_pretrained``-able folder (weights, config, tokenizer or processor files). The call
    seeds torch with ``SEED`` first and writes the folder atomically (``ensure_tiny``).
    """
    return TINY.register(arch)


def tiny_builders() -> Registry[Callable[[Path], None]]:
    """The registry of tiny builds, after every adapter module has registered its own."""
    from ambiemo.models import _import_adapters

    _import_adapters()
    return TINY


def build_tiny(arch: str, folder: str | os.PathLike) -> Path:
    """Build the tiny ``arch`` into ``folder`` (created; must not exist). Deterministic."""
    import torch

    builders = tiny_builders()
    if arch not in builders:
        raise KeyError(f"no tiny build for {arch!r}; known: {', '.join(builders.names())}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=False)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        builders.get(arch)(folder)
    (folder / "ambiemo_tiny.json").write_text(json.dumps({"arch": arch, "version": TINY_VERSION, "seed": SEED}) + "\n")
    return folder


def ensure_tiny(arch: str, cache_root: str | os.PathLike) -> Path:
    """Return the folder of the tiny ``arch`` under ``cache_root/tiny``, building it on first use.

    The build happens in a temporary sibling folder that is renamed into place, so a reader
    never sees a half-written model and two processes building at once both end up with one.
    """
    target = Path(cache_root) / "tiny" / f"{arch}-{TINY_VERSION}"
    if (target / "ambiemo_tiny.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=target.parent))
    try:
        build_tiny(arch, tmp / "build")
        try:
            os.rename(tmp / "build", target)
        except OSError:
            if not (target / "ambiemo_tiny.json").exists():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def parse_tiny_checkpoint(checkpoint: str) -> str | None:
    """``"tiny:qwen2-audio"`` -> ``"qwen2-audio"``; any other checkpoint -> None."""
    if not checkpoint.startswith(TINY_PREFIX):
        return None
    arch = checkpoint[len(TINY_PREFIX) :]
    builders = tiny_builders()
    if arch not in builders:
        raise KeyError(f"checkpoint {checkpoint!r}: no tiny build for {arch!r}; known: {', '.join(builders.names())}")
    return arch
