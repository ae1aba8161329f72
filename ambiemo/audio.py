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
    """An audio file that is missing, empty or cannot be decoded."""


def load_audio(path: str | os.PathLike, sample_rate: int | None = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """The waveform of ``path`` as float32 mono, resampled to ``sample_rate`` (None: keep the file's).

    Channels are averaged. Raises ``AudioError`` naming the file when it is missing,
    unreadable (for example a Git LFS pointer saved as ``.wav``) or holds no samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        hint = ""
        with path.open("rb") as f:
            if f.read(40).startswith(b"version https://git-lfs"):
                hint = " (it is a Git LFS pointer, not audio: fetch the real file, e.g. `git lfs pull`)"
        raise AudioError(f"{path}: cannot decode audio{hint}: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file has no samples")
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
