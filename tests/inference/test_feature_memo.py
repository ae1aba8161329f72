"""Audio features are extracted once per clip and extractor settings, across the strategies of one
dataset x model: counted calls, identical outputs, and the memo's bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import TINY_N, tiny_params

from ambiemo.data import audio
from ambiemo.data.audio import FeatureMemo, settings_key
from ambiemo.inference.predictions import read_predictions
from ambiemo.inference.run import run_strategies


def test_memo_keys_by_content_and_settings() -> None:
    memo = FeatureMemo(max_bytes=10**6)
    calls = []

    def compute(tag):
        def run():
            calls.append(tag)
            return {"x": np.full(10, len(calls), dtype=np.float32)}  # 40 bytes

        return run

    a = memo.get("clip-a", settings_key({"n_mels": 80}), compute("a80"))
    again = memo.get("clip-a", settings_key({"n_mels": 80}), compute("a80 again"))
    other_settings = memo.get("clip-a", settings_key({"n_mels": 128}), compute("a128"))
    other_clip = memo.get("clip-b", settings_key({"n_mels": 80}), compute("b80"))
    assert calls == ["a80", "a128", "b80"]  # the repeat was answered from the memo
    assert again is a and other_settings is not a and other_clip is not a
    assert memo.stats() == {"entries": 3, "bytes": 120, "max_bytes": 10**6, "hits": 1, "misses": 3, "evictions": 0}
    # settings fingerprints do not depend on key order, and do depend on every value
    assert settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1}) != settings_key({"a": 1, "b": 3})


def test_memo_is_bounded_in_bytes_least_recently_used_first() -> None:
    memo = FeatureMemo(max_bytes=100)  # room for two 40-byte entries

    def value():
        return (np.zeros(10, dtype=np.float32), 7)

    memo.get("a", "s", value)
    memo.get("b", "s", value)
    memo.get("a", "s", value)  # a is now the most recently used
    memo.get("c", "s", value)  # evicts b
    assert memo.bytes == 80 and memo.evictions == 1
    assert [k for k, _ in memo._items] == ["a", "c"]
    off = FeatureMemo(max_bytes=0)
    off.get("a", "s", value)
    off.get("a", "s", value)
    assert len(off) == 0 and off.misses == 2  # 0 turns it off: every request computes


@pytest.fixture
def extractor_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the Whisper feature extractor (the tiny Qwen2-Audio's), whoever makes them."""
    from transformers import WhisperFeatureExtractor

    calls: list[int] = []
    original = WhisperFeatureExtractor.__call__

    def counting(self, raw_speech, *args, **kwargs):
        calls.append(1)
        return original(self, raw_speech, *args, **kwargs)

    monkeypatch.setattr(WhisperFeatureExtractor, "__call__", counting)
    return calls


def _tables(folder: Path, strategies: list[str]) -> dict[str, pd.DataFrame]:
    timing = ["wall_s", "verifier_wall_s"]
    return {s: read_predictions(folder / f"{s}.parquet").df.drop(columns=timing, errors="ignore") for s in strategies}


@pytest.mark.slow
def test_two_strategies_extract_each_clip_once(
    manifest: Path,
    tmp_path: Path,
    extractor_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strategies = ["baseline", "self-consistency"]
    runs = {}
    for memo_bytes in (0, audio.FEATURE_MEMO_BYTES):
        monkeypatch.setattr(audio, "FEATURE_MEMO", FeatureMemo(max_bytes=memo_bytes))
        extractor_calls.clear()
        run_dir = tmp_path / f"memo-{memo_bytes}"
        params = tiny_params(run_dir)  # its own generation cache: every call reaches the model
        params["models"]["tiny"] = {"adapter": "hf-qwen2-audio", "checkpoint": "tiny:qwen2-audio", "dtype": "float32"}
        run_strategies(params, "tiny", strategies, manifest, run_dir / "out")
        runs[memo_bytes] = (len(extractor_calls), audio.FEATURE_MEMO.stats(), _tables(run_dir / "out", strategies))
    (calls_off, _, off), (calls_on, stats_on, on) = runs[0], runs[audio.FEATURE_MEMO_BYTES]
    # Without the memo every generate call extracts its clips again: baseline once per clip, and
    # self-consistency once per budget's call at least; with it, each clip once for both strategies.
    assert calls_off >= 2 * TINY_N
    assert calls_on == TINY_N and stats_on["misses"] == TINY_N and stats_on["hits"] == calls_off - TINY_N
    for s in strategies:
        pd.testing.assert_frame_equal(on[s], off[s])  # the memo changes the cost, never an answer


def test_api_routes_encode_each_clip_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAV an API request carries is encoded once per clip, however many requests send it, and is
    the same bytes the encoder gives; two clips differing in one sample never share an entry."""
    import base64

    from ambiemo.models.api import client as api
    from ambiemo.models.base import AudioRequest, Message

    monkeypatch.setattr(audio, "FEATURE_MEMO", FeatureMemo(max_bytes=10**7))
    calls = []
    encode = api.wav_bytes
    monkeypatch.setattr(api, "wav_bytes", lambda x, sr: calls.append(len(x)) or encode(x, sr))
    rng = np.random.default_rng(0)
    clip = rng.uniform(-0.5, 0.5, 16000).astype(np.float32)
    nudged = clip.copy()
    nudged[100] += 1e-3
    messages = (Message("user", "Which emotion?"),)
    requests = [AudioRequest(f"u{i}", clip, 16000, messages) for i in range(3)]
    texts = [api.request_wav(r, as_base64=True) for r in requests]
    wavs = [api.request_wav(r) for r in requests]
    assert len(calls) == 2  # once as base64, once as bytes, for three requests
    assert texts[0] == base64.b64encode(encode(clip, 16000)).decode("ascii") and len(set(texts)) == 1
    assert wavs[0] == encode(clip, 16000) and len(set(wavs)) == 1
    assert api.request_wav(AudioRequest("v", nudged, 16000, messages)) == encode(nudged, 16000) != wavs[0]
    assert audio.FEATURE_MEMO.bytes == len(texts[0]) + 2 * len(wavs[0])  # strings and bytes count against the bound
