"""Qwen3-Omni (``Qwen/Qwen3-Omni-30B-A3B-Instruct``): the thinker, text out.

A mixture-of-experts LM (30.5B parameters, 3.3B active per token) behind an audio encoder that
downsamples 8x (one ``<|audio_pad|>`` per 80 ms). Its processor insists on an image and a video
processor (torchvision), so the inputs come from its tokenizer and Whisper feature extractor
directly, with the processor's own token count (``_get_feat_extract_output_lengths``).

Unlike Qwen2.5-Omni, features are not padded to 30 s: each clip keeps its own length (the encoder
reads its 100-frame chunks up to the mask), so a clip longer than 30 s is not cut. Clips in one
batch are right-padded to the longest; the feature mask keeps the padding out of the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.models import register_model
from ambiemo.models.hf import tiny
from ambiemo.models.hf.audio_base import NativeAudioALM
from ambiemo.models.hf.parts import Encoded

N_WINDOW = 50  # the processor's default: the encoder attends within 2 * 50 mel frames (1 s)


def qwen3_omni_audio_tokens(n_frames: int, n_window: int = N_WINDOW) -> int:
    """``<|audio_pad|>`` tokens for ``n_frames`` mel frames: three stride-2 convolutions per
    ``2 * n_window``-frame chunk (13 tokens per full chunk), the remainder on its own."""
    chunk = 2 * n_window
    rest = (n_frames % chunk - 1) // 2 + 1
    return ((rest - 1) // 2 + 1 - 1) // 2 + 1 + (n_frames // chunk) * 13


def pad_feature_rows(rows: Sequence[Encoded], names: Sequence[str]) -> list[Encoded]:
    """Right-pad each row's ``names`` tensors (last dimension: time) with zeros to the batch's longest."""
    import torch.nn.functional as F

    width = max(r.features[n].shape[-1] for r in rows for n in names)
    out = []
    for r in rows:
        feats = dict(r.features)
        for n in names:
            feats[n] = F.pad(feats[n], (0, width - feats[n].shape[-1]))
        out.append(Encoded(r.input_ids, feats))
    return out


@register_model("hf-qwen3-omni")
class Qwen3OmniALM(NativeAudioALM):
    """The Qwen3-Omni-MoE thinker: ``<|audio_start|><|audio_pad|><|audio_end|>`` in the user turn."""

    model_class = "Qwen3OmniMoeThinkerForConditionalGeneration"
    audio_placeholder = "<|audio_pad|>"
    use_processor = False
    # Multimodal rotary offsets (rope_deltas) are set up inside generate() from the audio, as in
    # Qwen2.5-Omni: a prefill outside generate() would leave them sized for the unrepeated batch.
    shared_prefill = False
    full_model_type = "qwen3_omni_moe"  # the released checkpoint: thinker + talker + code2wav
    full_model_class = "Qwen3OmniMoeForConditionalGeneration"

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        fe = self.feature_extractor(
            wav,
            sampling_rate=self.sample_rate,
            return_attention_mask=True,
            padding="longest",
            truncation=False,
            return_tensors="pt",
        )
        mask = fe["attention_mask"]
        n = qwen3_omni_audio_tokens(int(mask.sum()))
        return {"input_features": fe["input_features"], "feature_attention_mask": mask}, n

    def _collate(self, rows: Sequence[Encoded], *, pad_left: bool) -> dict[str, Any]:
        return super()._collate(pad_feature_rows(rows, ["input_features", "feature_attention_mask"]), pad_left=pad_left)


# ------------------------------------------------------------------------------ tiny instance
# The Qwen3-Omni Instruct template's shape: ChatML, no default system turn, each audio item as
# <|audio_start|><|audio_pad|><|audio_end|> in content order.
QWEN3_OMNI_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_OMNI_SPECIALS = {
    "audio_token": "<|audio_pad|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}


@tiny.register_tiny("qwen3-omni")
def build_tiny_qwen3_omni(folder: Path) -> None:
    """A ~0.4M-parameter Qwen3-Omni-MoE thinker (4 experts, 2 active) with its tokenizer and features."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    from ambiemo.models.hf.tiny import (
        CHATML_SPECIALS,
        OMNI_ROPE,
        _audio_encoder,
        _omni_vision_tower,
        _text_config,
        _train_tokenizer,
        save_tiny,
    )

    tokenizer = _train_tokenizer(
        CHATML_SPECIALS + list(QWEN3_OMNI_SPECIALS.values()),
        QWEN3_OMNI_TEMPLATE,
        {"extra_special_tokens": QWEN3_OMNI_SPECIALS},
    )
    special = {name: tokenizer.convert_tokens_to_ids(token) for name, token in QWEN3_OMNI_SPECIALS.items()}
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(**_audio_encoder(), n_window=N_WINDOW, output_dim=64, downsample_hidden_size=32),
        vision_config=_omni_vision_tower(deepstack_visual_indexes=[0], num_position_embeddings=64),
        text_config=_text_config(
            tokenizer,
            model_type="qwen3_omni_moe_text",
            head_dim=16,  # OMNI_ROPE's sections sum to head_dim / 2
            moe_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
            rope_parameters=OMNI_ROPE,
        ),
        audio_token_id=special["audio_token"],
        image_token_id=special["image_token"],
        video_token_id=special["video_token"],
        audio_start_token_id=special["audio_bos_token"],
        vision_start_token_id=special["vision_bos_token"],
        user_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    save_tiny(folder, Qwen3OmniMoeThinkerForConditionalGeneration(config), tokenizer)
