"""Reading audio: soundfile decodes, soxr resamples. No torchaudio.

Every model receives the same thing: a float32 mono waveform in [-1, 1] at the model's
sample rate (16 kHz for every ALM in the study). Resampling calls soxr, the library behind
``librosa.resample``'s default (``res_type="soxr_hq"``), directly: the output is the same
and it spares every inference process the seconds that importing librosa takes.

``FeatureMemo`` keeps what a local adapter's feature extractor made of a clip, so that the
strategies of one dataset x model (which run in one process) extract each clip's features once.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
    """Duration in seconds from the file header (no decoding); ``AudioError`` if unreadable or
    without a single sample (a clip no model can be given)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{path}: cannot read audio header: {e}") from e
    if info.frames <= 0:
        raise AudioError(f"{path}: audio file has no samples")
    return info.frames / info.samplerate


# --------------------------------------------------------------------------- the feature memo

FEATURE_MEMO_BYTES = 512 * 2**20  # feature tensors kept in memory (a 30 s Whisper clip is ~1.5 MB)


def nbytes(value: Any) -> int:
    """Bytes held by the arrays, tensors, bytes and strings in ``value`` (nested dicts, lists and tuples)."""
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nbytes(v) for v in value)
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    return int(getattr(value, "nbytes", 0))


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short, stable fingerprint of a feature extractor's settings (anything JSON can print)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha1(text.encode()).hexdigest()


class FeatureMemo:
    """Audio features computed once per clip and extractor settings, whichever strategy asks.

    Keyed by the audio's content hash and a fingerprint of everything the features depend on
    (``settings_key``: the adapter, its sample rate, the extractor's configuration), so that two
    models whose extractors differ never share an entry and two requests with the same clip and
    settings always do. Bounded by ``max_bytes`` (least recently used entries go first; ``0``
    turns it off). The value is the one the first computation returned: callers must not modify it.
    Thread-safe; ``hits``, ``misses`` and ``evictions`` count what it did.
    """

    def __init__(self, max_bytes: int = FEATURE_MEMO_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, audio_key: str, settings: str, compute: Callable[[], Any]) -> Any:
        """The memoised features of (``audio_key``, ``settings``), computing them on a miss."""
        key = (audio_key, settings)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            self.misses += 1
        value = compute()  # outside the lock: extraction is the slow part
        size = nbytes(value)
        with self._lock:
            if key not in self._items and size <= self.max_bytes:
                self._items[key] = (value, size)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self.bytes -= dropped
                    self.evictions += 1
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0
            self.hits = self.misses = self.evictions = 0

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._items),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }


# One memo per process, shared by every local adapter: the settings fingerprint keeps models apart.
FEATURE_MEMO = FeatureMemo()
