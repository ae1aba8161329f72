"""Qwen2-Audio(-Instruct) and the Qwen2.5-Omni thinker, with their tiny random builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.models import register_model
from ambiemo.models.base import (
    Capabilities,
)
from ambiemo.models.hf.audio_base import NativeAudioALM, whisper_token_count
from ambiemo.models.hf.tiny import (
    CHATML_SPECIALS,
    OMNI_ROPE,
    QWEN2_AUDIO_TEMPLATE,
    QWEN_OMNI_TEMPLATE,
    _audio_encoder,
    _omni_vision_tower,
    _text_config,
    _train_tokenizer,
    register_tiny,
    save_tiny,
)


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
    save_tiny(folder, Qwen2AudioForConditionalGeneration(config), tokenizer, Qwen2AudioProcessor)


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
    full_model_type = "qwen2_5_omni"  # the released checkpoint: thinker + talker
    full_model_class = "Qwen2_5OmniForConditionalGeneration"


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
        vision_config=_omni_vision_tower(fullatt_block_indexes=[0]),
        text_config=_text_config(tokenizer, model_type="qwen2_5_omni_text", rope_parameters=OMNI_ROPE),
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
    # No Qwen2_5OmniProcessor: it insists on an image processor (torchvision). The adapter builds
    # audio inputs from the tokenizer and feature extractor, exactly as it does for the released checkpoint.
    save_tiny(folder, Qwen2_5OmniThinkerForConditionalGeneration(config), tokenizer)
