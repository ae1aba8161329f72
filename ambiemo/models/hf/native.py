"""The native transformers routes, as they were importable before the split (issue 18): the engine
(``engine``), batch-invariant sampling (``sampling``), the audio base class (``audio_base``) and the
adapters (``qwen2_audio``, ``audio_flamingo3``), each with its tiny build, live in their own modules."""

from ambiemo.models.hf.audio_base import NativeAudioALM, _whisper_token_count, whisper_token_count
from ambiemo.models.hf.audio_flamingo3 import AudioFlamingo3ALM, build_tiny_audio_flamingo_3
from ambiemo.models.hf.engine import TransformersALM
from ambiemo.models.hf.parts import DEFAULT_BATCH_SIZE, DTYPES, Encoded, _resolve_cache_root, failed_candidates
from ambiemo.models.hf.qwen2_audio import (
    Qwen2AudioALM,
    Qwen25OmniALM,
    build_tiny_qwen2_5_omni_thinker,
    build_tiny_qwen2_audio,
)
from ambiemo.models.hf.sampling import GumbelMaxSampler, sample_seed

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DTYPES",
    "AudioFlamingo3ALM",
    "Encoded",
    "GumbelMaxSampler",
    "NativeAudioALM",
    "Qwen25OmniALM",
    "Qwen2AudioALM",
    "TransformersALM",
    "_resolve_cache_root",
    "_whisper_token_count",
    "build_tiny_audio_flamingo_3",
    "build_tiny_qwen2_5_omni_thinker",
    "build_tiny_qwen2_audio",
    "failed_candidates",
    "sample_seed",
    "whisper_token_count",
]
