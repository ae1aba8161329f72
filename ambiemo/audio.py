"""Reading audio: soundfile decodes, soxr resamples. No torchaudio.

Every model receives the same thing: a float32 mono waveform in [-1, 1] at the model's
sample rate (16 kHz for every ALM in the study). Resampling calls soxr, the library behind
``librosa.resample``'s default (``res_type="soxr_hq"``), directly: the output is the same
and it spares every inference process the seconds that importing librosa takes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEFAULT_SAMPLE_RATE = 16000


class AudioError(ValueError):
    """An audio file that is missing, empty, cannot be decoded, or holds samples no model can use."""


# Containers soundfile (libsndfile) cannot decode, recognised by their first bytes so the message can say
# what the file is and how to convert it.
_UNSUPPORTED = (
    (4, b"ftyp", "an MP4/M4A container (AAC or ALAC)"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM container"),
    (0, b"\x30\x26\xb2\x75", "an ASF/WMA container"),
    (0, b"#!AMR", "an AMR file"),
)


def _what_is_it(head: bytes) -> str:
    """A hint for an undecodable file, from its first bytes."""
    if head.startswith(b"version https://git-lfs"):
        return " (it is a Git LFS pointer, not audio: fetch the real file, e.g. `git lfs pull`)"
    for offset, magic, name in _UNSUPPORTED:
        if head[offset : offset + len(magic)] == magic:
            return f" (it is {name}, which soundfile cannot decode: convert it to WAV or FLAC, e.g. with ffmpeg)"
    if head.startswith(b"RIFF") and len(head) < 44:
        return f" (a WAV header needs 44 bytes, the file has {len(head)}: it is truncated)"
    return ""


def load_audio(path: str | os.PathLike, sample_rate: int | None = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """The waveform of ``path`` as float32 mono, resampled to ``sample_rate`` (None: keep the file's).

    Channels are averaged. Raises ``AudioError`` naming the file and the reason when it is
    missing, empty, undecodable (for example a Git LFS pointer saved as ``.wav``, a truncated
    header, or a container soundfile cannot read such as M4A), holds no samples, or holds NaN or
    infinite samples (broken audio, never silently zeroed). Valid but odd audio (silence, any
    sample rate, several channels) loads.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        with path.open("rb") as f:
            hint = _what_is_it(f.read(64))
        raise AudioError(f"{path}: cannot decode audio{hint}: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file has no samples")
    bad = ~np.isfinite(data)
    if bad.any():
        raise AudioError(f"{path}: {int(bad.sum())} of {data.size} samples are NaN or infinite")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sample_rate is not None and sr != sample_rate:
        wav = resample(wav, sr, sample_rate)
    return np.ascontiguousarray(wav, dtype=np.float32)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(wav, orig_sr=..., target_sr=...)`` with its default soxr_hq filter."""
    import soxr

    out = soxr.resample(wav, orig_sr, target_sr, quality="soxr_hq")
    # librosa pads or trims to ceil(n * ratio) samples; so do we, for identical output.
    n = int(np.ceil(len(wav) * target_sr / orig_sr))
    return out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding); ``AudioError`` if unreadable."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot read audio header: {e}") from e
    return info.frames / info.samplerate
