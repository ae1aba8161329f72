"""Adapters whose model code is not in transformers: Ultravox (the checkpoint's remote code, opt-in
and pinned) and Audio Flamingo 2 (NVIDIA's inference code, imported lazily).

Neither runs here for real (no hub, no upstream code). What is tested: the opt-in and error paths,
the prompt and audio windowing against hand-computed values, and the Audio Flamingo 2 glue end to
end against a stand-in for the upstream package (same entry point and call signatures, a tiny
random LM inside), with log-probabilities checked by an independent forward pass.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message
from ambiemo.models.identity import RemoteCodeRefused
from ambiemo.models.upstream.audio_flamingo2 import UpstreamCodeMissing, clap_windows, import_upstream

PIN = "5b3a5929d7d20f1e8971a18f637e7c8556b5a743"


# ------------------------------------------------------------------------------------- Ultravox
def test_ultravox_needs_explicit_opt_in():
    with pytest.raises(PermissionError, match="set `trust_remote_code: true`"):
        load_model("uv", {"adapter": "hf-ultravox", "checkpoint": "fixie-ai/ultravox-v0_4", "revision": PIN})


@pytest.mark.parametrize("revision", [None, "main", "5b3a592"])
def test_ultravox_needs_a_pinned_commit(revision):
    spec = {
        "adapter": "hf-ultravox",
        "checkpoint": "fixie-ai/ultravox-v0_4",
        "trust_remote_code": True,
        "revision": revision,
    }
    with pytest.raises(RemoteCodeRefused, match="models.uv: with trust_remote_code the revision must be a 40-char"):
        load_model("uv", spec)


def test_ultravox_spec_from_params_builds_without_loading(repo_root):
    from ambiemo.core.config import load_params

    models = load_params(repo_root / "params.yaml")["models"]
    for key in ("ultravox-v0.3", "ultravox-v0.4"):
        m = load_model(key, models[key])
        assert m.model is None  # nothing downloaded or executed until the first call
        assert m.identity["revision"] == models[key]["revision"]
        assert m.batch_size == 1


def test_ultravox_puts_the_audio_placeholder_in_the_audio_turn():
    m = load_model("uv", {"adapter": "hf-ultravox", "checkpoint": "x/y", "trust_remote_code": True, "revision": PIN})
    request = AudioRequest(
        "u",
        np.zeros(1600, np.float32),
        16_000,
        [Message("system", "Be brief."), Message("user", "Emotion?", audio=True)],
    )
    assert m.chat_messages(request) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Emotion?\n<|audio|>"},
    ]


# ----------------------------------------------------------------------------- Audio Flamingo 2
def test_af2_without_code_says_what_to_install(tmp_path):
    with pytest.raises(
        UpstreamCodeMissing, match=r"models.audio-flamingo-2.code_dir is not set.*git clone -b audio_flamingo_2"
    ):
        import_upstream(None)
    with pytest.raises(UpstreamCodeMissing, match="has no src/factory.py"):
        import_upstream(tmp_path)
    model = load_model("audio-flamingo-2", {"adapter": "audio-flamingo-2", "checkpoint": "nvidia/audio-flamingo-2"})
    request = AudioRequest("u", np.zeros(16_000, np.float32), 16_000, [Message("user", "Emotion?", audio=True)])
    with pytest.raises(
        UpstreamCodeMissing, match="pip install -r audio-flamingo/inference_HF_pretrained/requirements.txt"
    ):
        model.generate([request], GenerationConfig())


def test_af2_missing_requirements_are_named(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "factory.py").write_text("import a_package_nobody_installed\n")
    try:
        with pytest.raises(UpstreamCodeMissing, match="a_package_nobody_installed.*pip install -r"):
            import_upstream(tmp_path, "af2")
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(
    ("seconds", "n_windows"),
    [(0.5, 1), (10.0, 1), (10.01, 2), (25.0, 3), (119.0, 12), (200.0, 12)],
)
def test_clap_windows_match_upstream_counts(seconds, n_windows):
    # Upstream: 10 s windows without overlap, at most 12 (2 minutes), zero-padded to whole windows.
    wav = np.full(int(seconds * 16_000), 0.25, np.float32)
    windows, mask = clap_windows(wav, 10.0, 0.0, 12)
    assert windows.shape == (n_windows, 160_000)
    assert mask.tolist() == [1.0] * n_windows
    kept = min(len(wav), n_windows * 160_000)
    np.testing.assert_allclose(windows.reshape(-1)[:kept], 1.0, atol=1 / 32767)  # peak-normalised
    assert np.all(windows.reshape(-1)[kept:] == 0)


FAKE_FACTORY = textwrap.dedent(
    '''
    """A stand-in for Audio Flamingo 2's src/factory.py: same entry point, a tiny random LM inside
    whose next-token scores depend on the audio windows (a bias from their mean and spread)."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

    from ambiemo.models.hf.tiny import _train_tokenizer

    calls = []


    class AudioBias(LogitsProcessor):
        def __init__(self, bias):
            self.bias = bias

        def __call__(self, input_ids, scores):
            return scores + self.bias.to(scores.dtype)


    class Flamingo(torch.nn.Module):
        def __init__(self, vocab):
            super().__init__()
            torch.manual_seed(0)
            self.lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1))
            self.audio_bias = torch.nn.Linear(2, vocab, bias=False)
            torch.nn.init.normal_(self.audio_bias.weight, std=5.0)

        def bias(self, audio_x):
            x = audio_x.float().flatten(1)
            return self.audio_bias(torch.stack([x.mean(1), x.std(1)], dim=1))

        def forward(self, audio_x, audio_x_mask, lang_x, attention_mask=None):
            calls.append(("forward", tuple(audio_x.shape), tuple(audio_x_mask.shape), tuple(lang_x.shape)))
            out = self.lm(input_ids=lang_x, attention_mask=attention_mask)
            out.logits = out.logits + self.bias(audio_x)[:, None, :]
            return out

        def generate(self, audio_x, audio_x_mask, lang_x, eos_token_id, **kw):
            calls.append(("generate", tuple(audio_x.shape), tuple(audio_x_mask.shape), tuple(lang_x.shape)))
            processors = LogitsProcessorList([AudioBias(self.bias(audio_x)), *kw.pop("logits_processor", [])])
            return self.lm.generate(input_ids=lang_x, attention_mask=torch.ones_like(lang_x), eos_token_id=eos_token_id,
                                    pad_token_id=eos_token_id, logits_processor=processors, **kw)


    def create_model_and_transforms(clap_config, use_local_files, gradient_checkpointing, freeze_lm_embeddings,
                                    **model_config):
        tok = _train_tokenizer(["<|endoftext|>", "<audio>", "<SEP>", "<|endofchunk|>"], "")
        tok.add_special_tokens({"sep_token": "<SEP>", "eos_token": "<|endoftext|>"})
        return Flamingo(len(tok)), tok
    '''
)
FAKE_CONFIG = """
model_config:
  lang_encoder_path: Qwen/Qwen2.5-3B
clap_config:
  checkpoint: clap_ckpt/epoch_16.pt
  window_length: 10.0
  window_overlap: 0.0
  max_num_window: 12
"""


@pytest.fixture(scope="module")
def af2(tmp_path_factory):
    code = tmp_path_factory.mktemp("af2-code")
    (code / "src").mkdir()
    (code / "src" / "__init__.py").write_text("")
    (code / "src" / "factory.py").write_text(FAKE_FACTORY)
    (code / "configs").mkdir()
    (code / "configs" / "inference.yaml").write_text(FAKE_CONFIG)
    weights = tmp_path_factory.mktemp("af2-weights")
    (weights / "safe_ckpt").mkdir()
    # The checkpoint holds the stand-in's own weights, as the real one holds the real model's.
    from safetensors.torch import save_file

    stand_in, _ = import_upstream(code).create_model_and_transforms(
        clap_config={}, use_local_files=True, gradient_checkpointing=False, freeze_lm_embeddings=False
    )
    save_file(
        {k: v.clone().contiguous() for k, v in stand_in.state_dict().items()}, weights / "safe_ckpt" / "w.safetensors"
    )
    (weights / "safe_ckpt" / "metadata.json").write_text('["w"]')
    spec = {
        "adapter": "audio-flamingo-2",
        "checkpoint": "nvidia/audio-flamingo-2",
        "code_dir": str(code),
        "weights_dir": str(weights),
    }
    model = load_model("audio-flamingo-2", spec)
    model._ensure_loaded()
    yield model
    for name in [n for n in sys.modules if n == "src" or n.startswith("src.")]:
        del sys.modules[name]
    sys.path.remove(str(code))


def _af2_request(seconds=25.0):
    t = np.arange(int(seconds * 16_000)) / 16_000
    wav = (0.5 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    return AudioRequest(
        "af2", wav, 16_000, [Message("system", "You Are An Expert."), Message("user", "Which EMOTION?", audio=True)]
    )


def test_af2_prompt_is_the_upstream_format(af2):
    assert af2.prompt_text(_af2_request()) == "<audio>you are an expert.\nwhich emotion?<SEP>"
    with pytest.raises(ValueError, match="single-turn"):
        af2.prompt_text(
            AudioRequest("v", np.zeros(10, np.float32), 16_000, [Message("user", "a"), Message("assistant", "b")])
        )


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(mode="greedy", n=1, max_new_tokens=6),
        GenerationConfig(mode="sample", n=3, max_new_tokens=6, temperature=0.9),
        GenerationConfig(mode="beam", n=2, max_new_tokens=6, num_beams=3),
    ],
    ids=["greedy", "sample", "beam"],
)
def test_af2_candidates_and_logprobs_match_an_independent_forward_pass(af2, config):
    factory = sys.modules["src.factory"]
    factory.calls.clear()
    request = _af2_request()
    (cands,) = af2.generate([request], config)
    assert len(cands) == config.n
    rows = config.n if config.mode == "sample" else 1  # sampling: one row per candidate, each its own stream
    assert factory.calls[0][1:3] == ((rows, 3, 160_000), (rows, 3))  # 25 s -> three 10 s CLAP windows
    prompt = af2.tokenizer(af2.prompt_text(request), add_special_tokens=False)["input_ids"]
    for c in cands:
        assert c.n_tokens == len(c.token_logprobs) and c.meta["prompt_tokens"] == len(prompt)
        ids = torch.tensor([prompt + c.meta["token_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(af2.model(*af2._audio(request), lang_x=ids).logits[0], dim=-1)
        ref = [float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(c.meta["token_ids"])]
        np.testing.assert_allclose(c.token_logprobs, ref, atol=1e-4)
        assert c.logprob == pytest.approx(sum(ref), abs=1e-3)


def test_af2_option_scores_match_an_independent_forward_pass(af2):
    request = _af2_request(3.0)
    options = ["neutral", "happy", "angry", "sad"]
    scores = af2.score_options(request, options, prefix="the emotion is ")
    prompt = af2.tokenizer(af2.prompt_text(request), add_special_tokens=False)["input_ids"]
    for option, score in zip(options, scores, strict=True):
        cont = af2.tokenizer("the emotion is " + option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(
                af2.model(*af2._audio(request), lang_x=torch.tensor([prompt + cont])).logits[0], dim=-1
            )
        assert score == pytest.approx(
            sum(float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(cont)), abs=1e-4
        )


def test_ultravox_encode_passes_the_processor_outputs_through(tmp_path):
    from transformers import AutoTokenizer

    from ambiemo.models.hf.tiny import ensure_tiny

    m = load_model("uv", {"adapter": "hf-ultravox", "checkpoint": "x/y", "trust_remote_code": True, "revision": PIN})
    m.tokenizer = AutoTokenizer.from_pretrained(ensure_tiny("qwen2-audio", tmp_path))
    seen = {}

    def processor(text, audio, sampling_rate, return_tensors):
        seen.update(text=text, n_samples=len(audio), sampling_rate=sampling_rate)
        return {
            "input_ids": torch.tensor([[5, 6, 7]]),
            "attention_mask": torch.ones(1, 3, dtype=torch.long),
            "audio_values": torch.zeros(1, 80, 100),
            "audio_token_start_idx": torch.tensor([1]),
        }

    m.processor = processor
    request = AudioRequest("u", np.zeros(8000, np.float32), 8000, [Message("user", "Emotion?", audio=True)])
    enc = m._encode(request)
    assert enc.input_ids == [5, 6, 7]
    assert sorted(enc.features) == ["audio_token_start_idx", "audio_values"]
    assert "<|im_start|>user\nEmotion?\n<|audio|><|im_end|>\n<|im_start|>assistant\n" in seen["text"]
    assert (seen["n_samples"], seen["sampling_rate"]) == (16_000, 16_000)  # resampled for Whisper


def test_af2_first_answer_token_depends_on_the_audio(af2):
    options = ["happy", "sad", "angry", "neutral"]
    quiet, loud = _af2_request(3.0), _af2_request(3.0)
    t = np.arange(3 * 16_000) / 16_000
    loud = AudioRequest(
        loud.utt_id, (0.5 * np.sign(np.sin(2 * np.pi * 90 * t))).astype(np.float32), 16_000, loud.messages
    )
    a, b = af2.score_options(quiet, options), af2.score_options(loud, options)
    assert np.max(np.abs(a - b)) > 1e-3
    np.testing.assert_array_equal(a, af2.score_options(quiet, options))


def test_af2_sampling_is_one_stream_per_candidate(af2):
    config = GenerationConfig(mode="sample", n=3, max_new_tokens=6, temperature=1.0, seed=2)
    (three,) = af2.generate([_af2_request(3.0)], config)
    (two,) = af2.generate([_af2_request(3.0)], GenerationConfig(**{**config.as_dict(), "n": 2}))
    assert [c.meta["token_ids"] for c in two] == [c.meta["token_ids"] for c in three[:2]]
