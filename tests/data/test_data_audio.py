"""load_audio: decoding, channel mixing, resampling, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ambiemo.data.audio import AudioError, audio_duration, load_audio


def _tone(sr: float, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _tone_16(path) -> np.ndarray:
    return sf.read(str(path), dtype="float32")[0]


def _peak_hz(wav: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav))
    return float(np.fft.rfftfreq(len(wav), 1 / sr)[spectrum.argmax()])


def test_resamples_to_16k_and_keeps_the_pitch(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(str(path), _tone(44100, 2.0, 440.0), 44100, subtype="PCM_16")
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.shape == (32000,)
    assert _peak_hz(wav, 16000) == pytest.approx(440.0, abs=1.0)
    assert np.abs(wav).max() == pytest.approx(0.5, abs=0.02)
    import librosa  # the reference: load_audio must resample exactly as librosa's default does

    np.testing.assert_allclose(wav, librosa.resample(_tone_16(path), orig_sr=44100, target_sr=16000), atol=1e-6)
    native = load_audio(path, sample_rate=None)
    assert native.shape == (88200,)
    assert audio_duration(path) == pytest.approx(2.0)


@pytest.mark.parametrize("n, orig_sr", [(52096, 22050), (1001, 44100), (7, 8000)])
def test_resample_matches_librosa(n, orig_sr):
    import librosa

    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    from ambiemo.data.audio import resample

    ours, ref = resample(x, orig_sr, 16000), librosa.resample(x, orig_sr=orig_sr, target_sr=16000)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_stereo_is_averaged(tmp_path):
    left, right = _tone(16000, 1.0, 300.0), np.zeros(16000, np.float32)
    path = tmp_path / "stereo.flac"
    sf.write(str(path), np.stack([left, right], axis=1), 16000)
    np.testing.assert_allclose(load_audio(path), left / 2, atol=1e-4)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nowhere.wav: audio file not found"):
        load_audio(tmp_path / "nowhere.wav")
    stub = tmp_path / "stub.wav"
    stub.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 12345\n")
    with pytest.raises(AudioError, match=r"stub.wav: cannot decode audio \(it is a Git LFS pointer"):
        load_audio(stub)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(AudioError, match="garbage.wav: cannot decode audio"):
        load_audio(garbage)
    with pytest.raises(AudioError, match="garbage.wav: cannot read audio header"):
        audio_duration(garbage)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: audio file has no samples"):
        load_audio(empty)


def test_real_recording_from_emodb(shared_dir):
    """A real 16 kHz speech file: loads unchanged at 16 kHz, and resampled to 8 kHz keeps its duration."""
    files = sorted((shared_dir / "data" / "emodb").glob("*.wav"))
    if not files:
        pytest.skip("shared/data/emodb has no recordings")
    path = files[0]
    reference, sr = sf.read(str(path), dtype="float32")
    wav = load_audio(path)
    assert sr == 16000
    np.testing.assert_array_equal(wav, reference)
    assert len(load_audio(path, sample_rate=8000)) == pytest.approx(len(reference) / 2, abs=2)


@pytest.mark.parametrize(
    "kind, match",
    [
        ("nan", r"1 of 1600 samples are NaN or infinite"),
        ("inf", r"2 of 3200 samples are NaN or infinite"),  # stereo: both channels counted
        ("empty", r"audio file is empty \(0 bytes\)"),
        ("m4a", r"cannot decode audio \(it is an MP4/M4A container .*which soundfile cannot decode"),
        ("header", r"cannot decode audio \(a WAV header needs 44 bytes, the file has 20"),
    ],
)
def test_broken_audio_is_refused_with_the_reason(tmp_path, kind, match):
    path = tmp_path / f"{kind}.wav"
    if kind == "nan":
        x = _tone(16000, 0.1, 200.0)
        x[7] = np.nan
        sf.write(str(path), x, 16000, subtype="FLOAT")
    elif kind == "inf":
        x = np.stack([_tone(16000, 0.1, 200.0)] * 2, axis=1)
        x[3] = np.inf
        sf.write(str(path), x, 16000, subtype="FLOAT")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "m4a":
        path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A mp42isom" + bytes(64))
    else:
        sf.write(str(path), _tone(16000, 0.1, 200.0), 16000)
        path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(AudioError, match=f"{kind}.wav: {match}"):
        load_audio(path)


def test_silence_is_valid_audio(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(str(path), np.zeros(8000, np.float32), 8000)
    wav = load_audio(path)
    assert wav.shape == (16000,) and not wav.any()
