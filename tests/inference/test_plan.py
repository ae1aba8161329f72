"""`ambiemo plan`: call and token counts against hand-computed cases; prices; what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import build_manifest, write_manifest
from ambiemo.inference.plan import coverage, plan
from ambiemo.inference.plan_report import format_plan

FOUR = ("neutral", "happy", "angry", "sad")
N = 5


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A prepared manifest of N utterances of 2 s each under results/prepared/tiny/."""
    info = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(N)],
            "dataset": "tiny",
            "audio_path": "",
            "duration_s": 2.0,
            "speaker": [f"s{i % 2}" for i in range(N)],
        }
    )
    votes = np.array([[3, 0, 0, 0], [1, 2, 0, 0], [0, 0, 2, 1], [1, 1, 1, 0], [0, 0, 0, 3]], dtype=float)
    ls = LabelSet("four", FOUR)
    df, amb = build_manifest(info, votes, votes.sum(axis=1).astype(int), ls, AmbiguityBins())
    out = tmp_path / "results"
    write_manifest(df, out / "prepared" / "tiny" / "manifest.parquet", label_set=ls, ambiguity=amb, exclusions={})
    return out


def params(**models) -> dict:
    return {
        "seed": 1,
        "run": {
            "profile": "demo",
            "datasets": ["tiny"],
            "models": list(models) or ["fake"],
            "limit": 0,
            "strategies": ["baseline", "bon", "w-bon", "self-consistency", "alm-v", "label-scoring", "prompt-ensemble"],
        },
        "label_sets": {"four": {"labels": list(FOUR)}},
        "datasets": {"tiny": {"loader": "demo", "label_set": "four"}},
        "prompts": {"label_order": "canonical"},
        "models": models or {"fake": {"adapter": "fake"}},
        "strategies": {
            "verifier": {"model": "fake", "method": "auto"},
            "max_new_tokens": {"base": 8, "per_label": 10, "reasoning": 64, "single": 6, "verifier": 4},
            "bon": {"budgets": [2, 3]},
            "w-bon": {"budgets": [2, 3]},
            "alm-v": {"budgets": [2]},
            "self-consistency": {"budgets": [1, 2, 4]},
            "prompt-ensemble": {"budgets": [1, 3]},
        },
    }


def test_calls_follow_the_strategies_rules(results: Path) -> None:
    p = plan(params(), results=results)
    fake = p.models["fake"]
    assert fake.cells == 7
    # per utterance: baseline 1, bon 2 (one beam search per width), w-bon 2, self-consistency 1 (the
    # first n of 4 samples), alm-v 1 (B=2), label-scoring 1, prompt-ensemble 3 (K_max paraphrases)
    assert fake.calls == N * (1 + 2 + 2 + 1 + 1 + 1 + 3)
    assert fake.verifier_calls == N * 2  # alm-v rates each of its 2 candidates
    # unique compute: w-bon's and alm-v's beam searches are bon's; paraphrase 0 is the baseline's
    # prompt, so the ensemble adds 2; the verifier (also `fake`) adds its 2
    assert fake.new_calls == N * (1 + 2 + 1 + 1 + 2) + N * 2
    # generated tokens, upper bound 8 + 10 x 4 labels = 48 per candidate: baseline 1, bon 2 + 3,
    # samples 4, paraphrases 1 and 2; label scoring and the verifier (option scoring) generate nothing
    assert fake.gen_tokens == pytest.approx(N * 48 * (1 + 2 + 3 + 4 + 2))
    # cache entries needed: one per generated candidate (1 + 5 + 4 + 2) and per scoring request (1 + 2)
    assert fake.needed_entries == N * (1 + 5 + 4 + 2 + 1 + 2)
    assert p.datasets["tiny"] == {"utterances": N, "mean_clip_s": 2.0, "source": "prepared manifest", "labels": 4}


def test_routes_without_beam_search_sample_once_and_skip_what_they_cannot_serve(results: Path) -> None:
    p = plan(params(fake={"adapter": "fake", "beam_search": False, "logprobs_available": False}), results=results)
    fake = p.models["fake"]
    # bon and w-bon need log-probs: skipped; alm-v's 2 candidates are 2 samples in one request
    assert fake.cells == 5
    assert any("bon: skipped" in n for n in p.notes)
    assert fake.calls == N * (1 + 1 + 1 + 1 + 3)


def test_api_price_and_missing_key(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {
        "adapter": "openai-chat",
        "model_id": "gpt-audio",
        "logprobs": False,
        "api_key_env": "PLAN_TEST_KEY",
        "audio_tokens_per_s": 10.0,
        "pricing": {"input_per_mtok": 2.0, "audio_input_per_mtok": 40.0, "output_per_mtok": 10.0},
    }
    pr = params(api=spec)
    pr["run"]["strategies"] = ["baseline"]
    monkeypatch.delenv("PLAN_TEST_KEY", raising=False)
    p = plan(pr, results=results)
    m = p.models["api"]
    assert m.calls == N and m.audio_tokens == pytest.approx(N * 2.0 * 10.0)
    text = m.prompt_tokens - m.audio_tokens
    expected = (text * 2.0 + N * 20 * 40.0 + N * 48 * 10.0) / 1e6
    assert m.usd == pytest.approx(round(expected, 2))
    assert any("PLAN_TEST_KEY" in x["what"] for x in p.missing)
    monkeypatch.setenv("PLAN_TEST_KEY", "sk-not-real")
    assert not any("PLAN_TEST_KEY" in x["what"] for x in plan(pr, results=results).missing)


def test_unprepared_dataset_is_said_not_guessed(tmp_path: Path) -> None:
    pr = params()
    p = plan(pr, results=tmp_path / "empty")
    assert p.models["fake"].calls == 0
    assert p.datasets["tiny"]["utterances"] is None
    assert any("not prepared yet" in n for n in p.notes)
    assert "unknown" in format_plan(p)


def test_cli_writes_json(results: Path, tmp_path: Path) -> None:
    import yaml

    from ambiemo.cli import app

    pr = params()
    pr["paths"] = {"results": str(results)}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(pr))
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(
        app, ["plan", "--params", str(path), "--json", str(out), "-S", "run.strategies=[baseline]"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["estimate"] is True and data["models"]["fake"]["calls"] == N
    assert "estimates" in res.output


def test_plan_of_a_profile_whose_corpora_are_missing_reports_and_exits_0(tmp_path: Path) -> None:
    """What the stage runs, on a profile whose corpus is not on this machine: a report, not a failed pipeline."""
    import yaml

    from ambiemo.cli import app

    pr = params()
    pr["datasets"]["tiny"]["root"] = str(tmp_path / "no-such-corpus")
    pr["paths"] = {"results": str(tmp_path / "results")}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(pr))
    out = tmp_path / "results" / "plan" / "plan.json"
    res = CliRunner().invoke(app, ["plan", "--params", str(path), "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["datasets"]["tiny"]["utterances"] is None
    assert "not prepared yet" in res.output


def test_cache_coverage_counts_the_entries_held_for_the_models_identity(results: Path, tmp_path: Path) -> None:
    """The plan's `cached` share is the entries the generation cache holds for the identity the
    params entry builds, against the entries the profile needs; other identities do not count."""
    from ambiemo.inference.cache import GenerationCache
    from ambiemo.models import load_model

    p = params()
    p["paths"] = {"cache_dir": str(tmp_path / "cache")}
    assert plan(p, results=results).models["fake"].cached_entries == 0  # no cache folder yet
    cache = GenerationCache(tmp_path / "cache")
    sha = cache.register(load_model("fake", {"adapter": "fake"}).identity, "fake")
    cache.put_many(sha, "fake", "generation", [(f"k{i}", "{}") for i in range(30)])
    other = cache.register({"route": "fake", "version": 0, "model_id": "other"}, "other")
    cache.put_many(other, "other", "generation", [(f"o{i}", "{}") for i in range(500)])
    cache.close()
    fake = plan(p, results=results).models["fake"]
    assert fake.cached_entries == 30
    assert coverage(fake) == pytest.approx(30 / (N * 15))
    table = format_plan(plan(p, results=results))
    assert f"{100 * 30 / (N * 15):.0f}%" in next(line for line in table.splitlines() if line.startswith("fake "))
