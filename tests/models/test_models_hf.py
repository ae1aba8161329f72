"""The native transformers adapters (Qwen2-Audio, the Qwen2.5-Omni thinker, Audio Flamingo 3) on
tiny randomly initialised instances of their real architectures.

What is checked against an independent reference:
- the prompt (chat template, audio placeholder expanded once per 40 ms of audio, features) against
  transformers' own processor where it runs here (Qwen2-Audio, AF3) and a hand count (Omni);
- every candidate's per-token log-probabilities against a fresh forward pass over the processor's
  inputs followed by the candidate's tokens;
- option scores against one forward pass per option.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message

ARCHS = {
    "qwen2-audio": "hf-qwen2-audio",
    "qwen2.5-omni": "hf-qwen2.5-omni",
    "audio-flamingo-3": "hf-audio-flamingo-3",
}
SR = 16_000
LABELS = ["neutral", "happy", "angry", "sad"]


def _clip(seconds: float, seed: int) -> np.ndarray:
    """A voiced-looking test clip: a gliding tone plus noise (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (150 + 40 * t) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _request(
    utt: str, seconds: float, seed: int = 0, text: str = "Which emotion is this? Answer with one word."
) -> AudioRequest:
    return AudioRequest(
        utt,
        _clip(seconds, seed),
        SR,
        [Message("system", "You are an expert in speech emotion recognition."), Message("user", text, audio=True)],
    )


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("ambiemo-cache")


@pytest.fixture(scope="session")
def models(cache_root):
    """One loaded adapter per architecture, built into the session's cache folder."""
    out = {}
    for arch, adapter in ARCHS.items():
        m = load_model(
            f"tiny-{arch}", {"adapter": adapter, "checkpoint": f"tiny:{arch}", "batch_size": 4}, cache_dir=cache_root
        )
        assert m.model is None, "weights must load lazily, on the first real call"
        m._ensure_loaded()
        out[arch] = m
    return out


@pytest.fixture(scope="session")
def processors(models):
    """transformers' own processors for the architectures whose processor runs without torchvision."""
    from transformers import AutoProcessor

    return {a: AutoProcessor.from_pretrained(models[a].local_path) for a in ("qwen2-audio", "audio-flamingo-3")}


def _reference_inputs(arch, model, processors, request) -> dict:
    """The model inputs for ``request`` built independently of the adapter's expansion code."""
    if arch in processors:
        inputs = processors[arch](
            text=[model.prompt_text(request)], audio=[request.waveform], sampling_rate=SR, return_tensors="pt"
        )
        return {k: v for k, v in inputs.items() if k != "num_audio_tokens"}
    # Omni (no processor without torchvision): the adapter's encoding, checked by a hand count below.
    enc = model._encode(request)
    return {
        "input_ids": torch.tensor([enc.input_ids]),
        "attention_mask": torch.ones(1, len(enc.input_ids), dtype=torch.long),
        **enc.features,
    }


def _forward_logprobs(model, inputs: dict, continuation: list[int]) -> np.ndarray:
    """log p(continuation[t] | prompt, continuation[:t]) from one plain forward pass."""
    ids = torch.cat([inputs["input_ids"], torch.tensor([continuation])], dim=1)
    kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0].float()
    p = inputs["input_ids"].shape[1]
    logp = torch.log_softmax(logits[p - 1 : p - 1 + len(continuation)], dim=-1)
    return logp[torch.arange(len(continuation)), torch.tensor(continuation)].numpy()


# --------------------------------------------------------------------------------------- prompts
@pytest.mark.parametrize("arch", ["qwen2-audio", "audio-flamingo-3"])
def test_prompt_matches_the_transformers_processor(arch, models, processors):
    model, request = models[arch], _request("u1", 1.3)
    enc = model._encode(request)
    ref = processors[arch](
        text=[model.prompt_text(request)], audio=[request.waveform], sampling_rate=SR, return_tensors="pt"
    )
    assert enc.input_ids == ref["input_ids"][0].tolist()
    for name, tensor in enc.features.items():
        np.testing.assert_allclose(tensor.numpy(), ref[name].numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("arch", "audio_markup"),
    [
        ("qwen2-audio", "Audio 1: <|audio_bos|>{}<|audio_eos|>\nWhich emotion"),
        ("qwen2.5-omni", "<|audio_bos|>{}<|audio_eos|>Which emotion"),
        ("audio-flamingo-3", "<|im_start|>user\n{}Which emotion"),
    ],
)
@pytest.mark.parametrize(("seconds", "n_audio"), [(1.0, 25), (2.5, 62)])
def test_audio_placeholder_expands_once_per_40ms(arch, audio_markup, seconds, n_audio, models):
    # Hand count: 100 mel frames per second; a stride-2 convolution, then stride-2 pooling of width 2.
    # 1 s: 100 frames -> 50 -> (50 - 2) // 2 + 1 = 25; 2.5 s: 250 -> 125 -> (125 - 2) // 2 + 1 = 62.
    model = models[arch]
    enc = model._encode(_request("u", seconds))
    text = model.tokenizer.decode(enc.input_ids)
    placeholder = model.audio_placeholder
    assert text.count(placeholder) == n_audio
    assert audio_markup.format(placeholder * n_audio) in text
    assert text.startswith("<|im_start|>system\nYou are an expert in speech emotion recognition.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n")


def test_audio_goes_to_the_marked_turn_and_an_unmarked_conversation_is_refused(models):
    model = models["qwen2-audio"]
    turns = [Message("user", "First?"), Message("assistant", "ok"), Message("user", "Second?", audio=True)]
    text = model.prompt_text(AudioRequest("u", _clip(1.0, 0), SR, turns))
    assert text.index("First?") < text.index("<|AUDIO|>") < text.index("Second?")
    unmarked = AudioRequest("u", _clip(1.0, 0), SR, [Message("user", "First?")])
    with pytest.raises(ValueError, match="'u': no message has audio=True"):
        model.generate([unmarked], CONFIGS["greedy"])
    two = AudioRequest("u", _clip(1.0, 0), SR, [Message("user", "a", audio=True), Message("user", "b", audio=True)])
    with pytest.raises(ValueError, match="2 turns are marked audio=True"):
        model.prompt_text(two)


def test_resampled_input_gives_the_same_token_count(models):
    import librosa

    model = models["qwen2-audio"]
    r16 = _request("u16", 2.0)
    r8 = AudioRequest("u8", librosa.resample(r16.waveform, orig_sr=SR, target_sr=8000), 8000, r16.messages)
    assert model._encode(r8).input_ids == model._encode(r16).input_ids


def test_features_are_computed_once_per_utterance(models, monkeypatch):
    model = models["audio-flamingo-3"]
    calls = []
    original = type(model)._audio_features
    monkeypatch.setattr(type(model), "_audio_features", lambda self, wav: calls.append(1) or original(self, wav))
    request = _request("memo", 1.7, seed=5)
    other_prompt = _request("memo", 1.7, seed=5, text="Describe the speaker's tone.")
    model._encode(request)
    model._encode(other_prompt)
    model.score_options(request, LABELS)
    assert len(calls) == 1


# ----------------------------------------------------------------------------------- generation
CONFIGS = {
    "greedy": GenerationConfig(mode="greedy", n=1, max_new_tokens=6),
    "sample": GenerationConfig(mode="sample", n=4, max_new_tokens=6, temperature=0.9, top_p=0.95, seed=3),
    "beam": GenerationConfig(mode="beam", n=3, max_new_tokens=6, num_beams=4),
}


@pytest.fixture(scope="session")
def generations(models):
    """Every architecture x decoding mode, on a batch of three clips of different lengths."""
    requests = [_request("a", 2.2, seed=1), _request("b", 0.8, seed=2), _request("c", 1.5, seed=3)]
    return requests, {(a, m): models[a].generate(requests, c) for a in ARCHS for m, c in CONFIGS.items()}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("mode", list(CONFIGS))
def test_candidates_have_scores_and_meta(arch, mode, models, generations):
    requests, out = generations
    results = out[(arch, mode)]
    assert len(results) == len(requests)
    for request, cands in zip(requests, results, strict=True):
        assert len(cands) == CONFIGS[mode].n
        prompt_len = len(models[arch]._encode(request).input_ids)
        for c in cands:
            assert c.n_tokens == len(c.token_logprobs) == len(c.meta["token_ids"]) >= 1
            assert np.isfinite(c.logprob) and c.logprob < 0
            assert c.logprob == pytest.approx(sum(c.token_logprobs))
            assert c.meta["prompt_tokens"] == prompt_len
            assert c.meta["wall_s"] > 0
            assert c.n_tokens <= CONFIGS[mode].max_new_tokens
    if mode == "beam":
        for cands in results:  # beams are distinct hypotheses
            assert len({tuple(c.meta["token_ids"]) for c in cands}) == len(cands)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("mode", list(CONFIGS))
def test_logprobs_match_an_independent_forward_pass(arch, mode, models, processors, generations):
    requests, out = generations
    model = models[arch]
    for request, cands in zip(requests, out[(arch, mode)], strict=True):
        inputs = _reference_inputs(arch, model, processors, request)
        for c in cands:
            ref = _forward_logprobs(model, inputs, c.meta["token_ids"])
            np.testing.assert_allclose(c.token_logprobs, ref, atol=2e-4)


def test_results_come_back_in_request_order_and_do_not_depend_on_the_batch(models):
    model = models["qwen2-audio"]
    requests = [_request("long", 2.4, seed=7), _request("short", 0.6, seed=8), _request("mid", 1.4, seed=9)]
    greedy = CONFIGS["greedy"]
    together = model.generate(requests, greedy)
    alone = [model.generate([r], greedy)[0] for r in requests]
    for t, a in zip(together, alone, strict=True):
        assert t[0].meta["token_ids"] == a[0].meta["token_ids"]
        assert t[0].logprob == pytest.approx(a[0].logprob, abs=1e-3)


def test_sampling_is_seeded(models):
    model = models["qwen2.5-omni"]
    requests = [_request("s", 1.0, seed=4)]
    cfg = GenerationConfig(mode="sample", n=4, max_new_tokens=8, temperature=1.0, seed=11)
    first = [c.meta["token_ids"] for c in model.generate(requests, cfg)[0]]
    again = [c.meta["token_ids"] for c in model.generate(requests, cfg)[0]]
    other = [
        c.meta["token_ids"] for c in model.generate(requests, GenerationConfig(**{**cfg.as_dict(), "seed": 12}))[0]
    ]
    assert first == again
    assert first != other
    assert len({tuple(t) for t in first}) > 1  # four samples, not four copies


def test_usage_counts_calls_and_tokens(cache_root):
    model = load_model("t", {"adapter": "hf-qwen2-audio", "checkpoint": "tiny:qwen2-audio"}, cache_dir=cache_root)
    requests = [_request("a", 1.0), _request("b", 1.2)]
    out = model.generate(requests, CONFIGS["sample"])
    model.score_options(requests[0], LABELS)
    assert model.usage.calls == 3
    assert model.usage.gen_tokens == sum(c.n_tokens for cands in out for c in cands)
    assert model.usage.prompt_tokens == 2 * len(model._encode(requests[0]).input_ids) + len(
        model._encode(requests[1]).input_ids
    )


# ------------------------------------------------------------------------------- option scoring
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("prefix", ["", '{"emotion": "'])
def test_option_scores_match_one_forward_pass_per_option(arch, prefix, models, processors):
    model = models[arch]
    request = _request("opt", 1.6, seed=6)
    scores = model.score_options(request, LABELS + ["frustrated"], prefix=prefix)
    inputs = _reference_inputs(arch, model, processors, request)
    for option, score in zip(LABELS + ["frustrated"], scores, strict=True):
        ids = model.tokenizer(prefix + option, add_special_tokens=False)["input_ids"]
        assert score == pytest.approx(float(_forward_logprobs(model, inputs, ids).sum()), abs=2e-4)
    assert len(set(np.round(scores, 6))) == len(scores)


@pytest.mark.parametrize("arch", ["qwen2-audio", "qwen2.5-omni"])
def test_single_token_options_score_from_the_prompt_alone(arch, models, processors):
    model, request = models[arch], _request("one", 1.1, seed=9)
    options = ["a", "b", "7"]
    assert all(len(model.tokenizer(o, add_special_tokens=False)["input_ids"]) == 1 for o in options)
    scores = model.score_options(request, options)
    inputs = _reference_inputs(arch, model, processors, request)
    ref = [
        float(_forward_logprobs(model, inputs, model.tokenizer(o, add_special_tokens=False)["input_ids"])[0])
        for o in options
    ]
    np.testing.assert_allclose(scores, ref, atol=2e-4)


def test_option_scoring_rejects_empty_input(models):
    with pytest.raises(ValueError, match="at least one option"):
        models["qwen2-audio"].score_options(_request("e", 1.0), [])


# ----------------------------------------------------------------------------------- the specs
def test_demo_spec_from_params_builds_and_runs(repo_root, cache_root):
    from ambiemo.core.config import load_params

    spec = load_params(repo_root / "params.yaml")["models"]["tiny-qwen2-audio"]
    model = load_model("tiny-qwen2-audio", spec, cache_dir=cache_root)
    identity = model.identity
    assert {k: identity[k] for k in ("route", "model_id", "revision")} == {
        "route": "hf-qwen2-audio",
        "model_id": "tiny:qwen2-audio",
        "revision": "v1",
    }
    assert identity["version"] == type(model).version and len(identity["settings_sha256"]) == 64
    assert "key" not in identity  # renaming the params key reuses the cache
    (cands,) = model.generate([_request("d", 1.0)], GenerationConfig(mode="sample", n=2, max_new_tokens=4))
    assert len(cands) == 2
    assert np.all(np.isfinite(model.score_options(_request("d", 1.0), LABELS)))


def test_bad_specs_are_named(cache_root):
    with pytest.raises(KeyError, match="models.x has no 'checkpoint'"):
        load_model("x", {"adapter": "hf-qwen2-audio"})
    with pytest.raises(KeyError, match="no tiny build for 'gpt-5'"):
        load_model("x", {"adapter": "hf-qwen2-audio", "checkpoint": "tiny:gpt-5"}, cache_dir=cache_root)
    with pytest.raises(ValueError, match="dtype 'int3'"):
        load_model("x", {"adapter": "hf-qwen2-audio", "checkpoint": "Qwen/Qwen2-Audio-7B-Instruct", "dtype": "int3"})


def test_af3_long_audio_in_several_windows_gives_correct_candidates(models, processors):
    # 31 s is two 30 s windows; several candidates must each see both windows in order.
    model, request = models["audio-flamingo-3"], _request("long", 31.0, seed=12)
    assert model._encode(request).features["input_features"].shape[0] == 2
    (cands,) = model.generate([request], GenerationConfig(mode="sample", n=3, max_new_tokens=4, seed=2))
    inputs = _reference_inputs("audio-flamingo-3", model, processors, request)
    for c in cands:
        np.testing.assert_allclose(c.token_logprobs, _forward_logprobs(model, inputs, c.meta["token_ids"]), atol=2e-4)
