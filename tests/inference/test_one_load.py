"""The inference stage runs every strategy of a dataset x model with one model object: the weights
load once, however many strategies follow, and not at all when the cache answers everything."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import TINY_N, tiny_params

from ambiemo.inference.predictions import read_predictions
from ambiemo.inference.run import run_strategies
from ambiemo.models.hf.audio_base import NativeAudioALM

STRATEGIES = ["baseline", "bon", "w-bon", "self-consistency", "label-scoring", "alm-v"]


def test_one_load_per_dataset_and_model(manifest: Path, tmp_path: Path, monkeypatch) -> None:
    loads = []
    original = NativeAudioALM._load

    def counting(self):
        loads.append(self.key)
        return original(self)

    monkeypatch.setattr(NativeAudioALM, "_load", counting)
    params = tiny_params(tmp_path)
    params["models"]["tiny"] = {"adapter": "hf-qwen2-audio", "checkpoint": "tiny:qwen2-audio", "dtype": "float32"}
    params["strategies"]["verifier"] = {"model": "tiny", "method": "options"}  # the model verifies itself
    tables = run_strategies(params, "tiny", STRATEGIES, manifest, tmp_path / "out")
    assert loads == ["tiny"]  # six strategies (one of them with a verifier), one load
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([f"{s}.parquet" for s in STRATEGIES] + [f"{s}.candidates.parquet" for s in STRATEGIES])
    assert all(len(read_predictions(tmp_path / "out" / f"{s}.parquet").df) >= TINY_N for s in STRATEGIES)

    first = {s: (tmp_path / "out" / f"{s}.parquet").read_bytes() for s in STRATEGIES}
    run_strategies(params, "tiny", STRATEGIES, manifest, tmp_path / "out")
    assert loads == ["tiny"]  # the rerun is answered by the cache: no load at all
    assert {s: (tmp_path / "out" / f"{s}.parquet").read_bytes() for s in STRATEGIES} == first
    assert set(tables) == set(STRATEGIES)


def test_a_strategy_the_route_cannot_serve_is_written_as_skipped(manifest: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path, logprobs_available=False)
    tables = run_strategies(params, "fake", ["baseline", "bon"], manifest, tmp_path / "out")
    assert len(tables["baseline"]) == TINY_N
    assert "log" in read_predictions(tmp_path / "out" / "bon.parquet").meta["skipped"]
    with pytest.raises(KeyError):
        run_strategies(params, "fake", ["no-such-strategy"], manifest, tmp_path / "out")
