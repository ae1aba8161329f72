"""Verifier ratings and label scoring go to the model in one call per batch of utterances, not one
per candidate; the answers are the same as rating each candidate alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import TINY_N, tiny_params

from ambiemo.inference.run import run_inference
from ambiemo.models.fake import FakeModel


class Counting(FakeModel):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.many_calls: list[int] = []  # requests per score_options_many call
        self.generate_calls: list[int] = []  # requests per generate call

    def score_options_many(self, requests, options, prefix=""):
        self.many_calls.append(len(requests))
        return super().score_options_many(requests, options, prefix)

    def generate(self, requests, config):
        self.generate_calls.append(len(requests))
        return super().generate(requests, config)


def one_at_a_time(model: FakeModel) -> FakeModel:
    """The same model, but every rating sent alone (the old way)."""
    one = FakeModel.score_options_many  # the base class's, one request at a time
    model.score_options_many = lambda reqs, opts, prefix="": [one(model, [r], opts, prefix)[0] for r in reqs]
    return model


@pytest.mark.parametrize("method", ["options", "generate"])
def test_the_verifier_rates_a_whole_batch_in_one_call(manifest: Path, tmp_path: Path, method: str) -> None:
    params = tiny_params(tmp_path)
    params["strategies"]["verifier"]["method"] = method
    params["strategies"]["batch_size"] = 3
    verifier = Counting("fake")
    df = run_inference(
        params, "fake", "alm-v", manifest, tmp_path / "a.parquet", model=FakeModel("fake"), verifier=verifier
    )
    batches = [3, TINY_N - 3]  # utterances per strategy batch
    calls = verifier.many_calls if method == "options" else verifier.generate_calls
    assert calls == [3 * b for b in batches]  # B = 3 candidates of every utterance of the batch, at once
    assert int(df["verifier_calls"].sum()) == 3 * TINY_N  # each row still charged for its own three ratings

    params["paths"]["cache_dir"] = str(tmp_path / "other-cache")
    alone = run_inference(
        params,
        "fake",
        "alm-v",
        manifest,
        tmp_path / "b.parquet",
        model=FakeModel("fake"),
        verifier=one_at_a_time(FakeModel("fake")),
    )
    cols = [c for c in df.columns if c.startswith("p_")] + ["pred_label", "verifier_calls"]
    assert df[cols].equals(alone[cols])


def test_label_scoring_scores_a_batch_in_one_call(manifest: Path, tmp_path: Path) -> None:
    params = tiny_params(tmp_path)
    params["strategies"]["batch_size"] = 4
    model = Counting("fake")
    run_inference(params, "fake", "label-scoring", manifest, tmp_path / "a.parquet", model=model)
    assert model.many_calls == [4, TINY_N - 4]


def test_a_served_route_gets_several_rounds_of_its_capacity_per_batch(manifest: Path, tmp_path: Path) -> None:
    """A route that takes two requests at once (``preferred_batch``) gets four rounds of them per
    strategy batch, more than ``strategies.batch_size``: a batch waits for its slowest request, so fewer
    batches keep the route's slots busier; the answers are those of batches of one."""
    from ambiemo.inference.run.single import ROUNDS_PER_BATCH

    class Served(Counting):
        preferred_batch = 2

    params = tiny_params(tmp_path)
    params["strategies"]["batch_size"] = 1
    served = Served("fake")
    df = run_inference(params, "fake", "baseline", manifest, tmp_path / "a.parquet", model=served)
    rounds = ROUNDS_PER_BATCH * 2
    assert served.generate_calls == [min(rounds, TINY_N - i) for i in range(0, TINY_N, rounds)]

    params["paths"]["cache_dir"] = str(tmp_path / "other-cache")
    alone = Counting("fake")
    ref = run_inference(params, "fake", "baseline", manifest, tmp_path / "b.parquet", model=alone)
    assert alone.generate_calls == [1] * TINY_N
    cols = ["utt_id"] + [c for c in df.columns if c.startswith("p_")]
    assert df[cols].equals(ref[cols])
