"""The manual's "Adding a model" recipe (docs/models.md), followed literally: its module and its params
entries are taken from the page as written, put where the recipe says, imported, built tiny, and run."""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap

import numpy as np
import pytest
import yaml

from ambiemo.models import MODELS, load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message
from ambiemo.models.hf.tiny import tiny_builders


def _recipe(page: str) -> tuple[str, str, str]:
    """The folder the recipe puts the module in, and the python and yaml blocks of the page's "Adding a
    model" section, dedented as a reader copies them."""
    start = page.index("## Adding a model")
    end = page.find("\n## ", start + 1)
    section = page[start : end if end > 0 else len(page)]
    folder = re.search(r"Write `(ambiemo/[\w/]+)/<name>\.py`", section)
    assert folder, "the recipe must say where the module goes"
    blocks = re.findall(r"^( *)```(python|yaml)\n(.*?)^\1```", section, flags=re.S | re.M)
    found = {lang: textwrap.dedent(body) for _indent, lang, body in blocks}
    assert set(found) == {"python", "yaml"}, "the recipe must show the module and the params entries"
    return folder.group(1), found["python"], found["yaml"]


@pytest.fixture
def recipe_module(repo_root, tmp_path, monkeypatch):
    folder, code, entries = _recipe((repo_root / "docs" / "models.md").read_text())
    # Step 1: the module, where the recipe says (a package that load_model's discovery walks) ...
    assert folder.startswith("ambiemo/models") and (repo_root / folder / "__init__.py").is_file(), folder
    module_name = folder.replace("/", ".") + ".my_alm"
    # ... here as a copy of that layout in a temporary folder.
    path = tmp_path / folder / "my_alm.py"
    path.parent.mkdir(parents=True)
    path.write_text(code)
    # tiny_builders() first: it imports every adapter, which load_model no longer does (it stops at the route).
    before_tiny = set(tiny_builders().names())
    before_models = set(MODELS.names())
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    yield module, yaml.safe_load(entries)
    # Leave the registries as the other tests expect them.
    for name in set(MODELS.names()) - before_models:
        del MODELS._items[name]
    for name in set(tiny_builders().names()) - before_tiny:
        del tiny_builders()._items[name]


def test_the_manual_recipe_adds_a_model_in_one_module_and_one_params_entry(recipe_module, tmp_path):
    from ambiemo.cli.models import model_rows

    module, entries = recipe_module
    assert "hf-my-alm" in MODELS and "my-alm" in tiny_builders()
    # Step 2: the params entries.
    rows = {r["key"]: r for r in model_rows({"models": entries})}
    assert rows["my-alm-7b"]["route"] == "hf-my-alm" and rows["my-alm-7b"]["logprobs"] is True
    assert rows["tiny-my-alm"]["max_audio_s"] == 30.0 and rows["tiny-my-alm"]["needs"] == "CPU"
    big = load_model("my-alm-7b", entries["my-alm-7b"], cache_dir=tmp_path)
    assert big.model is None and big.identity["revision"] == entries["my-alm-7b"]["revision"]
    # Step 3: build the tiny instance and generate.
    model = load_model("tiny-my-alm", entries["tiny-my-alm"], cache_dir=tmp_path)
    assert isinstance(model, module.MyALM) and model.capabilities.max_audio_s == 30.0
    t = np.arange(16_000) / 16_000
    request = AudioRequest(
        "u1", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16_000, [Message("user", "Emotion?", audio=True)]
    )
    (cands,) = model.generate([request], GenerationConfig(mode="sample", n=2, max_new_tokens=5, seed=1))
    assert len(cands) == 2
    for c in cands:
        assert c.n_tokens == len(c.token_logprobs) >= 1 and np.isfinite(c.logprob) and c.logprob < 0
    # One second of audio is 25 placeholder tokens (100 mel frames -> 50 -> 25), as in Qwen2-Audio.
    assert model.tokenizer.decode(model._encode(request).input_ids).count("<|AUDIO|>") == 25
    scores = model.score_options(request, ["happy", "sad"])
    assert scores.shape == (2,) and np.all(scores < 0)
    assert model.usage.calls == 2
