"""End to end: a tiny manifest with real audio files, the fake model, the generation cache, the
predictions table; reruns from the cache, resumption, failures and refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic import LABELS, TINY_N, tiny_params
from typer.testing import CliRunner

from ambiemo.inference.cache import CachedModel, GenerationCache
from ambiemo.inference.predictions import prediction_columns, read_predictions
from ambiemo.inference.run import InferenceFailures, run_inference
from ambiemo.models.base import CapabilityError
from ambiemo.models.fake import FakeModel

ANSWERS = {
    "*": ['{"neutral": 0.7, "happy": 0.1, "angry": 0.1, "sad": 0.1}'],
    "u3": ["I cannot tell."],
    "u4": ['Final answer: {"sad": 60, "angry": 40}'],
}


def test_baseline_end_to_end(manifest: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path, answers=ANSWERS, wall_s=0.5)
    out = tmp_path / "pred.parquet"
    df = run_inference(params, "fake", "baseline", manifest, out)
    pred = read_predictions(out)
    assert list(pred.df.columns) == prediction_columns(LABELS)
    assert pred.df["utt_id"].tolist() == [f"u{i}" for i in range(TINY_N)]
    assert (pred.df["strategy"] == "baseline").all() and (pred.df["budget"] == 1).all()
    p = pred.distributions()
    np.testing.assert_allclose(p[0], [0.7, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(p[3], [0.25] * 4)  # the failure policy: uniform
    np.testing.assert_allclose(p[4], [0, 0, 0.4, 0.6])  # percentages renormalised
    assert pred.df["parsed_ok"].tolist() == [True, True, True, False, True]
    assert pred.df["pred_label"].tolist() == ["neutral", "neutral", "neutral", "", "sad"]
    assert pred.meta["parse_failures"] == 1 and pred.meta["parse_failures_by"] == {"baseline@1": 1}
    assert pred.meta["model_failures"] == {}
    assert pred.meta["provenance"]["model"]["route"] == "fake"
    assert pred.meta["provenance"]["strategy"]["candidate_source"] == "greedy"
    # compute from the candidates' meta: one call, the fake's wall time, its token counts
    assert (pred.df["model_calls"] == 1).all() and (pred.df["verifier_calls"] == 0).all()
    np.testing.assert_allclose(pred.df["wall_s"], 0.5)
    cand = pred.candidates.of("u0", "baseline", 1).iloc[0]
    assert cand["selected"] and cand["prompt"] == "distribution@1" and cand["index"] == 0
    np.testing.assert_allclose(cand[[f"p_{x}" for x in LABELS]].to_numpy(dtype=float), [0.7, 0.1, 0.1, 0.1])
    assert pred.df["gen_tokens"].iloc[0] == cand["n_tokens"] == len(ANSWERS["*"][0]) // 4
    assert not pred.candidates.of("u3", "baseline", 1)["parsed_ok"].any()  # "I cannot tell." has no distribution
    assert df.attrs["usage"]["calls"] == TINY_N


def test_rerun_from_cache_is_free_and_identical(manifest: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path, answers=ANSWERS)
    first = run_inference(params, "fake", "self-consistency", manifest, tmp_path / "a.parquet")
    second = run_inference(params, "fake", "self-consistency", manifest, tmp_path / "b.parquet")
    assert first.attrs["usage"]["calls"] == TINY_N and second.attrs["usage"]["calls"] == 0
    assert second.attrs["usage"]["cache_hits"] == TINY_N
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_interrupted_run_resumes_from_the_cache(manifest: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path)
    run_inference(params, "fake", "baseline", manifest, tmp_path / "partial.parquet", limit=2)
    full = run_inference(params, "fake", "baseline", manifest, tmp_path / "full.parquet")
    assert full.attrs["usage"]["calls"] == TINY_N - 2 and full.attrs["usage"]["cache_hits"] == 2
    assert len(full) == TINY_N


def test_one_failure_is_recorded_and_the_share_decides_the_stage(manifest: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path, fail=["u2"])
    params["inference"] = {"max_failure_share": 0.2}  # 1 of 5 is allowed
    df = run_inference(params, "fake", "bon", manifest, tmp_path / "p.parquet")
    failed = df[df["utt_id"] == "u2"]
    assert len(failed) == 2 and not failed["parsed_ok"].any() and (failed["n_candidates"] == 0).all()
    assert (failed["model_calls"] == 0).all()
    cands = read_predictions(tmp_path / "p.parquet").candidates.df
    assert "u2" not in set(cands["utt_id"]) and set(cands["utt_id"]) == {"u0", "u1", "u3", "u4"}
    assert list(df.attrs["meta"]["model_failures"]) == ["u2"]
    assert "scripted failure" in df.attrs["meta"]["model_failures"]["u2"]
    assert df.attrs["meta"]["failures_by_kind"] == {"audio": 0, "model": 1}
    assert df.attrs["meta"]["parse_failures"] == 0, "a model failure is not counted as a parse failure"
    assert df[df["utt_id"] != "u2"]["parsed_ok"].all()

    # The default share (1%): the same run writes everything, then fails the stage naming the utterance.
    out = tmp_path / "q.parquet"
    with pytest.raises(InferenceFailures, match=r"1 of 5 utterances failed \(20.0%\).*u2: .*scripted failure") as err:
        run_inference(tiny_params(tmp_path, fail=["u2"]), "fake", "bon", manifest, out)
    assert err.value.failures.keys() == {"u2"} and err.value.path == out
    assert read_predictions(out).meta["model_failures"].keys() == {"u2"}, "nothing computed is lost"

    params = tiny_params(tmp_path, fail=[f"u{i}" for i in range(TINY_N)])
    params["inference"] = {"max_failure_share": 0.99}
    with pytest.raises(InferenceFailures, match="every utterance failed"):
        run_inference(params, "fake", "baseline", manifest, tmp_path / "r.parquet")


@pytest.mark.parametrize("bad", [{"max_failure_share": 1.5}, {"max_failure_share": "1%"}, {"max_share": 0.1}])
def test_bad_failure_share_is_refused_before_any_call(manifest: Path, tmp_path: Path, bad) -> None:
    params = tiny_params(tmp_path)
    params["inference"] = bad
    fake = FakeModel()
    with pytest.raises(ValueError, match=r"`inference\.max_(failure_)?share`"):
        run_inference(params, "fake", "baseline", manifest, tmp_path / "p.parquet", model=fake)
    assert fake.requests_seen == []


def test_capability_refused_before_any_call(manifest: Path, tmp_path: Path) -> None:
    fake = FakeModel(option_scoring=False)
    with pytest.raises(CapabilityError, match="option scoring"):
        run_inference(tiny_params(tmp_path), "fake", "label-scoring", manifest, tmp_path / "p.parquet", model=fake)
    assert fake.requests_seen == []
    fake = FakeModel(logprobs_available=False)
    with pytest.raises(CapabilityError, match="logprobs"):
        run_inference(tiny_params(tmp_path), "fake", "w-bon", manifest, tmp_path / "p.parquet", model=fake)


@pytest.mark.parametrize(
    "strategy,budgets,match",
    [("baseline", [2], "no budget"), ("bon", [0, 2], ">= 1"), ("prompt-ensemble", [9], "paraphrases")],
)
def test_impossible_budgets_refused_before_any_call(manifest: Path, tmp_path: Path, strategy, budgets, match) -> None:
    fake = FakeModel()
    with pytest.raises(ValueError, match=match):
        run_inference(
            tiny_params(tmp_path), "fake", strategy, manifest, tmp_path / "p.parquet", budgets=budgets, model=fake
        )
    assert fake.requests_seen == []


def test_budgets_from_one_call_where_sound(manifest: Path, tmp_path: Path) -> None:
    """Samples: one call at the largest TINY_N serves every TINY_N. Beams: one call per width; w-bon and
    alm-v reuse bon's calls through the cache."""
    params = tiny_params(tmp_path)
    cache = GenerationCache(tmp_path / "cache")
    fake = FakeModel()
    model = CachedModel(fake, cache)
    df = run_inference(params, "fake", "self-consistency", manifest, tmp_path / "sc.parquet", model=model)
    configs = [c for kind, _, c in fake.requests_seen]
    assert {(c.mode, c.n) for c in configs} == {("sample", 4)} and len(configs) == TINY_N
    assert sorted(df["strategy"].unique()) == ["self-consistency", "self-consistency-vote"]
    assert sorted(df["budget"].unique()) == [1, 2, 4]
    sc = df[df["strategy"] == "self-consistency"].set_index(["utt_id", "budget"])
    # the 2-sample row holds the first two of the 4-sample row's candidates
    table = read_predictions(tmp_path / "sc.parquet").candidates
    c2, c4 = table.of("u0", "self-consistency", 2), table.of("u0", "self-consistency", 4)
    same = ["text", "logprob", "n_tokens", *(f"p_{x}" for x in LABELS), "index"]
    pd.testing.assert_frame_equal(c2[same].reset_index(drop=True), c4[same].iloc[:2].reset_index(drop=True))
    assert sc.loc[("u0", 2), "gen_tokens"] == c4["n_tokens"].iloc[:2].sum()
    assert sc.loc[("u0", 2), "model_calls"] == 1

    fake.requests_seen.clear()
    run_inference(params, "fake", "bon", manifest, tmp_path / "bon.parquet", model=model)
    assert sorted({(c.mode, c.num_beams, c.n) for _, _, c in fake.requests_seen}) == [("beam", 2, 2), ("beam", 3, 3)]
    fake.requests_seen.clear()
    wbon = run_inference(params, "fake", "w-bon", manifest, tmp_path / "wbon.parquet", model=model)
    assert fake.requests_seen == [], "w-bon asks exactly bon's beam calls: all from the cache"
    assert wbon.attrs["usage"]["calls"] == 0 and wbon.attrs["usage"]["cache_hits"] == 2 * TINY_N, (
        "this run's usage only"
    )
    run_inference(params, "fake", "alm-v", manifest, tmp_path / "almv.parquet", model=model)
    kinds = [kind for kind, _, _ in fake.requests_seen]
    assert kinds == ["score_options"] * (3 * TINY_N), (
        "alm-v's B=3 candidates come from bon's cache; only the verifier ran"
    )


def test_without_beam_search_samples_stand_in(manifest: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path, beam_search=False)
    df = run_inference(params, "fake", "bon", manifest, tmp_path / "p.parquet")
    assert df.attrs["usage"]["calls"] == TINY_N, "one sampling call per utterance serves B = 2 and 3"
    assert df.attrs["meta"]["provenance"]["strategy"]["candidate_source"] == "sampled"


def test_every_strategy_writes_a_valid_table(manifest: Path, tmp_path: Path) -> None:
    from ambiemo.strategies import STRATEGIES

    params = tiny_params(tmp_path)
    for name in STRATEGIES.names():
        df = run_inference(params, "fake", name, manifest, tmp_path / f"{name}.parquet")
        assert set(df["utt_id"]) == {f"u{i}" for i in range(TINY_N)}, name
        assert df["parsed_ok"].all(), name  # the fake's default answers are well-formed
        verifier = df["verifier_calls"].to_numpy()
        assert (verifier > 0).all() if name in ("alm-v", "w-alm-v") else (verifier == 0).all(), name
    assert STRATEGIES.names() == sorted(
        ["baseline", "cot", "bon", "w-bon", "alm-v", "w-alm-v", "self-consistency", "label-scoring", "prompt-ensemble"]
    )


def test_cli(manifest: Path, tmp_path: Path) -> None:
    import yaml

    from ambiemo.cli import app

    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(tiny_params(tmp_path, answers=ANSWERS)))
    out = tmp_path / "cli.parquet"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "infer",
            "--model",
            "fake",
            "--strategy",
            "bon",
            "--budget",
            "2",
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--limit",
            "3",
            "--params",
            str(params_path),
        ],
    )
    assert result.exit_code == 0, result.output
    df = read_predictions(out).df
    assert len(df) == 3 and (df["budget"] == 2).all()
    assert "bon @ 2: parse failures 0.0%" in result.output

    result = runner.invoke(
        app, ["infer", "--model", "nope", "--manifest", str(manifest), "--out", str(out), "--params", str(params_path)]
    )
    assert result.exit_code == 2 and "no 'nope'" in result.output

    result = runner.invoke(app, ["strategies", "list", "--params", str(params_path)])
    assert result.exit_code == 0 and "w-alm-v" in result.output and "B in [2, 3]" in result.output


@pytest.mark.slow
def test_every_strategy_on_a_tiny_real_architecture(manifest: Path, tmp_path: Path) -> None:
    """The real Qwen2-Audio code path (chat template, audio features, beam search with scores,
    option scoring, the verifier's assistant turn), shrunk to a random ~0.3M-parameter instance.
    Its answers are noise, so what is checked is the plumbing and the label-scoring arithmetic."""
    pytest.importorskip("torch")
    from ambiemo.inference.run import build_model
    from ambiemo.strategies import STRATEGIES

    params = tiny_params(tmp_path)
    params["models"] = {
        "tiny": {
            "adapter": "hf-qwen2-audio",
            "checkpoint": "tiny:qwen2-audio",
            "dtype": "float32",
            "cache_dir": str(tmp_path / "tiny"),
        }
    }
    params["strategies"].update(
        {
            "verifier": {"model": "tiny"},
            "bon": {"budgets": [2]},
            "w-bon": {"budgets": [2]},
            "alm-v": {"budgets": [2]},
            "w-alm-v": {"budgets": [2]},
            "self-consistency": {"budgets": [1, 2]},
            "prompt-ensemble": {"budgets": [2]},
            "max_new_tokens": {"base": 2, "per_label": 2, "reasoning": 4},
        }
    )
    model = build_model(params, "tiny")
    for name in STRATEGIES.names():
        df = run_inference(params, "tiny", name, manifest, tmp_path / f"{name}.parquet", limit=2, model=model)
        assert len(df) == 2 * len(df[["strategy", "budget"]].drop_duplicates()), name
        assert df.attrs["meta"]["model_failures"] == {}, name
        table = read_predictions(tmp_path / f"{name}.parquet").candidates.df
        assert len(table) == df["n_candidates"].sum() and np.isfinite(table["logprob"]).all(), name
        if name == "label-scoring":
            # p = softmax over labels of logsumexp over each label's written forms (stored per option)
            from scipy.special import logsumexp, softmax

            first = table[table["utt_id"] == df["utt_id"].iloc[0]]
            lp = dict(zip(first["text"], first["logprob"], strict=True))
            expected = softmax([logsumexp([lp[x], lp[x.title()]]) for x in LABELS])
            np.testing.assert_allclose(df[[f"p_{x}" for x in LABELS]].iloc[0], expected, rtol=1e-9)
            assert df["parsed_ok"].all()
            # option scoring reports its prompt tokens and time on the real code path too
            assert (df["prompt_tokens"] > 0).all() and (df["wall_s"] > 0).all() and (df["gen_tokens"] == 0).all()
        if name == "alm-v":  # the tiny model verifies itself by scoring Yes/No: counted as the verifier's
            rated = df["verifier_calls"] > 0  # only parsed candidates are rated; a noise model's may not parse
            assert ((df["verifier_prompt_tokens"] > 0) == rated).all() and ((df["verifier_wall_s"] > 0) == rated).all()
        if name == "bon":
            cands = table[(table["utt_id"] == df["utt_id"].iloc[0]) & (table["budget"] == 2)]
            assert len(cands) == 2 and df.attrs["meta"]["provenance"]["strategy"]["candidate_source"] == "beam"
    assert model.usage.calls > 0


def test_a_cell_the_model_cannot_serve_is_written_as_skipped(manifest: Path, tmp_path: Path) -> None:
    """The pipeline's infer notebook records an impossible cell instead of stopping the matrix."""
    from ambiemo.inference.run import write_skipped

    out = tmp_path / "w-bon.parquet"
    with pytest.raises(CapabilityError, match="logprobs"):
        run_inference(tiny_params(tmp_path), "fake", "w-bon", manifest, out, model=FakeModel(logprobs_available=False))
    assert not out.exists()
    params = tiny_params(tmp_path)
    params["strategies"] = {**params.get("strategies", {}), "batch_size": 3}
    df = write_skipped(params, manifest, out, "needs logprobs", model={"key": "fake"}, strategy={"name": "w-bon"})
    written = read_predictions(out)
    assert len(df) == 0 and len(written) == 0 and written.meta["skipped"] == "needs logprobs"
    prov = written.meta["provenance"]
    assert prov["model"] == {"key": "fake"} and prov["strategy"] == {"name": "w-bon"}
    # recorded as a run records it: the batch size, which changes no number, is not in the file
    assert "strategies" in prov["params"] and "batch_size" not in prov["params"]["strategies"]
    assert list(written.df.columns) == prediction_columns(written.labels)
    assert len(written.candidates) == 0 and written.candidates.meta["skipped"] == "needs logprobs"


# -- errors are classified, not swallowed ------------------------------------------------------------
def test_a_programming_error_stops_the_run_at_once(manifest: Path, tmp_path: Path) -> None:
    """A TypeError in the model path is a bug: no recorded "failure", no file, no further calls."""
    calls = []

    def buggy(request, config, index):
        calls.append(request.utt_id)
        if request.utt_id == "u1":
            return None + 1  # a TypeError, as a broken adapter or strategy would raise
        return '{"neutral": 1}'

    fake = FakeModel(script=buggy)
    out = tmp_path / "p.parquet"
    params = tiny_params(tmp_path)
    params["strategies"]["batch_size"] = 1
    with pytest.raises(TypeError) as err:
        run_inference(params, "fake", "baseline", manifest, out, model=fake)
    assert calls == ["u0", "u1"], "stopped at the first bug, not retried utterance by utterance"
    assert not out.exists()
    assert any("programming or configuration error" in n and "u1" in n for n in err.value.__notes__)


def test_a_key_error_in_a_strategy_stops_the_run(manifest: Path, tmp_path: Path, monkeypatch) -> None:
    from ambiemo.strategies import STRATEGIES

    cls = STRATEGIES.get("self-consistency")
    monkeypatch.setattr(cls, "run", lambda self, utts, budgets: {}["missing"])
    with pytest.raises(KeyError, match="missing"):
        run_inference(tiny_params(tmp_path), "fake", "self-consistency", manifest, tmp_path / "p.parquet")


def test_failed_api_candidates_and_nan_scores_are_recorded_failures(manifest: Path, tmp_path: Path) -> None:
    """The API routes' way to fail one request (candidates with meta["error"], NaN option scores)."""
    from ambiemo.models.base import Candidate, OptionScores

    class Flaky(FakeModel):  # adapters implement the underscored calls; the base class counts them
        def _generate(self, requests, config):
            out = super()._generate(requests, config)
            return [
                [Candidate("", None, None, 0, {"error": "HTTP 503 (gave up after 3 attempts)"})] * config.n
                if r.utt_id == "u3"
                else cands
                for r, cands in zip(requests, out, strict=True)
            ]

        def _score_options(self, request, options, prefix):
            scores = super()._score_options(request, options, prefix)
            return OptionScores(np.full(len(options), np.nan)) if request.utt_id == "u1" else scores

    params = tiny_params(tmp_path)
    params["inference"] = {"max_failure_share": 0.5}
    df = run_inference(params, "fake", "baseline", manifest, tmp_path / "a.parquet", model=Flaky())
    assert df.attrs["meta"]["model_failures"] == {
        "u3": "model 'fake' failed on utterance 'u3': HTTP 503 (gave up after 3 attempts)"
    }
    df = run_inference(params, "fake", "label-scoring", manifest, tmp_path / "b.parquet", model=Flaky())
    assert list(df.attrs["meta"]["model_failures"]) == ["u1"]
    assert "could not score" in df.attrs["meta"]["model_failures"]["u1"]


# -- identical answers -------------------------------------------------------------------------------
def test_identical_answer_to_every_utterance_is_warned_and_recorded(manifest: Path, tmp_path: Path, caplog) -> None:
    same = '{"neutral": 0.4, "happy": 0.3, "angry": 0.2, "sad": 0.1}'
    with caplog.at_level(logging.WARNING, logger="ambiemo.inference.run"):
        df = run_inference(
            tiny_params(tmp_path, answers={"*": [same]}), "fake", "baseline", manifest, tmp_path / "a.parquet"
        )
    assert df.attrs["meta"]["identical_answers"] == {
        "n_utterances": TINY_N,
        "readout": "baseline",
        "budget": 1,
        "answer": same,
    }
    assert "tiny/fake/baseline: the model gave the identical answer to all 5 utterances" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ambiemo.inference.run"):
        # (another cache: the fake's scripted answers are not part of its identity)
        df = run_inference(
            tiny_params(tmp_path / "other", answers=ANSWERS), "fake", "baseline", manifest, tmp_path / "b.parquet"
        )
    assert df.attrs["meta"]["identical_answers"] is None and "identical answer" not in caplog.text


# -- progress ------------------------------------------------------------------------------------------
def test_progress_bar_and_log_lines_count_hits_failures_and_spend(
    manifest: Path, tmp_path: Path, caplog, capsys, monkeypatch
) -> None:
    import ambiemo.inference.run as inference

    monkeypatch.setattr(inference, "PROGRESS_LOG_EVERY_S", 0.0)  # a line per batch
    params = tiny_params(tmp_path, answers=ANSWERS, fail=["u2"])
    params["inference"] = {"max_failure_share": 0.5}
    params["strategies"]["batch_size"] = 2
    run_inference(params, "fake", "baseline", manifest, tmp_path / "a.parquet", limit=2)  # u0, u1 cached
    with caplog.at_level(logging.INFO, logger="ambiemo.inference.run"):
        run_inference(params, "fake", "baseline", manifest, tmp_path / "b.parquet", progress=True)
    lines = [r.getMessage() for r in caplog.records if "utterances (" in r.getMessage()]
    assert len(lines) == 3  # batches of 2, 2, 1
    assert (
        lines[0].startswith("tiny/fake/baseline: 2 of 5 utterances (40%)")
        and "cache hits 2, model failures 0" in lines[0]
    )
    assert "5 of 5 utterances (100%)" in lines[-1]
    assert "cache hits 2, model failures 1, parse failures 1, API spend $0.0000" in lines[-1]  # u3 does not parse
    err = capsys.readouterr().err
    assert "tiny/fake/baseline" in err and "5/5" in err and "utt/s" in err and "failed=1" in err and "hits=2" in err
    capsys.readouterr()
    run_inference(params, "fake", "baseline", manifest, tmp_path / "c.parquet")  # stderr is not a terminal here
    assert "utt/s" not in capsys.readouterr().err
