"""Kimi-Audio-7B-Instruct through its upstream inference code (``kimia_infer``), text out.

Kimi-Audio is not in transformers. Its code installs as a package or is put on the path from a clone:

    pip install git+https://github.com/MoonshotAI/Kimi-Audio.git
    # or: git clone https://github.com/MoonshotAI/Kimi-Audio; params.yaml models.kimi-audio-7b.code_dir: <clone>

and is imported lazily, on the first real call, with a clear error where it is missing. The model is
built as upstream's examples build it (``KimiAudio(model_path=..., load_detokenizer=False)``: no
speech out) and called with its message format (``role``, ``message_type`` text | audio,
``content``), the clip as a 16 kHz float WAV file.

Upstream ``generate`` returns text only (no token ids, no scores), so this route gives no
log-probabilities, no beam search and no label scoring; strategies that need them refuse it. Its text
sampler has a temperature and a top-k, no top-p: ``top_p < 1`` is refused rather than ignored.
Several candidates are several seeded calls (seed from the generation seed, the utterance and the
candidate index), so a candidate does not depend on the batch it came in.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ambiemo.models import register_model
from ambiemo.models.base import AudioLanguageModel, AudioRequest, Candidate, Capabilities, GenerationConfig
from ambiemo.models.hf.sampling import sample_seed

INSTALL = "pip install git+https://github.com/MoonshotAI/Kimi-Audio.git (or set code_dir to a clone of it)"
# Upstream's defaults for the audio head (unused with text out) and the text repetition penalty.
UPSTREAM_SAMPLING = {
    "audio_temperature": 0.8,
    "audio_top_k": 10,
    "audio_repetition_penalty": 1.0,
    "audio_repetition_window_size": 64,
    "text_repetition_penalty": 1.0,
    "text_repetition_window_size": 16,
}


class KimiCodeMissing(ImportError):
    """The Kimi-Audio inference code (or one of its requirements) is not importable."""


def import_kimia(code_dir: str | Path | None, key: str = "kimi-audio-7b") -> Any:
    """``kimia_infer.api.kimia`` from the installed package or ``code_dir``, or an error saying how to get it."""
    if code_dir:
        folder = Path(code_dir).expanduser()
        if not (folder / "kimia_infer").is_dir():
            raise KimiCodeMissing(f"models.{key}.code_dir={str(folder)!r} has no kimia_infer/ folder. {INSTALL}")
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("kimia_infer.api.kimia")
    except ImportError as e:
        raise KimiCodeMissing(f"model {key!r}: importing Kimi-Audio's kimia_infer failed ({e}). {INSTALL}") from e


@register_model("kimi-audio")
class KimiAudioALM(AudioLanguageModel):
    """Kimi-Audio via ``kimia_infer`` (see the module docstring)."""

    def __init__(
        self,
        key: str,
        model_id: str,
        revision: str | None,
        *,
        code_dir: str | None = None,
        text_top_k: int = 5,
        needs: str = "",
    ) -> None:
        super().__init__(key, model_id, revision)
        if text_top_k < 1:
            raise ValueError(f"params.yaml models.{key}.text_top_k must be >= 1, got {text_top_k}")
        self.code_dir = code_dir
        self.text_top_k = text_top_k
        self.capabilities = Capabilities(
            logprobs=False, beam_search=False, option_scoring=False, needs=needs or "GPU; Kimi-Audio code"
        )
        self.model: Any = None

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> KimiAudioALM:
        return cls(
            key,
            str(spec.get("checkpoint", "moonshotai/Kimi-Audio-7B-Instruct")),
            None if spec.get("revision") is None else str(spec["revision"]),
            code_dir=spec.get("code_dir"),
            text_top_k=int(spec.get("text_top_k", 5)),
            needs=spec.get("needs", ""),
        )

    @classmethod
    def spec_capabilities(cls, spec: dict[str, Any]) -> Capabilities:
        return Capabilities(
            logprobs=False, beam_search=False, option_scoring=False, needs=spec.get("needs") or "GPU; Kimi-Audio code"
        )

    def _ensure_loaded(self) -> None:
        if self.model is None:
            kimia = import_kimia(self.code_dir, self.key)
            path = self.model_id
            if self.revision and not Path(path).exists():
                from huggingface_hub import snapshot_download

                path = snapshot_download(self.model_id, revision=self.revision)
            self.model = kimia.KimiAudio(model_path=path, load_detokenizer=False)

    def messages(self, request: AudioRequest, wav_path: str) -> list[dict[str, Any]]:
        """Upstream's message list: every turn as text, the clip as an audio message before its turn's text."""
        audio_turn = request.audio_turn()
        out: list[dict[str, Any]] = []
        for i, m in enumerate(request.messages):
            if i == audio_turn:
                out.append({"role": m.role, "message_type": "audio", "content": wav_path})
            out.append({"role": m.role, "message_type": "text", "content": m.text})
        return out

    def _sampling(self, config: GenerationConfig) -> dict[str, Any]:
        if config.mode == "beam":
            raise ValueError(f"model {self.key!r}: Kimi-Audio's code has no beam search; use mode 'sample'")
        if config.mode == "sample" and config.top_p < 1.0:
            raise ValueError(f"model {self.key!r}: Kimi-Audio's sampler has no top-p (got top_p={config.top_p})")
        temperature = 0.0 if config.mode == "greedy" else config.temperature
        return {
            **UPSTREAM_SAMPLING,
            "text_temperature": temperature,
            "text_top_k": self.text_top_k,
            "max_new_tokens": config.max_new_tokens,
        }

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        import soundfile as sf
        import torch

        if not requests:
            return []
        sampling = self._sampling(config)
        self._ensure_loaded()
        results = []
        with tempfile.TemporaryDirectory(prefix="ambiemo-kimi-") as tmp:
            for request in requests:
                wav = request.waveform_at(self.sample_rate)
                path = str(Path(tmp) / f"{request.audio_sha1()}.wav")
                sf.write(path, wav, self.sample_rate, subtype="FLOAT")
                cands = []
                for j in range(config.n):
                    # Candidate j's own seed, from the request's content: no batch or order enters it.
                    torch.manual_seed(sample_seed(self.identity, request, config, j))
                    t0 = time.perf_counter()
                    _, text = self.model.generate(self.messages(request, path), output_type="text", **sampling)
                    cands.append(
                        Candidate(
                            text=str(text).strip(),
                            logprob=None,
                            token_logprobs=None,
                            n_tokens=0,  # upstream returns no token ids
                            meta={"wall_s": time.perf_counter() - t0},
                        )
                    )
                    self.usage.calls += 1
                results.append(cands)
        return results
