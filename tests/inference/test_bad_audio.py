"""Bad audio in a real corpus layout (CREMA-D's ``AudioWAV/`` beside its vote table): broken clips
are per-utterance failures naming the utterance and the reason, valid-but-odd clips are predicted,
the run goes on, and the stage fails at the end above params ``inference.max_failure_share``."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ambiemo.data.crema_d import VOTE_COLUMNS, load_crema_d
from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import build_manifest, write_manifest
from ambiemo.inference.run import InferenceFailures, run_inference
from ambiemo.models.base import Capabilities
from ambiemo.models.fake import FakeModel

SR = 16000
WINDOW_S = 30.0
LABELS = tuple(VOTE_COLUMNS.values())


def _speech(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _wav_bytes(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


# name -> file content (None: no file). Clip names follow CREMA-D's <actor>_<sentence>_<emotion>_<level>.
ODD = {  # valid but odd: predicted
    "1001_IEO_NEU_XX": _wav_bytes(_speech(SR, 1.0), SR),
    "1002_IEO_HAP_XX": _wav_bytes(np.zeros(SR, np.float32), SR),  # all silence
    "1003_IEO_SAD_XX": _wav_bytes(_speech(8000, 1.0), 8000),
    "1004_IEO_ANG_XX": _wav_bytes(_speech(22050, 1.0), 22050),
    "1005_IEO_FEA_XX": _wav_bytes(_speech(44100, 1.0), 44100),
    "1006_IEO_DIS_XX": _wav_bytes(_speech(48000, 1.0), 48000),
    "1007_IEO_NEU_XX": _wav_bytes(_speech(SR, 1.0, channels=2), SR),  # stereo
    "1008_IEO_HAP_XX": _wav_bytes(_speech(SR, WINDOW_S + 10.0), SR),  # longer than the model's window
}
nan = _speech(SR, 0.5)
nan[100] = np.nan
inf = _speech(SR, 0.5)
inf[-1] = np.inf
BROKEN = {  # name -> (content, the reason the failure must give)
    "1009_IEO_SAD_XX": (None, "audio file not found"),
    "1010_IEO_ANG_XX": (b"", r"audio file is empty \(0 bytes\)"),
    "1011_IEO_FEA_XX": (_wav_bytes(np.zeros(0, np.float32), SR), "audio file has no samples"),
    "1012_IEO_DIS_XX": (b"<html><body>404 Not Found</body></html>\n" * 4, "cannot decode audio"),
    "1013_IEO_NEU_XX": (_wav_bytes(_speech(SR, 1.0), SR)[:30], r"cannot decode audio \(a WAV header needs 44 bytes"),
    "1014_IEO_HAP_XX": (_wav_bytes(nan, SR, "FLOAT"), "1 of 8000 samples are NaN or infinite"),
    "1015_IEO_SAD_XX": (_wav_bytes(inf, SR, "FLOAT"), "1 of 8000 samples are NaN or infinite"),
    "1016_IEO_ANG_XX": (
        b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A mp42isom" + bytes(64),
        r"cannot decode audio \(it is an MP4/M4A container",
    ),
}


@dataclass(frozen=True)
class WindowCaps(Capabilities):
    """Capabilities with the audio window (``Capabilities.max_audio_s`` in the models contract)."""

    max_audio_s: float | None = WINDOW_S


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A CREMA-D root: processedResults/tabulatedVotes.csv beside AudioWAV/, then its manifest."""
    root = tmp_path_factory.mktemp("CREMA-D")
    (root / "AudioWAV").mkdir()
    (root / "processedResults").mkdir()
    names = [*ODD, *BROKEN]
    rng = np.random.default_rng(3)
    votes = rng.integers(0, 4, size=(len(names), len(VOTE_COLUMNS)))
    votes[:, 4] += 1  # at least one vote each
    table = pd.DataFrame(votes, columns=list(VOTE_COLUMNS), index=[100001 + i for i in range(len(names))])
    table["fileName"] = names
    table.to_csv(root / "processedResults" / "tabulatedVotes.csv")
    for name, content in {**ODD, **{k: v[0] for k, v in BROKEN.items()}}.items():
        if content is not None:
            (root / "AudioWAV" / f"{name}.wav").write_bytes(content)

    loaded = load_crema_d(root, {})  # the corpus's own loader gives the utterances and their audio paths
    utts = sorted(loaded.utterances, key=lambda u: u.utt_id)
    counts = np.array([[sum(1 for r in u.ratings if r.categories == (x,)) for x in LABELS] for u in utts], dtype=float)
    info = pd.DataFrame(
        {
            "utt_id": [u.utt_id for u in utts],
            "dataset": "crema-d",
            "audio_path": [u.audio_path for u in utts],
            "duration_s": np.nan,
            "speaker": [u.speaker for u in utts],
        }
    )
    ls = LabelSet("crema6", LABELS)
    df, amb = build_manifest(info, counts, counts.sum(axis=1).astype(int), ls, AmbiguityBins())
    return write_manifest(df, root / "manifest.parquet", label_set=ls, ambiguity=amb, exclusions={})


def _params(tmp_path: Path, share: float | None) -> dict:
    params = {
        "seed": 1,
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "strategies": {"batch_size": 4},
    }
    if share is not None:
        params["inference"] = {"max_failure_share": share}
    return params


def _recording_fake() -> tuple[FakeModel, dict[str, np.ndarray]]:
    seen: dict[str, np.ndarray] = {}

    def script(request, config, index):
        seen[request.utt_id] = request.waveform
        return '{"neutral": 0.5, "sad": 0.5}' if request.utt_id.endswith("0") else '{"happy": 1}'

    fake = FakeModel(script=script, labels=LABELS)
    fake.capabilities = WindowCaps(needs="nothing")
    return fake, seen


def test_broken_audio_is_a_per_utterance_failure_and_odd_audio_is_predicted(corpus, tmp_path, caplog):
    fake, seen = _recording_fake()
    with caplog.at_level(logging.INFO, logger="ambiemo.inference.run"):
        df = run_inference(_params(tmp_path, 0.5), "fake", "baseline", corpus, tmp_path / "p.parquet", model=fake)
    meta = df.attrs["meta"]
    failures = meta["model_failures"]
    assert sorted(failures) == sorted(BROKEN), "exactly the broken clips failed"
    for name, (_, reason) in BROKEN.items():
        assert failures[name].startswith("audio: ") and f"{name}.wav" in failures[name], failures[name]
        assert re.search(reason, failures[name]), (name, failures[name])
        assert f"utterance {name} failed: audio: " in caplog.text, name  # and in the log
    assert meta["failures_by_kind"] == {"audio": len(BROKEN), "model": 0}
    # every odd clip reached the model as 16 kHz mono float32, and was predicted
    assert sorted(seen) == sorted(ODD)
    ok = df.set_index("utt_id")["parsed_ok"]
    assert ok[list(ODD)].all() and not ok[list(BROKEN)].any()
    for name in ("1003_IEO_SAD_XX", "1004_IEO_ANG_XX", "1005_IEO_FEA_XX", "1006_IEO_DIS_XX", "1007_IEO_NEU_XX"):
        assert seen[name].dtype == np.float32 and seen[name].ndim == 1 and len(seen[name]) == SR, name
    np.testing.assert_allclose(seen["1007_IEO_NEU_XX"], 0.75 * _speech(SR, 1.0), atol=1e-4)  # channels averaged
    assert not seen["1002_IEO_HAP_XX"].any()
    # over-long: truncated to the window, with a warning naming the utterance, and noted in the metadata
    assert len(seen["1008_IEO_HAP_XX"]) == int(WINDOW_S * SR)
    assert "utterance 1008_IEO_HAP_XX: audio truncated from 40.00 s to the model's 30 s window" in caplog.text
    assert meta["audio_notes"] == {
        "1002_IEO_HAP_XX": "silent (every sample is zero)",
        "1008_IEO_HAP_XX": "truncated from 40.00 s to the model's 30 s window",
    }


def test_the_stage_fails_at_the_end_naming_them(corpus, tmp_path):
    fake, seen = _recording_fake()
    out = tmp_path / "p.parquet"
    with pytest.raises(InferenceFailures) as err:
        run_inference(_params(tmp_path, None), "fake", "baseline", corpus, out, model=fake)  # default: 1%
    message = str(err.value)
    assert f"{len(BROKEN)} of {len(ODD) + len(BROKEN)} utterances failed (50.0%)" in message
    assert "inference.max_failure_share = 1.0%" in message
    assert all(name in message for name in BROKEN)
    assert sorted(seen) == sorted(ODD), "the run went on past every broken clip"
    from ambiemo.inference.predictions import read_predictions

    assert sorted(read_predictions(out).meta["model_failures"]) == sorted(BROKEN), "and wrote what it computed"
