"""The model contract's shared pieces: which turn carries the clip, generation settings, usage
counted once in the base class, the identity and its settings hash, remote code."""

import hashlib
import json

import numpy as np
import pytest

from ambiemo.models import load_model
from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    CapabilityError,
    GenerationConfig,
    Message,
    OptionScores,
)
from ambiemo.models.identity import COSMETIC_KEYS, RemoteCodeRefused, check_remote_code


def _request(*messages: Message) -> AudioRequest:
    return AudioRequest("u1", np.zeros(160, dtype=np.float32), 16_000, list(messages))


def test_audio_turn_is_the_marked_turn():
    sys, u1, a = Message("system", "s"), Message("user", "q1"), Message("assistant", "a")
    assert _request(sys, u1, a, Message("user", "q2", audio=True)).audio_turn() == 3
    assert _request(sys, Message("user", "q1", audio=True), a, Message("user", "q2")).audio_turn() == 1


def test_audio_turn_refuses_what_it_would_have_to_guess():
    with pytest.raises(ValueError, match="'u1': 2 turns are marked"):
        _request(Message("user", "a", audio=True), Message("user", "b", audio=True)).audio_turn()
    with pytest.raises(ValueError, match="'u1': no message has audio=True"):
        _request(Message("system", "s"), Message("user", "q")).audio_turn()
    with pytest.raises(ValueError, match="'u1': only a user turn can carry the audio, not 'assistant'"):
        _request(Message("user", "q"), Message("assistant", "a", audio=True)).audio_turn()


def test_waveform_at_resamples_through_ambiemo_audio():
    from scipy.signal import resample_poly

    t = np.arange(8000) / 8000
    request = AudioRequest("u", np.sin(2 * np.pi * 440 * t).astype(np.float32), 8000, [])
    wav = request.waveform_at(16_000)
    assert wav.dtype == np.float32 and wav.shape == (16_000,)
    # An independent resampler agrees away from the edges.
    np.testing.assert_allclose(wav[200:-200], resample_poly(request.waveform, 2, 1)[200:-200], atol=2e-3)
    assert np.array_equal(request.waveform_at(8000), request.waveform)
    with pytest.raises(ValueError, match="'s': waveform must be mono"):
        AudioRequest("s", np.zeros((2, 100), np.float32), 8000, []).waveform_at(16_000)


def test_audio_hash_changes_with_content_and_rate():
    a = _request(Message("user", "q"))
    b = AudioRequest("u1", a.waveform.copy(), 8_000, a.messages)
    c = AudioRequest("u1", a.waveform + 1e-3, 16_000, a.messages)
    assert len({a.audio_sha1(), b.audio_sha1(), c.audio_sha1()}) == 3


def test_generation_config_refuses_impossible_settings():
    with pytest.raises(ValueError, match="greedy decoding gives one candidate"):
        GenerationConfig(mode="greedy", n=2)
    with pytest.raises(ValueError, match="num_beams=2 cannot return n=3"):
        GenerationConfig(mode="beam", n=3, num_beams=2)


def test_mean_logprob_is_per_token_and_none_without_logprobs():
    assert Candidate("x", -6.0, None, 3).mean_logprob() == -2.0
    assert Candidate("x", None, None, 3).mean_logprob() is None


# ------------------------------------------------------------------------- usage, counted once
class Scripted(AudioLanguageModel):
    """An adapter that only returns what it is told: the base class must do all the counting."""

    def __init__(self, cands_per_request, scores=None):
        super().__init__("s", "scripted")
        self.cands, self.scores = cands_per_request, scores

    def _generate(self, requests, config):
        return [list(self.cands[r.utt_id]) for r in requests]

    def _score_options(self, request, options, prefix):
        return self.scores


def _c(n_tokens, **meta):
    return Candidate("x", -1.0, [-1.0 / max(n_tokens, 1)] * n_tokens, n_tokens, {"prompt_tokens": 10, **meta})


def _marked(utt):
    return AudioRequest(utt, np.zeros(160, np.float32), 16_000, [Message("user", "q", audio=True)])


def test_usage_is_counted_once_from_what_the_adapter_returns():
    cands = {
        "a": [_c(3), _c(4)],  # one call, one prompt of 10 tokens
        "b": [_c(2, call=0, cost_usd=0.25), _c(5, call=1, prompt_tokens=12, cost_usd=0.5)],  # two calls
        "c": [_c(0, error="HTTP 500", cost_usd=0.125), _c(0, error="HTTP 500")],  # failed
    }
    model = Scripted(cands, OptionScores(np.array([-1.0, -2.0]), prompt_tokens=7, wall_s=0.1))
    out = model.generate([_marked(u) for u in "abc"], GenerationConfig(mode="sample", n=2))
    assert [len(x) for x in out] == [2, 2, 2]
    # Hand count: calls a + b0 + b1 = 3; prompts 10 + 10 + 12; tokens 3+4 + 2+5; cost 0.25+0.5+0.125; 1 failure.
    u = model.usage
    assert (u.calls, u.prompt_tokens, u.gen_tokens, u.failures) == (3, 32, 14, 1)
    assert u.cost_usd == pytest.approx(0.875)
    assert model.score_options(_marked("a"), ["x", "y"]).tolist() == [-1.0, -2.0]
    assert (u.calls, u.prompt_tokens) == (4, 39)
    model.scores = OptionScores(np.array([np.nan, np.nan]))
    assert np.isnan(model.score_options(_marked("a"), ["x", "y"])).all()
    assert (u.calls, u.failures) == (4, 2)


def test_the_base_class_checks_what_adapters_return():
    model = Scripted({"a": [_c(1)]}, OptionScores(np.array([-1.0])))
    with pytest.raises(RuntimeError, match="returned 1 candidates for utterance 'a', expected n=2"):
        model.generate([_marked("a")], GenerationConfig(mode="sample", n=2))
    with pytest.raises(RuntimeError, match=r"scored \(1,\) for 2 options"):
        model.score_options(_marked("a"), ["x", "y"])
    with pytest.raises(ValueError, match="at least one option"):
        model.score_options(_marked("a"), [])
    assert model.usage.calls == 0  # nothing counted for refused results


def test_an_adapter_must_implement_the_hooks_to_register():
    from ambiemo.models import register_model

    class NoGenerate(AudioLanguageModel):
        @classmethod
        def from_spec(cls, key, spec, **kwargs):
            return cls(key, "x")

    with pytest.raises(TypeError, match="must implement from_spec and _generate"):
        register_model("no-generate")(NoGenerate)


def test_a_route_without_option_scoring_refuses_it():
    model = load_model("f", {"adapter": "fake", "option_scoring": False})
    with pytest.raises(CapabilityError, match="cannot score options"):
        model.score_options(_marked("a"), ["x"])
    assert not type(model).spec_capabilities({"option_scoring": False}).option_scoring


# ------------------------------------------------------------------------------------- identity
LOCAL_SPECS = {
    "hf": {"adapter": "hf-qwen2-audio", "checkpoint": "Qwen/Qwen2-Audio-7B-Instruct", "revision": "a" * 40,
           "dtype": "bfloat16", "device_map": "auto"},
    "cascade": {"adapter": "cascade", "llm": "org/llm", "llm_revision": "r1", "asr": "org/asr",
                "asr_revision": "r2", "acoustic": "summary", "dtype": "float32"},
    "af2": {"adapter": "audio-flamingo-2", "checkpoint": "nvidia/audio-flamingo-2", "revision": "b" * 40,
            "code_dir": "upstream/inference_HF_pretrained", "weights_dir": None, "dtype": "float16"},
    "ultravox": {"adapter": "hf-ultravox", "checkpoint": "fixie-ai/ultravox-v0_4", "revision": "c" * 40,
                 "trust_remote_code": True, "dtype": "bfloat16"},
    "fake": {"adapter": "fake", "answers": {"*": ["happy"]}, "logprobs": {"*": [-1.0]}, "labels": ["a", "b"]},
}  # fmt: skip
CHANGED = {"bfloat16": "float16", "float32": "bfloat16", "float16": "float32", "summary": "all", "auto": "cpu"}


def _changed(value):
    if isinstance(value, str):
        return CHANGED.get(value, value + "-2")
    if value is None:
        return "set"
    if isinstance(value, bool):
        return not value
    if isinstance(value, dict):
        return {**value, "*": ["sad"]}
    if isinstance(value, list):
        return [*value, "c"]
    return value + 1


def _identity(spec, tmp_path, key="k"):
    return load_model(key, spec, cache_dir=tmp_path).identity


@pytest.mark.parametrize("name", list(LOCAL_SPECS))
def test_each_output_affecting_field_changes_the_identity(name, tmp_path):
    spec = LOCAL_SPECS[name]
    base = _identity(spec, tmp_path)
    assert set(base) == {"route", "version", "model_id", "revision", "settings_sha256"}
    changed_fields = [k for k in spec if k != "adapter" and not (name == "ultravox" and k == "trust_remote_code")]
    for field in changed_fields:
        value = _changed(spec[field])
        if field == "revision":
            value = "d" * 40
        other = _identity({**spec, field: value}, tmp_path)
        assert other != base, f"{name}: changing {field} must change the identity"


@pytest.mark.parametrize("name", list(LOCAL_SPECS))
def test_cosmetic_fields_and_the_params_key_leave_the_identity(name, tmp_path):
    spec = LOCAL_SPECS[name]
    base = _identity(spec, tmp_path)
    cosmetic = {
        "needs": "GPU 80 GB", "params_b": 7.0, "family": "qwen", "pricing": {"input_per_mtok": 1.0},
        "concurrency": 3, "api_key_env": "X_KEY", "timeout_s": 5, "retry": {"max_attempts": 2},
        "batch_size": 2, "base_url": "http://localhost:1/v1",
    }  # fmt: skip
    assert set(cosmetic) <= COSMETIC_KEYS
    for field, value in cosmetic.items():
        assert _identity({**spec, field: value}, tmp_path) == base, f"{name}: {field} is cosmetic"
    assert _identity(spec, tmp_path, key="renamed") == base


def test_a_default_written_out_hashes_like_one_left_out(tmp_path):
    spec = {"adapter": "hf-qwen2-audio", "checkpoint": "Qwen/Qwen2-Audio-7B-Instruct"}
    assert _identity(spec, tmp_path) == _identity({**spec, "dtype": "auto", "device_map": "auto"}, tmp_path)
    cascade = {"adapter": "cascade"}
    assert _identity(cascade, tmp_path) == _identity({**cascade, "acoustic": "summary"}, tmp_path)


def test_settings_hash_is_sha256_of_the_canonical_settings(tmp_path):
    spec = {"adapter": "hf-qwen2-audio", "checkpoint": "Qwen/Qwen2-Audio-7B-Instruct", "dtype": "bfloat16",
            "needs": "GPU"}  # fmt: skip
    expected = {"dtype": "bfloat16", "device_map": "auto"}
    digest = hashlib.sha256(json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert _identity(spec, tmp_path)["settings_sha256"] == digest


# ---------------------------------------------------------------------------------- remote code
PIN = "5b3a5929d7d20f1e8971a18f637e7c8556b5a743"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"trust_remote_code": True}, "models.m: with trust_remote_code the revision must be a 40-character"),
        ({"trust_remote_code": True, "revision": "main"}, "got 'main'"),
        ({"trust_remote_code": True, "revision": PIN[:7]}, "got '5b3a592'"),
        ({"trust_remote_code": True, "revision": PIN.upper()}, "40-character commit hash"),
        ({"trust_remote_code": "yes", "revision": PIN}, "models.m: trust_remote_code must be true or false"),
    ],
)
def test_remote_code_needs_opt_in_and_a_pinned_commit(spec, message):
    with pytest.raises(RemoteCodeRefused, match=message):
        check_remote_code("m", spec)
    with pytest.raises(RemoteCodeRefused, match=message):  # a native route refuses it before loading, too
        load_model("m", {"adapter": "hf-qwen2-audio", "checkpoint": "org/remote-alm", **spec})


def test_remote_code_runs_only_when_pinned(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "ambiemo.models.weights.hub_reachable", lambda *a, **k: True
    )  # as if online: where to load from
    assert check_remote_code("m", {"trust_remote_code": True, "revision": PIN}) is True
    assert check_remote_code("m", {}) is False
    with pytest.raises(RemoteCodeRefused, match="models.m: this model runs the checkpoint's own Python code"):
        check_remote_code("m", {"revision": PIN}, needed=True)
    pinned = load_model("m", {"adapter": "hf-qwen2-audio", "checkpoint": "org/remote-alm", "revision": PIN,
                              "trust_remote_code": True})  # fmt: skip
    assert pinned._source() == ("org/remote-alm", {"revision": PIN, "trust_remote_code": True})
    plain = load_model("m", {"adapter": "hf-qwen2-audio", "checkpoint": "org/alm", "revision": PIN})
    assert plain._source() == ("org/alm", {"revision": PIN})  # transformers' default: no remote code
