"""Each strategy on the fake model, whose candidates, log-probabilities and scores the test sets:
selection and weighting checked against hand computations (math, scipy), not the code's own path."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.special import softmax as scipy_softmax

from ambiemo.core.config import by_profile
from ambiemo.models.fake import FakeModel
from ambiemo.strategies import STRATEGIES, Context, Cost, Utterance, strategy_settings
from ambiemo.strategies.ensembles import label_votes
from ambiemo.strategies.parsing import parse_rating
from ambiemo.strategies.prompts import PromptBook

FOUR = ("neutral", "happy", "angry", "sad")
UTT = Utterance("u0", np.zeros(1600, dtype=np.float32), 16000)
BOOK = PromptBook(FOUR, seed=0, label_order="canonical")  # what ``run`` asks with


def fake_prompt_tokens(messages) -> int:
    """The fake model's token count of a prompt, as its docstring states it: words + 25."""
    return sum(len(m.text.split()) for m in messages) + 25


def answer(**shares: float) -> str:
    return json.dumps(shares)


def vec(**shares: float) -> np.ndarray:
    return np.array([shares.get(x, 0.0) for x in FOUR])


def scripted(cands: list[tuple[str, float, int]]):
    """A script answering candidate i with (text, summed logprob, n_tokens) cands[i]."""
    return lambda request, config, i: cands[i]


def run(name: str, model, budgets, verifier=None, **strategies) -> list:
    params = {"strategies": strategies}
    ctx = Context(model, FOUR, PromptBook(FOUR, seed=0, label_order="canonical"), strategy_settings(params), verifier)
    strategy = STRATEGIES.get(name)(ctx)
    strategy.check()
    (rows,) = strategy.run([UTT], budgets)
    return rows


# Three candidates: A has the best summed log-likelihood, B the best per-token mean.
A, B, C = answer(happy=1.0), answer(sad=0.5, neutral=0.5), answer(angry=0.8, sad=0.2)
THREE = [(A, -3.0, 3), (B, -4.0, 8), (C, -6.0, 4)]


@pytest.mark.parametrize("alpha,expected", [(0.0, vec(happy=1.0)), (1.0, vec(sad=0.5, neutral=0.5))])
def test_bon_keeps_the_most_likely_candidate(alpha: float, expected: np.ndarray) -> None:
    # alpha=0: scores -3, -4, -6 -> A.  alpha=1: -1.0, -0.5, -1.5 -> B.
    (row,) = run("bon", FakeModel(script=scripted(THREE)), [3], likelihood={"length_alpha": alpha})
    np.testing.assert_allclose(row.p, expected)
    assert [c["selected"] for c in row.candidates] == [alpha == 0.0, alpha == 1.0, False]
    assert row.cost.model_calls == 1 and row.cost.gen_tokens == 3 + 8 + 4


def test_bon_selects_among_parsed_candidates_only() -> None:
    cands = [("no idea", -0.1, 2), (B, -4.0, 8), (C, -2.0, 4)]
    (row,) = run("bon", FakeModel(script=scripted(cands)), [3], likelihood={"length_alpha": 0.0})
    np.testing.assert_allclose(row.p, vec(angry=0.8, sad=0.2))
    assert row.candidates[0]["p"] is None and not row.candidates[0]["selected"]
    (row,) = run("bon", FakeModel(script=scripted([("??", -1.0, 1)] * 2)), [2])
    assert row.p is None and not any(c["selected"] for c in row.candidates)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
def test_w_bon_softmax_weights(temperature: float) -> None:
    settings = {"likelihood": {"length_alpha": 1.0}, "w-bon": {"temperature": temperature}}
    (row,) = run("w-bon", FakeModel(script=scripted(THREE)), [3], **settings)
    scores = [-3.0 / 3, -4.0 / 8, -6.0 / 4]
    z = [math.exp(s / temperature) for s in scores]
    weights = [v / sum(z) for v in z]
    expected = sum(
        w * p
        for w, p in zip(weights, [vec(happy=1.0), vec(sad=0.5, neutral=0.5), vec(angry=0.8, sad=0.2)], strict=True)
    )
    np.testing.assert_allclose(row.p, expected, rtol=1e-12)
    np.testing.assert_allclose([c["weight"] for c in row.candidates], weights, rtol=1e-12)
    assert abs(row.p.sum() - 1) < 1e-12


def test_w_bon_with_one_candidate_equals_bon() -> None:
    model = FakeModel(script=scripted([(C, -2.0, 4)]))
    (w,) = run("w-bon", model, [1])
    (b,) = run("bon", model, [1])
    np.testing.assert_array_equal(w.p, b.p)
    assert w.candidates[0]["weight"] == 1.0


def test_w_bon_equal_scores_give_the_plain_mean() -> None:
    cands = [(A, -2.0, 4), (B, -2.0, 4), (C, -2.0, 4)]
    (row,) = run("w-bon", FakeModel(script=scripted(cands)), [3])
    np.testing.assert_allclose(row.p, (vec(happy=1.0) + vec(sad=0.5, neutral=0.5) + vec(angry=0.8, sad=0.2)) / 3)


def test_w_bon_leaves_unparsed_candidates_out() -> None:
    cands = [(A, -1.0, 1), ("garbage", -0.1, 1), (B, -1.0, 1)]
    (row,) = run("w-bon", FakeModel(script=scripted(cands)), [3], likelihood={"length_alpha": 0.0})
    np.testing.assert_allclose(row.p, (vec(happy=1.0) + vec(sad=0.5, neutral=0.5)) / 2)
    assert row.candidates[1]["weight"] is None


def test_alm_v_generated_ratings_select_the_best() -> None:
    model = FakeModel(script=scripted(THREE))
    verifier = FakeModel(ratings={A: "3", B: "Score: 9/10", C: "7"}, option_scoring=False)
    (row,) = run("alm-v", model, [3], verifier=verifier)
    np.testing.assert_allclose(row.p, vec(sad=0.5, neutral=0.5))
    assert [c["verifier_score"] for c in row.candidates] == [0.3, 0.9, 0.7]
    assert [c["selected"] for c in row.candidates] == [False, True, False]
    assert row.cost.model_calls == 1 and row.cost.verifier_calls == 3


def test_w_alm_v_weights_proportional_to_ratings() -> None:
    model = FakeModel(script=scripted(THREE))
    verifier = FakeModel(ratings={A: "3", B: "9", C: "unsure"}, option_scoring=False)
    (row,) = run("w-alm-v", model, [3], verifier=verifier)
    np.testing.assert_allclose(row.p, (0.3 * vec(happy=1.0) + 0.9 * vec(sad=0.5, neutral=0.5)) / 1.2, rtol=1e-12)
    assert row.candidates[2]["verifier_score"] is None and row.candidates[2]["weight"] == 0.0
    # equal ratings, or none readable: the plain mean
    for ratings in ({A: "5", B: "5", C: "5"}, {A: "?", B: "?", C: "?"}):
        verifier = FakeModel(ratings=ratings, option_scoring=False)
        (row,) = run("w-alm-v", model, [3], verifier=verifier)
        np.testing.assert_allclose(row.p, (vec(happy=1.0) + vec(sad=0.5, neutral=0.5) + vec(angry=0.8, sad=0.2)) / 3)


def test_verifier_option_scores_give_p_yes() -> None:
    option_logprobs = {"Yes": math.log(0.3), "yes": math.log(0.1), "No": math.log(0.2), "no": math.log(0.2)}
    verifier = FakeModel(option_logprobs=option_logprobs)
    (row,) = run("alm-v", FakeModel(script=scripted(THREE[:2])), [2], verifier=verifier)
    assert row.candidates[0]["verifier_score"] == pytest.approx(0.4 / (0.4 + 0.4), rel=1e-12)
    assert row.cost.verifier_calls == 2 and row.cost.prompt_tokens is not None
    assert [kind for kind, _, _ in verifier.requests_seen] == ["score_options"] * 2


def test_self_consistency_mean_and_votes() -> None:
    cands = [
        (answer(happy=0.6, sad=0.4), -1, 4),
        (answer(sad=0.7, angry=0.3), -1, 4),
        ("junk", -1, 1),
        (answer(happy=0.5, neutral=0.5), -1, 4),
    ]
    rows = run("self-consistency", FakeModel(script=scripted(cands)), [1, 2, 4])
    by = {(r.strategy, r.budget): r for r in rows}
    np.testing.assert_allclose(by[("self-consistency", 2)].p, (vec(happy=0.6, sad=0.4) + vec(sad=0.7, angry=0.3)) / 2)
    np.testing.assert_allclose(by[("self-consistency-vote", 2)].p, vec(happy=0.5, sad=0.5))
    # N=4: three parsed; the tied answer (happy = neutral = 0.5) splits its vote
    np.testing.assert_allclose(by[("self-consistency-vote", 4)].p, vec(happy=1.5 / 3, sad=1 / 3, neutral=0.5 / 3))
    np.testing.assert_allclose(by[("self-consistency", 1)].p, vec(happy=0.6, sad=0.4))
    assert by[("self-consistency", 4)].cost.gen_tokens == 13 and by[("self-consistency", 2)].cost.gen_tokens == 8
    np.testing.assert_allclose(label_votes([vec(sad=1.0)]), vec(sad=1.0))


def test_label_scoring_softmax_over_summed_variants() -> None:
    logp = {
        "neutral": -1.0,
        "Neutral": -2.0,
        "happy": -0.5,
        "Happy": -3.0,
        "angry": -4.0,
        "Angry": -4.0,
        "sad": -2.5,
        "Sad": -0.7,
    }
    (row,) = run("label-scoring", FakeModel(option_logprobs=logp), [1])
    per_label = [logsumexp([logp[x], logp[x.title()]]) for x in FOUR]
    np.testing.assert_allclose(row.p, scipy_softmax(per_label), rtol=1e-12)
    assert row.cost.model_calls == 1 and row.cost.gen_tokens == 0
    assert row.cost.prompt_tokens == fake_prompt_tokens(BOOK.ask("single", "u0").messages)  # option scoring counts
    (row,) = run("label-scoring", FakeModel(option_logprobs=logp), [1], **{"label-scoring": {"variants": ["lower"]}})
    np.testing.assert_allclose(row.p, scipy_softmax([logp[x] for x in FOUR]), rtol=1e-12)


def test_prompt_ensemble_averages_paraphrases() -> None:
    answers = {}

    def script(request, config, i):
        text = request.messages[-1].text
        answers.setdefault(text, [answer(happy=1.0), answer(sad=1.0), "??"][len(answers)])
        return answers[text], -1.0, 3

    rows = run("prompt-ensemble", FakeModel(script=script), [1, 3])
    by = {r.budget: r for r in rows}
    np.testing.assert_allclose(by[1].p, vec(happy=1.0))
    np.testing.assert_allclose(by[3].p, vec(happy=0.5, sad=0.5))  # the third did not parse
    assert len(answers) == 3 and by[3].cost.model_calls == 3 and by[1].cost.model_calls == 1
    assert len({tuple(c["label_order"]) for c in by[3].candidates}) > 1
    assert [c["prompt"] for c in by[3].candidates] == ["distribution@1", "paraphrase-1@1", "paraphrase-2@1"]


def test_baseline_and_cot_prompts_and_token_limits() -> None:
    seen = []

    def script(request, config, i):
        seen.append((request.messages[-1].text, config.max_new_tokens, config.mode))
        return answer(neutral=1.0), -1.0, 2

    (row,) = run("baseline", FakeModel(script=script), [1])
    (_cot,) = run("cot", FakeModel(script=script), [1])
    assert seen[0][1:] == (8 + 10 * 4, "greedy") and seen[1][1:] == (112 + 48, "greedy")
    assert "step by step" in seen[1][0] and "step by step" not in seen[0][0]
    np.testing.assert_allclose(row.p, vec(neutral=1.0))
    (single,) = run(
        "baseline", FakeModel(script=lambda r, c, i: ("Angry.", -1.0, 2)), [1], baseline={"prompt": "single"}
    )
    np.testing.assert_allclose(single.p, vec(angry=1.0))
    with pytest.raises(ValueError, match="no budget"):
        run("baseline", FakeModel(), [2])


def test_cost_accounting() -> None:
    from ambiemo.models.base import Candidate

    cands = [
        Candidate("a", -1.0, None, 3, {"prompt_tokens": 10, "wall_s": 0.25}),
        Candidate("b", -1.0, None, 5, {"prompt_tokens": 10, "wall_s": 0.25}),
    ]
    cost = Cost().add(cands).add(cands[:1], verifier=True)
    # one request's prompt counts once; the verifier's request is its own (interface: model and verifier apart)
    assert (cost.model_calls, cost.prompt_tokens, cost.gen_tokens, cost.wall_s) == (1, 10, 8, 0.5)
    assert (cost.verifier_calls, cost.verifier_prompt_tokens, cost.verifier_gen_tokens) == (1, 10, 3)
    assert cost.verifier_wall_s == 0.25
    unknown = Candidate("c", -1.0, None, 2, {"prompt_tokens": None})  # a route that reports neither
    later = Cost().add(cands).add([unknown])
    assert later.prompt_tokens is None and math.isnan(later.wall_s) and later.gen_tokens == 10


def test_settings_by_profile_and_ratings() -> None:
    params = {
        "run": {"profile": "paper"},
        "strategies": {
            "verifier": {"model": {"demo": "cascade-smollm2", "paper": "gpt-4o"}},
            "bon": {"budgets": {"demo": [2], "paper": [5]}},
            "cot": {"budgets": [1]},
            "max_new_tokens": {"reasoning": {"demo": 48, "paper": 256}},
        },
    }
    s = strategy_settings(params)
    assert s["verifier"]["model"] == "gpt-4o" and s["bon"]["budgets"] == [5]
    assert s["max_new_tokens"]["reasoning"] == 256 and s["max_new_tokens"]["per_label"] == 10
    assert s["verifier"]["method"] == "auto" and s["batch_size"] == 8  # defaults filled in
    with pytest.raises(KeyError, match="profile 'x'"):
        by_profile({"demo": 1}, "x", "strategies.bon.budgets")
    assert parse_rating("8") == 0.8 and parse_rating("Rating: 7/10.") == 0.7
    assert parse_rating("11") is None and parse_rating("good") is None and parse_rating("") is None


def test_verifier_strategies_need_a_verifier() -> None:
    from ambiemo.models.base import CapabilityError

    with pytest.raises(CapabilityError, match="verifier"):
        run("alm-v", FakeModel(), [3], verifier=None)


def test_w_bon_refuses_a_zero_temperature_before_any_call() -> None:
    model = FakeModel()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        run("w-bon", model, [2], **{"w-bon": {"temperature": 0}})
    assert model.requests_seen == []


def test_a_negative_number_is_no_rating() -> None:
    assert parse_rating("-3") is None and parse_rating("7/10") == 0.7


# --------------------------------------------------------------------------- compute, model and verifier apart


def test_label_scoring_charges_its_prompt_tokens_and_seconds_to_the_model() -> None:
    (row,) = run("label-scoring", FakeModel(option_logprobs={"happy": -0.1}, wall_s=0.25), [1])
    c = row.cost
    assert (c.model_calls, c.gen_tokens, c.wall_s) == (1, 0, 0.25)
    assert c.prompt_tokens == fake_prompt_tokens(BOOK.ask("single", "u0").messages)
    assert (c.verifier_calls, c.verifier_prompt_tokens, c.verifier_gen_tokens, c.verifier_wall_s) == (0, 0, 0, 0.0)


@pytest.mark.parametrize("method", ["options", "generate"])
def test_verifier_usage_is_counted_apart_from_the_model(method: str) -> None:
    # The model: one beam call of 3 candidates (0.3 s shared among them); the verifier rates each (0.5 s per request).
    model = FakeModel(script=scripted(THREE), wall_s=0.3)
    ratings = {A: "3", B: "9", C: "7"}
    verifier = FakeModel(
        ratings=ratings, option_logprobs={"Yes": -0.2, "No": -1.0}, option_scoring=method == "options", wall_s=0.5
    )
    (row,) = run("alm-v", model, [3], verifier)  # method auto: options where the verifier scores them
    task = BOOK.ask("distribution", "u0")
    c = row.cost
    assert c.model_calls == 1 and c.prompt_tokens == fake_prompt_tokens(task.messages)
    assert c.gen_tokens == 3 + 8 + 4 and c.wall_s == pytest.approx(0.3)
    asked = [BOOK.verifier(task, text, method) for text, _, _ in THREE]
    assert c.verifier_calls == 3
    assert c.verifier_prompt_tokens == sum(fake_prompt_tokens(m) for m in asked)
    assert c.verifier_wall_s == pytest.approx(3 * 0.5)
    # a rating reply's tokens are the fake's max(1, len(text) // 4): one each; option scoring generates none
    assert c.verifier_gen_tokens == (0 if method == "options" else 3)


def test_an_unknown_token_count_stays_unknown() -> None:
    from ambiemo.models.base import OptionScores

    cost = Cost().add_scoring(OptionScores(np.zeros(2), prompt_tokens=None, wall_s=0.5), verifier=True)
    cost.add_scoring(OptionScores(np.zeros(2), prompt_tokens=12, wall_s=0.25), verifier=True)
    assert cost.verifier_prompt_tokens is None and cost.verifier_wall_s == 0.75 and cost.prompt_tokens == 0
    total = cost + Cost(model_calls=1, prompt_tokens=5, gen_tokens=2, wall_s=1.0)
    assert (total.prompt_tokens, total.gen_tokens, total.model_calls, total.verifier_calls) == (5, 2, 1, 2)
    assert total.verifier_prompt_tokens is None


def test_a_candidate_strategy_is_a_selection_or_a_mixture_and_says_so_by_what_it_implements():
    from ambiemo.strategies.best_of_n import CandidateStrategy

    with pytest.raises(TypeError, match="merit .* or weights .* not both"):

        class Both(CandidateStrategy):
            def merit(self, cands, scores):
                return []

            def weights(self, cands, ok, scores):
                return []

    with pytest.raises(TypeError, match="does not set selects"):

        class Says(CandidateStrategy):
            selects = True

    class Selects(CandidateStrategy):
        def merit(self, cands, scores):
            return []

    class Mixes(CandidateStrategy):
        def weights(self, cands, ok, scores):
            return []

    class Neither(CandidateStrategy):
        name = "neither"

    assert Selects.selects and not Mixes.selects and not Neither.selects
    with pytest.raises(NotImplementedError, match="'neither' implements neither merit nor weights"):
        Neither.check(Neither.__new__(Neither))
