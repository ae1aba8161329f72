"""The candidates table (``ambiemo.inference.candidates``): its schema and dtypes, what inference writes into it,
the oracle readout read from it, and that its bytes do not depend on how the run happened."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from synthetic import LABELS, TINY_N, tiny_params

from ambiemo import scoring
from ambiemo.inference.candidates import (
    CANDIDATE_COLUMNS,
    CandidatesError,
    candidate_columns,
    candidates_frame,
    candidates_path,
    is_candidates_path,
    read_candidates,
    write_candidates,
)
from ambiemo.inference.predictions import read_predictions
from ambiemo.inference.run import run_inference
from ambiemo.models.base import Candidate
from ambiemo.models.fake import FakeModel
from ambiemo.strategies import record
from ambiemo.strategies.prompts import Prompt

PROMPT = Prompt("distribution@1", (), ("sad", "neutral", "happy", "angry"))
META = {
    "label_set": {"name": "four", "labels": LABELS},
    "provenance": {},
}  # a predictions table's, as the writer gets it


def _key(utt_id: str, strategy: str = "bon", budget: int = 3) -> dict:
    return {"utt_id": utt_id, "dataset": "tiny", "model": "fake", "strategy": strategy, "budget": budget}


def _records(dists: list[list[float] | None], **extra) -> list[dict]:
    """Candidates as the strategies record them (``strategies.record`` of real candidates)."""
    return [
        record(
            Candidate(f"cand {i}", -1.5 * (i + 1), None, 4 + i), None if d is None else np.asarray(d), PROMPT, **extra
        )
        for i, d in enumerate(dists)
    ]


def test_round_trip_keeps_values_dtypes_and_bytes(tmp_path: Path) -> None:
    recs = _records([[0.5, 0.5, 0.0, 0.0], None], verifier_score=0.25)
    recs[0].update(weight=1.0, selected=True)
    options = [
        {"text": "sad", "logprob": -0.7, "n_tokens": None, "p": None, "verifier_score": None, "weight": None}
        | {"selected": False, **PROMPT.record()}
    ]
    frame = candidates_frame([(_key("u1"), recs), (_key("u2", "label-scoring", 1), options)], LABELS)
    assert list(frame.columns) == candidate_columns(LABELS) and len(CANDIDATE_COLUMNS) == len(frame.columns) - 3
    path = write_candidates(frame, tmp_path / "bon.candidates.parquet", META)
    got = read_candidates(path)
    dtypes = {c: str(t) for c, t in got.df.dtypes.items()}
    assert dtypes["budget"] == dtypes["index"] == "int64" and dtypes["n_tokens"] == "Int64"
    assert dtypes["p_sad"] == dtypes["logprob"] == dtypes["verifier_score"] == dtypes["weight"] == "float64"
    assert dtypes["parsed_ok"] == dtypes["selected"] == "bool"
    df = got.df
    assert df["index"].tolist() == [0, 1, 0] and df["text"].tolist() == ["cand 0", "cand 1", "sad"]
    assert df["logprob"].tolist() == [-1.5, -3.0, -0.7] and df["n_tokens"].tolist()[:2] == [4, 5]
    assert df["n_tokens"].isna().tolist() == [False, False, True]
    assert df["parsed_ok"].tolist() == [True, False, False] and df["selected"].tolist() == [True, False, False]
    assert df.loc[0, ["p_neutral", "p_happy", "p_angry", "p_sad"]].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert df.loc[1, [f"p_{x}" for x in LABELS]].isna().all()
    assert df["verifier_score"].tolist()[:2] == [0.25, 0.25] and math.isnan(df["verifier_score"].iloc[2])
    assert df["weight"].iloc[0] == 1.0 and df["weight"].iloc[1:].isna().all()
    assert set(df["label_order"]) == {"sad,neutral,happy,angry"} and set(df["prompt"]) == {"distribution@1"}
    again = write_candidates(got.df, tmp_path / "again.parquet", META)
    assert again.read_bytes() == path.read_bytes()


def test_bad_tables_are_refused_naming_the_file_and_the_column(tmp_path: Path) -> None:
    from ambiemo.core.tables import read_table, write_table

    frame = candidates_frame([(_key("u1"), _records([[0.2, 0.3, 0.5, 0.0]]))], LABELS)
    good = write_candidates(frame, tmp_path / "x.candidates.parquet", META)
    df, meta = read_table(good)
    write_table(df.drop(columns=["weight"]), tmp_path / "y.candidates.parquet", meta)
    with pytest.raises(CandidatesError, match=r"y\.candidates\.parquet: missing column\(s\) \['weight'\]"):
        read_candidates(tmp_path / "y.candidates.parquet")
    write_table(df.assign(n_tokens=df["n_tokens"].astype(float)), tmp_path / "f.candidates.parquet", meta)
    with pytest.raises(CandidatesError, match=r"f\.candidates\.parquet: column\(s\) of the wrong dtype.*n_tokens"):
        read_candidates(tmp_path / "f.candidates.parquet")
    with pytest.raises(CandidatesError, match=r"z\.parquet: missing column\(s\) \['weight'\]"):
        write_candidates(df.drop(columns=["weight"]), tmp_path / "z.parquet", META)
    broken = df.copy()
    broken.loc[0, "p_sad"] = 0.4  # no longer sums to one
    with pytest.raises(
        CandidatesError, match=r"z\.parquet: 1 row\(s\) have p_\* that are not a distribution.*u1/bon/3/0"
    ):
        write_candidates(broken, tmp_path / "z.parquet", META)
    unparsed = df.assign(parsed_ok=False)
    with pytest.raises(CandidatesError, match="parsed_ok that disagrees with p_"):
        write_candidates(unparsed, tmp_path / "z.parquet", META)
    with pytest.raises(CandidatesError, match="distribution of 3 values for 4 labels"):
        candidates_frame([(_key("u1"), _records([[0.2, 0.3, 0.5]]))], LABELS)
    with pytest.raises(FileNotFoundError, match="no candidates table"):
        read_candidates(tmp_path / "none.candidates.parquet")
    assert not (tmp_path / "z.parquet").exists(), "nothing is written when the check fails"
    assert candidates_path(tmp_path / "w-bon.parquet").name == "w-bon.candidates.parquet"
    assert is_candidates_path(candidates_path(tmp_path / "w-bon.parquet")) and not is_candidates_path(
        tmp_path / "w.parquet"
    )


def test_oracle_and_pass_at_n_from_the_table_match_a_hand_computation(manifest: Path, tmp_path: Path) -> None:
    # u0's humans are unanimous "neutral", u4's unanimous "sad" (the fixture's votes).
    answers = {
        "u0": ['{"happy": 0.6, "neutral": 0.4}', "no idea", '{"neutral": 0.9, "sad": 0.1}'],
        "u4": ['{"angry": 1.0}', '{"happy": 0.5, "neutral": 0.5}', '{"angry": 0.7, "sad": 0.3}'],
        "*": ["nothing parses"],
    }
    params = tiny_params(tmp_path, answers=answers)
    run_inference(params, "fake", "bon", manifest, tmp_path / "bon.parquet", budgets=[3])
    pred = read_predictions(tmp_path / "bon.parquet")
    s = scoring.score_predictions(read_manifest_of(manifest), pred, {"models": {"fake": {"params_b": 1.0}}})
    s = s.set_index("utt_id")

    neutral, sad = [1.0, 0, 0, 0], [0, 0, 0, 1.0]
    u0 = s.loc["u0"]  # the third candidate is closest, and its top label is the humans' "neutral"
    assert u0["oracle_n_parsed"] == 2
    assert u0["oracle_js"] == pytest.approx(jensenshannon(neutral, [0.9, 0, 0, 0.1]), abs=1e-12)
    assert u0["oracle_bc"] == pytest.approx(math.sqrt(0.9), abs=1e-12)
    assert u0["oracle_correct"] == 1 and u0["pass_at_n"] == 1
    u4 = s.loc["u4"]  # closest: angry 0.7 / sad 0.3 (BC sqrt(0.3)); no candidate's top label is "sad"
    assert u4["oracle_n_parsed"] == 3
    assert u4["oracle_js"] == pytest.approx(jensenshannon(sad, [0, 0, 0.7, 0.3]), abs=1e-12)
    assert u4["oracle_bc"] == pytest.approx(math.sqrt(0.3), abs=1e-12)
    assert u4["oracle_correct"] == 0 and u4["pass_at_n"] == 0
    u1 = s.loc["u1"]  # nothing parsed
    assert u1["oracle_n_parsed"] == 0 and math.isnan(u1["oracle_js"]) and math.isnan(u1["pass_at_n"])

    # the same from the table given by hand beside a bare DataFrame; without it, no oracle
    by_hand = scoring.score_predictions(read_manifest_of(manifest), pred.df, None, candidates=pred.candidates)
    assert by_hand.set_index("utt_id").loc["u0", "oracle_js"] == u0["oracle_js"]
    bare = scoring.score_predictions(read_manifest_of(manifest), pred.df, None)
    assert bare["oracle_js"].isna().all() and (bare["oracle_n_parsed"] == 0).all()
    stray = pred.candidates.df.assign(model="other")
    with pytest.raises(scoring.ScoringError, match="belong to no prediction row"):
        scoring.score_predictions(read_manifest_of(manifest), pred.df, None, candidates=stray)


def read_manifest_of(path: Path):
    from ambiemo.data.manifest import read_manifest

    return read_manifest(path)


STRATEGIES = ("bon", "self-consistency", "label-scoring", "alm-v", "prompt-ensemble")


def _run_all(params: dict, manifest: Path, out: Path) -> None:
    for strategy in STRATEGIES:
        judge = FakeModel("judge", wall_s=0.2) if strategy == "alm-v" else None
        run_inference(
            params, "fake", strategy, manifest, out / f"{strategy}.parquet", model=FakeModel(), verifier=judge
        )


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


def test_a_rerun_from_the_cache_writes_identical_predictions_and_candidates(manifest: Path, tmp_path: Path) -> None:
    from ambiemo.inference.cache import CachedModel, GenerationCache

    params = tiny_params(tmp_path)
    cache = GenerationCache(tmp_path / "shared-cache")

    def run(out: Path) -> list[int]:
        calls = []
        for strategy in STRATEGIES:
            model, judge = FakeModel(), FakeModel("judge", wall_s=0.2)
            verifier = CachedModel(judge, cache) if strategy == "alm-v" else None
            run_inference(
                params, "fake", strategy, manifest, out / f"{strategy}.parquet", model=CachedModel(model, cache),
                verifier=verifier,
            )  # fmt: skip
            calls.append(model.usage.calls + judge.usage.calls)
        return calls

    first_calls, second_calls = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(c > 0 for c in first_calls) and second_calls == [0] * len(STRATEGIES)
    first, second = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert sorted(first) == sorted(
        [f"{s}.parquet" for s in STRATEGIES] + [f"{s}.candidates.parquet" for s in STRATEGIES]
    )
    assert first == second
    # option scoring's usage came back from the cache: known, not NaN or <NA>
    ls = read_predictions(tmp_path / "b" / "label-scoring.parquet").df
    assert ls["prompt_tokens"].notna().all() and (ls["wall_s"] == 0.01).all()
    v = read_predictions(tmp_path / "b" / "alm-v.parquet").df
    np.testing.assert_allclose(v["verifier_wall_s"], 3 * 0.2)  # B = 3 ratings of 0.2 s each
    assert v["verifier_prompt_tokens"].notna().all() and (v["verifier_gen_tokens"] == 0).all()


def test_batch_size_does_not_change_a_byte(manifest: Path, tmp_path: Path) -> None:
    out = {}
    for batch in (1, 8):
        params = tiny_params(tmp_path / f"b{batch}")  # its own cache: every answer computed again
        params["strategies"]["batch_size"] = batch
        _run_all(params, manifest, tmp_path / f"out{batch}")
        out[batch] = _bytes(tmp_path / f"out{batch}")
    assert len(out[1]) == 2 * len(STRATEGIES) and out[1] == out[8]
    table = read_candidates(tmp_path / "out1" / "self-consistency.candidates.parquet").df
    # readout, then budget (TINY_N = 1, 2, 4), then manifest order, then the candidate's index
    head = table[table["strategy"] == "self-consistency"].head(9)
    assert head["budget"].tolist() == [1] * TINY_N + [2] * 4 and head["index"].tolist() == [0] * TINY_N + [0, 1, 0, 1]
    assert head["utt_id"].tolist() == [f"u{i}" for i in range(TINY_N)] + ["u0", "u0", "u1", "u1"]


def test_row_sums_match_the_fake_model_numbers(manifest: Path, tmp_path: Path) -> None:
    """The fake reports words + 25 prompt tokens per request and its ``wall_s`` per request; a
    row's model and verifier columns add up exactly those, option scoring included."""
    from ambiemo.strategies.prompts import PromptBook

    params = tiny_params(tmp_path)
    book = PromptBook.from_params(params, LABELS)
    words = lambda messages: sum(len(m.text.split()) for m in messages) + 25  # noqa: E731
    model, judge = FakeModel(wall_s=0.3), FakeModel("judge", wall_s=0.05)
    df = run_inference(params, "fake", "alm-v", manifest, tmp_path / "v.parquet", model=model, verifier=judge)
    table = read_predictions(tmp_path / "v.parquet").candidates.df
    for _, row in df.iterrows():
        task = book.ask("distribution", row["utt_id"])
        cands = table[(table["utt_id"] == row["utt_id"]) & (table["budget"] == row["budget"])]
        rated = cands[cands["parsed_ok"]]
        assert row["prompt_tokens"] == words(task.messages) and row["wall_s"] == pytest.approx(0.3)
        assert row["gen_tokens"] == cands["n_tokens"].sum() and row["model_calls"] == 1
        assert row["verifier_calls"] == len(rated) and row["verifier_gen_tokens"] == 0
        assert row["verifier_prompt_tokens"] == sum(words(book.verifier(task, t, "options")) for t in rated["text"])
        assert row["verifier_wall_s"] == pytest.approx(0.05 * len(rated))

    ls = run_inference(params, "fake", "label-scoring", manifest, tmp_path / "ls.parquet", model=FakeModel(wall_s=0.4))
    for _, row in ls.iterrows():
        assert row["prompt_tokens"] == words(book.ask("single", row["utt_id"]).messages)
        assert row["wall_s"] == pytest.approx(0.4) and row["gen_tokens"] == 0 and row["verifier_calls"] == 0
    assert len(ls) == TINY_N


def test_an_option_score_cached_without_its_usage_is_recomputed(tmp_path: Path) -> None:
    """An entry of the older layout (log-probabilities alone) would give a rerun no prompt tokens or
    seconds: it counts as stale, and the model is asked again."""
    from ambiemo.inference.cache import CachedModel, GenerationCache, canonical_json, identity_sha, scoring_key
    from ambiemo.models.base import AudioRequest, Message

    request = AudioRequest("u0", np.zeros(800, dtype=np.float32), 16000, [Message("user", "Which?", audio=True)])
    inner = FakeModel(option_logprobs={"a": -0.5, "b": -2.0}, wall_s=0.75)
    cache = GenerationCache(tmp_path / "cache")
    key = scoring_key(inner.identity, request, ["a", "b"], "")
    cache.put_many(identity_sha(inner.identity), "fake", "score_options", [(key, canonical_json([-0.5, -2.0]))])
    (got,) = CachedModel(inner, cache).score_options_many([request], ["a", "b"])
    assert inner.requests_seen == [("score_options", "u0", None)] and cache.stale == 1
    assert got.logprobs.tolist() == [-0.5, -2.0] and got.prompt_tokens == 1 + 25 and got.wall_s == 0.75
    (again,) = CachedModel(FakeModel(option_logprobs={"a": -0.5, "b": -2.0}, wall_s=0.75), cache).score_options_many(
        [request], ["a", "b"]
    )
    assert (again.prompt_tokens, again.wall_s, cache.stale) == (26, 0.75, 1)  # the new entry, from the cache
