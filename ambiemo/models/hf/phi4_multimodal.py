"""Phi-4-multimodal-instruct (5.6B): Phi-4-mini with a conformer speech encoder and a speech LoRA.

transformers' native ``Phi4MultimodalForCausalLM``: the clip's log-mel features (80 bins, 10 ms
hop) become one ``<|audio|>`` token per 80 ms (the feature extractor's ``audio_embed_sizes``).
Its processor insists on the image processor (torchvision), so the inputs come from the
tokenizer and ``Phi4MultimodalFeatureExtractor`` directly. The speech LoRA that the model card
says audio tasks need is loaded with PEFT from the checkpoint's ``speech_adapter`` subfolder
(``speech-lora`` in the released repository) and merged into the weights.

One utterance per batch: the conformer's convolutions let a shorter clip's zero padding leak into
its last frames when clips of different lengths share a batch (measured on the tiny instance: a
logit difference of 3e-2), so a batched result would depend on its neighbours. The candidates of
one prompt still come from one prefill.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.models import register_model
from ambiemo.models.hf import tiny
from ambiemo.models.hf.audio_base import NativeAudioALM


@register_model("hf-phi4-multimodal")
class Phi4MultimodalALM(NativeAudioALM):
    """Phi-4-multimodal: ``<|user|><|audio|>text<|end|><|assistant|>``."""

    model_class = "Phi4MultimodalForCausalLM"
    audio_placeholder = "<|audio|>"
    use_processor = False
    feature_extractor_class = "Phi4MultimodalFeatureExtractor"
    speech_adapter: str | None = None  # the PEFT LoRA subfolder, set from the spec

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> Phi4MultimodalALM:
        if int(spec.get("batch_size", 1)) != 1:
            raise ValueError(
                f"params.yaml models.{key}.batch_size is {spec['batch_size']}: Phi-4-multimodal runs one utterance "
                "per batch (padding a shorter clip changes its encoding); remove the key or set it to 1"
            )
        model = super().from_spec(key, {**spec, "batch_size": 1}, **kwargs)
        model.speech_adapter = spec.get("speech_adapter")
        return model

    def _load_model(self, source: str, rev: dict[str, Any]):
        model = super()._load_model(source, rev)
        if self.speech_adapter:
            try:
                from peft import PeftModel
            except ImportError as exc:
                raise ImportError(
                    f"model {self.key!r}: the speech LoRA ({self.speech_adapter}) needs peft: pip install peft"
                ) from exc
            # Merged into the weights: the forward pass is then the plain model's (generate, option
            # scoring and the KV-cache reuse need nothing from PEFT). transformers' own load_adapter
            # wants a newer peft than PyPI serves (0.21.2 at the time of writing).
            model = PeftModel.from_pretrained(model, source, subfolder=self.speech_adapter, **rev).merge_and_unload()
        return model

    def _audio_features(self, wav: np.ndarray) -> tuple[dict[str, Any], int]:
        fe = self.feature_extractor([wav], sampling_rate=self.sample_rate, return_tensors="pt")
        sizes = fe["audio_embed_sizes"]
        return {"audio_input_features": fe["audio_input_features"], "audio_embed_sizes": sizes}, int(sizes[0])


# ------------------------------------------------------------------------------ tiny instance
# The shape of Phi-4-multimodal's template: <|role|>text<|end|>, the audio item as <|audio|>.
PHI4_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}<|audio|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PHI4_SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|image|>", "<|audio|>"]
TINY_SPEECH_ADAPTER = "speech-lora"


@tiny.register_tiny("phi4-multimodal")
def build_tiny_phi4_multimodal(folder: Path) -> None:
    """A ~0.26M-parameter Phi-4-multimodal with a random (non-zero) speech LoRA in ``speech-lora/``."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        GenerationConfig,
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
    )

    tokenizer = tiny._train_tokenizer(
        PHI4_SPECIALS, PHI4_TEMPLATE, {"extra_special_tokens": {"audio_token": "<|audio|>", "image_token": "<|image|>"}}
    )
    tokenizer.eos_token = "<|end|>"
    ids = tokenizer.convert_tokens_to_ids
    config = Phi4MultimodalConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|end|>"),
        pad_token_id=ids("<|endoftext|>"),
        audio_config={
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_blocks": 2,
            "num_attention_heads": 2,
            "ext_pw_out_channel": 32,
            "depthwise_separable_out_channel": 32,
            "nemo_conv_channels": 32,
            "audio_token_id": ids("<|audio|>"),
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "crop_size": 28,
            "patch_size": 14,
            "image_token_id": ids("<|image|>"),
        },
    )
    model = Phi4MultimodalForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids("<|end|>"), ids("<|endoftext|>")],
        pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"),
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Phi4MultimodalFeatureExtractor().save_pretrained(folder)
    # init_lora_weights=False: random A and B, so that the adapter visibly changes the output.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder / TINY_SPEECH_ADAPTER)
