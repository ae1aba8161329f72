"""Weights where the GPUs have no network: fetch from a (fake) hub, load offline, fail fast."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub, files_of
from typer.testing import CliRunner

from ambiemo.models import weights
from ambiemo.models.hf.tiny import ensure_tiny

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "org/tiny-qwen2-audio"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, bytes]:
    return files_of(ensure_tiny("qwen2-audio", tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, so nothing is found locally by accident."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def test_fetch_downloads_every_file_and_verifies_it(tiny_files, offline_home, monkeypatch) -> None:
    with FakeHub(REPO, COMMIT, tiny_files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        got = weights.fetch("tiny", {"checkpoint": REPO, "revision": COMMIT}, offline_home / "dest")
    assert got.folder.name == f"org--tiny-qwen2-audio@{COMMIT}"
    assert files_of(got.folder).items() >= tiny_files.items()  # the same bytes (plus hub metadata)
    assert got.files == len(tiny_files) and got.bytes == sum(len(b) for b in tiny_files.values())
    assert got.verified == sum(name.endswith(".safetensors") for name in tiny_files)


def test_fetch_refuses_a_corrupted_download(tiny_files, offline_home, monkeypatch) -> None:
    hub = FakeHub(REPO, COMMIT, tiny_files)
    info = hub.info()
    hub.info = lambda: {
        **info,
        "siblings": [{**s, "lfs": {**s["lfs"], "sha256": "0" * 64}} if "lfs" in s else s for s in info["siblings"]],
    }
    with hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(weights.WeightsUnavailable, match="SHA-256"):
            weights.fetch("tiny", {"checkpoint": REPO, "revision": COMMIT}, offline_home / "dest")


def test_fetch_wants_a_pinned_revision(offline_home) -> None:
    with pytest.raises(ValueError, match="pin a commit"):
        weights.fetch("tiny", {"checkpoint": REPO, "revision": "main"}, offline_home / "dest")


def test_resolve_prefers_the_fetched_copy_then_fails_fast_without_hub(tiny_files, offline_home, monkeypatch):
    spec = {"checkpoint": REPO, "revision": COMMIT}
    with FakeHub(REPO, COMMIT, tiny_files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        weights.fetch("tiny", spec, offline_home / "dest")
        assert weights.resolve("tiny", spec) == (REPO, {"revision": COMMIT})  # online, nothing local
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    source, kwargs = weights.resolve("tiny", spec, weights_dir=offline_home / "dest")
    assert Path(source) == offline_home / "dest" / f"org--tiny-qwen2-audio@{COMMIT}" and kwargs == {}
    with pytest.raises(weights.WeightsUnavailable) as err:
        weights.resolve("qwen2-audio-7b", spec, weights_dir=offline_home / "elsewhere")
    msg = str(err.value)
    for part in ("qwen2-audio-7b", REPO, COMMIT, "ambiemo models fetch qwen2-audio-7b", "paths.weights_dir", "HF_HOME"):
        assert part in msg


def test_hub_offline_variable_skips_the_probe(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would be refused anyway; not even tried
    assert weights.hub_reachable() is False


def test_cli_fetch_reports_size_and_folder(tiny_files, offline_home, monkeypatch) -> None:
    from ambiemo.cli import app

    params = offline_home / "params.yaml"
    params.write_text(
        yaml.safe_dump({"models": {"tiny-hub": {"adapter": "hf-qwen2-audio", "checkpoint": REPO, "revision": COMMIT}}})
    )
    with FakeHub(REPO, COMMIT, tiny_files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        res = CliRunner().invoke(
            app, ["models", "fetch", "tiny-hub", "--dest", str(offline_home / "w"), "--params", str(params)]
        )
    assert res.exit_code == 0, res.output
    assert f"tiny-hub: {len(tiny_files)} files" in res.output and "GiB" in res.output
    assert "paths.weights_dir" in res.output


def test_a_native_adapter_loads_the_fetched_copy_offline_and_fails_fast_without_it(
    tiny_files, offline_home, monkeypatch
) -> None:
    import numpy as np

    from ambiemo.models import load_model
    from ambiemo.models.base import AudioRequest, GenerationConfig, Message

    spec = {"adapter": "hf-qwen2-audio", "checkpoint": REPO, "revision": COMMIT, "dtype": "float32"}
    with FakeHub(REPO, COMMIT, tiny_files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        weights.fetch("tiny", spec, offline_home / "dest")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # the hub is gone from here on
    wav = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    request = AudioRequest("u0", wav, 16000, [Message("user", "Which emotion?", audio=True)])
    config = GenerationConfig(mode="greedy", n=1, max_new_tokens=4)

    offline = load_model("hub-tiny", spec, weights_dir=offline_home / "dest")
    local = load_model(
        "tiny",
        {"adapter": "hf-qwen2-audio", "checkpoint": "tiny:qwen2-audio", "dtype": "float32"},
        cache_dir=offline_home / "tiny",
    )
    got, want = offline.generate([request], config)[0][0], local.generate([request], config)[0][0]
    assert (got.text, got.token_logprobs) == (want.text, want.token_logprobs)  # the same weights, loaded offline

    with pytest.raises(weights.WeightsUnavailable, match="hub-tiny"):  # and without weights_dir at all
        load_model("hub-tiny", spec).generate([request], config)
    with pytest.raises(weights.WeightsUnavailable, match="hub-tiny"):
        load_model("hub-tiny", spec, weights_dir=offline_home / "nowhere").generate([request], config)
