"""Gemma 4 E2B and E4B (``google/gemma-4-E2B-it``, ``google/gemma-4-E4B-it``): transformers'
``Gemma4ForConditionalGeneration``, text out.

The chat template writes ``<|audio|>`` once per clip; the processor expands it to
``<|audio>`` + one ``<|audio|>`` per 40 ms + ``<audio|>``. The features are log-mels (128 bins,
20 ms windows every 10 ms) from ``Gemma4AudioFeatureExtractor``, cut at 30 s; the encoder's two
stride-2 convolutions turn them into one soft token per four frames (25 per second, at most 750).
Gemma4Processor insists on an image and a video processor (torchvision), so the inputs come from
the tokenizer and the feature extractor directly, with the processor's own expansion rule.

Each clip keeps its own length; clips in one batch are right-padded to the longest with silent,
masked frames, which the encoder keeps out of every real frame (its convolutions see zeros there,
its attention and its causal convolutions never look at them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.models import register_model
from ambiemo.models.base import Capabilities
from ambiemo.models.hf import tiny
from ambiemo.models.hf.audio_base import NativeAudioALM
from ambiemo.models.hf.parts import Encoded

AUDIO_START, AUDIO_END = "<|audio>", "<audio|>"  # around the soft tokens, as the processor writes them


def gemma4_audio_tokens(frame_mask: np.ndarray) -> int:
    """Soft tokens for one clip's mel-frame mask: the valid frames left after two stride-2
    convolutions (kernel 3, padding 1), each keeping every other frame."""
    mask = np.asarray(frame_mask, dtype=bool)
    for _ in range(2):
        mask = mask[::2]
    return int(mask.sum())


def pad_frames(rows: Sequence[Encoded]) -> list[Encoded]:
    """Right-pad each row's ``input_features`` (``[1, frames, mels]``, with zeros) and
    ``input_features_mask`` (``[1, frames]``, with False) to the batch's longest."""
    import torch

    width = max(r.features["input_features"].shape[1] for r in rows)
    out = []
    for r in rows:
        feats, mask = r.features["input_features"], r.features["input_features_mask"]
        short = width - feats.shape[1]
        if short:
            feats = torch.cat([feats, feats.new_zeros((1, short, feats.shape[2]))], dim=1)
            mask = torch.cat([mask, mask.new_zeros((1, short))], dim=1)
        out.append(Encoded(r.input_ids, {"input_features": feats, "input_features_mask": mask}))
    return out


@register_model("hf-gemma4")
class Gemma4ALM(NativeAudioALM):
    """Gemma 4 with audio (E2B, E4B): ``<|turn>user\\n<|audio>…<audio|>text<turn|>\\n<|turn>model\\n``."""

    model_class = "Gemma4ForConditionalGeneration"
    audio_placeholder = "<|audio|>"
    use_processor = False
    feature_extractor_class = "Gemma4AudioFeatureExtractor"
    # The feature extractor's default max_length: 480,000 samples at 16 kHz.
    capabilities = Capabilities(max_audio_s=30.0)

    def _load_parts(self, source: str, rev: dict[str, Any]) -> None:
        """The base's parts (tokenizer, Gemma 4's feature extractor, the template), then the audio
        markers the prompt needs."""
        super()._load_parts(source, rev)
        for token in (AUDIO_START, AUDIO_END):
            if self.tokenizer.convert_tokens_to_ids(token) in (None, self.tokenizer.unk_token_id):
                raise ValueError(f"model {self.key!r}: tokenizer of {source} has no {token!r} token")

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        # A list of one clip, as the processor passes it (a bare array fails in transformers 5.24).
        fe = self.feature_extractor([wav], sampling_rate=self.sample_rate, return_tensors="pt")
        mask = fe["input_features_mask"]
        n = gemma4_audio_tokens(mask[0].numpy())
        return {"input_features": fe["input_features"], "input_features_mask": mask}, n

    def audio_run(self, n_audio: int) -> str:
        return AUDIO_START + self.audio_placeholder * n_audio + AUDIO_END

    def _collate(self, rows: Sequence[Encoded], *, pad_left: bool) -> dict[str, Any]:
        return super()._collate(pad_frames(rows), pad_left=pad_left)


# ------------------------------------------------------------------------------ tiny instance
# The shape of Gemma 4's template (Google's "Gemma 4 prompt formatting"): <bos>, then
# <|turn>role\n...<turn|>\n per message (the assistant is "model"), each audio item as <|audio|>,
# the generation prompt <|turn>model\n. The released template may add an empty thought channel
# when thinking is off; the adapter takes whatever the checkpoint's template writes.
GEMMA4_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'audio' %}<|audio|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}"
    "{% endif %}<turn|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)
GEMMA4_SPECIALS = {  # the tokenizer attributes Gemma4Processor reads, with the released strings
    "audio_token": "<|audio|>",
    "boa_token": AUDIO_START,
    "eoa_token": AUDIO_END,
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
}


@tiny.register_tiny("gemma4")
def build_tiny_gemma4(folder: Path) -> None:
    """A ~0.3M-parameter Gemma 4 with E2B's features: per-layer inputs, sliding and full layers, the
    last layers reading earlier layers' KV cache, soft-capped logits; a one-layer vision tower."""
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ForConditionalGeneration,
        GenerationConfig,
    )

    base = ["<pad>", "<eos>", "<bos>", "<|turn>", "<turn|>", "<|video|>"]
    tokenizer = tiny._train_tokenizer(
        base + list(GEMMA4_SPECIALS.values()),
        GEMMA4_TEMPLATE,
        {
            "bos_token": "<bos>",
            "eos_token": "<turn|>",
            "pad_token": "<pad>",
            "extra_special_tokens": GEMMA4_SPECIALS,
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    vocab = len(tokenizer)
    config = Gemma4Config(
        text_config={
            "vocab_size": vocab,
            "vocab_size_per_layer_input": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "global_head_dim": 16,
            "hidden_size_per_layer_input": 8,
            "layer_types": ["sliding_attention", "full_attention"] * 2,
            "sliding_window": 16,  # shorter than the prompts: the sliding layers' masks are exercised
            "num_kv_shared_layers": 2,
            "final_logit_softcapping": 30.0,
            "max_position_embeddings": 4096,
            "pad_token_id": ids("<pad>"),
            "eos_token_id": ids("<turn|>"),
            "bos_token_id": ids("<bos>"),
        },
        # The first subsampling width must equal the mel bins (128): the projection after the two
        # convolutions is sized as width[0] // 4 * width[1].
        audio_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "subsampling_conv_channels": [128, 8],
            "output_proj_dims": 48,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "position_embedding_size": 64,
        },
        audio_token_id=ids("<|audio|>"),
        boa_token_id=ids(AUDIO_START),
        eoa_token_index=ids(AUDIO_END),
        image_token_id=ids("<|image|>"),
        boi_token_id=ids("<|image>"),
        eoi_token_id=ids("<image|>"),
        video_token_id=ids("<|video|>"),
    )
    model = Gemma4ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids("<turn|>"), ids("<eos>")], pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>")
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Gemma4AudioFeatureExtractor().save_pretrained(folder)
