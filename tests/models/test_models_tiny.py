"""Tiny offline builds of the native architectures: real classes, deterministic, built once."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ambiemo.models.hf.tiny import TINY_VERSION, build_tiny, ensure_tiny, parse_tiny_checkpoint, tiny_builders


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_builds_are_deterministic(tmp_path):
    a = build_tiny("qwen2-audio", tmp_path / "a")
    b = build_tiny("qwen2-audio", tmp_path / "b")
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert json.loads((a / "ambiemo_tiny.json").read_text()) == {
        "arch": "qwen2-audio",
        "version": TINY_VERSION,
        "seed": 0,
    }


@pytest.mark.parametrize(
    ("arch", "cls", "specials"),
    [
        ("qwen2-audio", "Qwen2AudioForConditionalGeneration", ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]),
        ("qwen2.5-omni", "Qwen2_5OmniThinkerForConditionalGeneration", ["<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>"]),
        ("audio-flamingo-3", "AudioFlamingo3ForConditionalGeneration", ["<sound>"]),
    ],
)
def test_each_build_is_the_real_architecture_and_small(arch, cls, specials, tmp_path):
    import transformers

    folder = build_tiny(arch, tmp_path / arch)
    model = getattr(transformers, cls).from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == cls
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    for token in specials + ["<|im_start|>", "<|im_end|>"]:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{token} must be a single special token"
    assert tokenizer.chat_template


def test_ensure_tiny_builds_once_and_survives_concurrent_first_use(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two first uses at once; .result() re-raises any failure
        paths = [f.result() for f in [pool.submit(ensure_tiny, "audio-flamingo-3", tmp_path) for _ in range(2)]]
    assert len(set(paths)) == 1
    folder = paths[0]
    assert folder == tmp_path / "tiny" / f"audio-flamingo-3-{TINY_VERSION}"
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny("audio-flamingo-3", tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [folder.name]  # no leftovers


def test_checkpoint_names():
    assert parse_tiny_checkpoint("tiny:qwen2.5-omni") == "qwen2.5-omni"
    assert parse_tiny_checkpoint("Qwen/Qwen2-Audio-7B-Instruct") is None
    known = tiny_builders().names()
    assert {"qwen2-audio", "qwen2.5-omni", "audio-flamingo-3"} <= set(known)
    with pytest.raises(KeyError, match="known: " + re.escape(", ".join(known))):
        parse_tiny_checkpoint("tiny:whisper")


def test_each_tiny_build_is_registered_beside_its_adapter():
    import inspect

    from ambiemo.models import MODELS

    builders = tiny_builders()
    for arch, adapter in [
        ("qwen2-audio", "hf-qwen2-audio"),
        ("qwen2.5-omni", "hf-qwen2.5-omni"),
        ("audio-flamingo-3", "hf-audio-flamingo-3"),
        ("gemma4", "hf-gemma4"),
    ]:
        assert inspect.getmodule(builders.get(arch)) is inspect.getmodule(MODELS.get(adapter)), arch
    with pytest.raises(ValueError, match="registered twice"):
        from ambiemo.models.hf.tiny import register_tiny

        register_tiny("qwen2-audio")(lambda folder: None)
