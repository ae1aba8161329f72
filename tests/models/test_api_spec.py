"""The API routes' typed params entry: unknown keys and wrong types are refused when the model
is built, naming the key; a key written into params keeps its own message; every API entry of the
repository's params.yaml passes."""

from __future__ import annotations

import pytest

from ambiemo.core.config import load_params
from ambiemo.models import load_model


def test_an_unknown_key_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"models\.m\.concurency: unknown key"):
        load_model("m", {"adapter": "openai-compatible", "model_id": "x", "concurency": 16})


def test_a_wrong_type_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"models\.m\.concurrency"):
        load_model("m", {"adapter": "openai-compatible", "model_id": "x", "concurrency": 0})


def test_a_key_in_params_keeps_its_own_message():
    with pytest.raises(ValueError, match="never write API keys"):
        load_model("m", {"adapter": "openai-chat", "model_id": "x", "api_key": "sk-..."})


def test_every_api_entry_in_params_passes(repo_root, monkeypatch):
    monkeypatch.setattr("ambiemo.models.lifecycle.refuse_retired", lambda key, spec, on=None: None)
    models = load_params(repo_root / "params.yaml")["models"]
    api = {k: v for k, v in models.items() if v["adapter"] in ("openai-chat", "openai-compatible", "gemini")}
    assert len(api) >= 15
    for key, spec in api.items():
        assert load_model(key, dict(spec)).model_id == spec["model_id"]
