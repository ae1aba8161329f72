"""Audio Flamingo 3 (``nvidia/audio-flamingo-3-hf``), with its tiny random build."""

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
    AF3_TEMPLATE,
    CHATML_SPECIALS,
    _audio_encoder,
    _text_config,
    _train_tokenizer,
    register_tiny,
    save_tiny,
)


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
    save_tiny(folder, AudioFlamingo3ForConditionalGeneration(config), tokenizer, AudioFlamingo3Processor)
