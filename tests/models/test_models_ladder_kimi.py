"""Kimi-Audio through its upstream ``kimia_infer`` code, against a stand-in package with the same entry
point and call signature (``KimiAudio(model_path, load_detokenizer)``, ``generate(messages, output_type,
**sampling)`` returning ``(wav, text)``): the upstream code is not installable here."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, CapabilityError, GenerationConfig, Message
from ambiemo.models.upstream.kimi_audio import KimiCodeMissing, import_kimia

torch = pytest.importorskip("torch")
SR = 16_000

STAND_IN = textwrap.dedent(
    '''
    """A stand-in for kimia_infer/api/kimia.py: records its calls, answers from torch's RNG."""
    import soundfile as sf
    import torch

    calls = []


    class KimiAudio:
        def __init__(self, model_path, load_detokenizer=True):
            calls.append(("init", model_path, load_detokenizer))

        def generate(self, chats, output_type="both", **sampling):
            audio = [c for c in chats if c["message_type"] == "audio"]
            wav, sr = sf.read(audio[0]["content"], dtype="float32")
            calls.append(("generate", chats, output_type, sampling, wav, sr))
            word = ["neutral", "happy", "angry", "sad"][int(torch.randint(0, 4, ()))]
            return None, f" {word} "
    '''
)


@pytest.fixture()
def kimia(tmp_path):
    code = tmp_path / "Kimi-Audio"
    (code / "kimia_infer" / "api").mkdir(parents=True)
    (code / "kimia_infer" / "__init__.py").write_text("")
    (code / "kimia_infer" / "api" / "__init__.py").write_text("")
    (code / "kimia_infer" / "api" / "kimia.py").write_text(STAND_IN)
    yield code
    for name in [n for n in sys.modules if n == "kimia_infer" or n.startswith("kimia_infer.")]:
        del sys.modules[name]
    if str(code) in sys.path:  # not where the call was refused before loading
        sys.path.remove(str(code))


def _model(code, **extra):
    spec = {"adapter": "kimi-audio", "checkpoint": str(code), "code_dir": str(code), **extra}  # a local "checkpoint"
    return load_model("kimi-audio-7b", spec)


def _request(utt="u", seconds=1.0, sr=SR, seed=0):
    wav = (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)
    return AudioRequest(utt, wav, sr, [Message("system", "Be an expert."), Message("user", "Emotion?", audio=True)])


def test_missing_code_says_how_to_install(tmp_path):
    with pytest.raises(
        KimiCodeMissing, match="has no kimia_infer/ folder.*pip install git\\+https://github.com/MoonshotAI"
    ):
        import_kimia(tmp_path)
    model = load_model("kimi-audio-7b", {"adapter": "kimi-audio", "checkpoint": "moonshotai/Kimi-Audio-7B-Instruct"})
    assert model.model is None
    if "kimia_infer" not in sys.modules:
        with pytest.raises(KimiCodeMissing, match="importing Kimi-Audio's kimia_infer failed"):
            model.generate([_request()], GenerationConfig())


def test_upstream_message_format_audio_and_sampling(kimia):
    model = _model(kimia, text_top_k=3)
    request = _request(seconds=1.5)
    (cands,) = model.generate([request], GenerationConfig(mode="greedy", max_new_tokens=7))
    upstream = sys.modules["kimia_infer.api.kimia"]
    assert upstream.calls[0] == ("init", str(kimia), False)  # no detokenizer: text out only
    _, chats, output_type, sampling, wav, sr = upstream.calls[1]
    assert output_type == "text"
    assert [(c["role"], c["message_type"]) for c in chats] == [("system", "text"), ("user", "audio"), ("user", "text")]
    assert chats[2]["content"] == "Emotion?"
    assert sr == SR
    np.testing.assert_array_equal(wav, request.waveform)  # float WAV: the clip exactly
    assert sampling["text_temperature"] == 0.0 and sampling["text_top_k"] == 3 and sampling["max_new_tokens"] == 7
    assert cands[0].text in {"neutral", "happy", "angry", "sad"}
    assert cands[0].logprob is None and cands[0].token_logprobs is None


def test_resamples_to_16k(kimia):
    model = _model(kimia)
    model.generate([_request(seconds=1.0, sr=8000)], GenerationConfig())
    _, _, _, _, wav, sr = sys.modules["kimia_infer.api.kimia"].calls[-1]
    assert sr == SR and len(wav) == SR


def test_candidates_are_seeded_per_utterance_not_per_batch(kimia):
    model = _model(kimia)
    cfg = GenerationConfig(mode="sample", n=6, temperature=0.8, seed=5)
    a, b = _request("a", seed=1), _request("b", seed=2)
    together = model.generate([a, b], cfg)
    alone = model.generate([b], cfg)
    assert [c.text for c in together[1]] == [c.text for c in alone[0]]
    other = model.generate([b], GenerationConfig(mode="sample", n=6, temperature=0.8, seed=6))
    assert [c.text for c in other[0]] != [c.text for c in alone[0]]
    assert len({c.text for c in together[0]}) > 1
    assert sys.modules["kimia_infer.api.kimia"].calls[-1][3]["text_temperature"] == 0.8
    assert model.usage.calls == 6 * 4


def test_refuses_what_upstream_cannot_do(kimia):
    model = _model(kimia)
    assert not (model.capabilities.logprobs or model.capabilities.beam_search or model.capabilities.option_scoring)
    with pytest.raises(ValueError, match="no beam search"):
        model.generate([_request()], GenerationConfig(mode="beam", n=2, num_beams=2))
    with pytest.raises(ValueError, match="no top-p"):
        model.generate([_request()], GenerationConfig(mode="sample", n=2, top_p=0.9))
    with pytest.raises(CapabilityError, match="cannot score options"):
        model.score_options(_request(), ["happy", "sad"])
    with pytest.raises(CapabilityError, match="needs logprobs"):
        model.require("logprobs", "w-bon")
