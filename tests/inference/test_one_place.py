"""One place per fact: one secret scrubber, one failed-candidate check raising one exception type wherever a
failed request is met (the run's guard, a strategy's generation, a verifier's rating), one model-wrapper base."""

from __future__ import annotations

import numpy as np
import pytest

from ambiemo.core import secrets
from ambiemo.core.errors import ModelCallError, check_candidates
from ambiemo.inference.cache import CachedModel, GenerationCache
from ambiemo.inference.run.guard import Guarded
from ambiemo.inference.wrapper import ModelWrapper
from ambiemo.models.base import AudioLanguageModel, AudioRequest, Candidate, GenerationConfig, Message

GREEDY = GenerationConfig(mode="greedy", n=1, max_new_tokens=4)


class FailsOn(AudioLanguageModel):
    """Answers every request but ``bad``'s, whose candidate records a failed request (as an API route does)."""

    def __init__(self, bad: str) -> None:
        super().__init__("flaky", "fake/flaky", "r1")
        self.bad = bad
        self.special = "adapter-specific"

    def generate(self, requests, config):
        return [
            [Candidate("", None, None, 0, {"error": "HTTP 503 (gave up after 3 attempts)"})]
            if r.utt_id == self.bad
            else [Candidate('{"happy": 1}', -0.1, [-0.1], 1, {})]
            for r in requests
        ]


def requests() -> list[AudioRequest]:
    wav = np.zeros(160, np.float32)
    return [AudioRequest(u, wav, 16000, [Message("user", "Emotion?", audio=True)]) for u in ("a", "b")]


def test_one_scrubber_is_imported_wherever_secrets_are_scrubbed(monkeypatch):
    from ambiemo.inference import run
    from ambiemo.models.api import faults

    assert faults.scrub is secrets.scrub and run.redact_secrets is secrets.redact_secrets
    monkeypatch.setenv("SERVICE_API_KEY", "sk-0123456789abcdef")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to be a secret: ordinary words stay
    text = "rejected sk-0123456789abcdef for abc"
    assert secrets.redact_secrets(text) == "rejected *** for abc"
    assert secrets.scrub("rejected key-xyz for Bob", [None, "", "Bob"]) == "rejected key-xyz for ***"


def test_the_failed_candidate_check_raises_model_call_error_naming_the_utterance():
    good = [Candidate("x", -1.0, [-1.0], 1, {})]
    check_candidates("model 'm'", "u1", good)  # nothing to say
    with pytest.raises(ModelCallError) as err:
        check_candidates("verifier 'v'", "u2", [*good, Candidate("", None, None, 0, {"error": "HTTP 500"})])
    assert err.value.utt_id == "u2" and str(err.value) == "verifier 'v' failed on utterance 'u2': HTTP 500"


def test_the_guard_and_a_strategy_meet_a_failed_request_with_the_same_exception(tmp_path):
    from ambiemo.strategies import STRATEGIES, Context, Utterance, strategy_settings
    from ambiemo.strategies.prompts import PromptBook

    model = FailsOn("b")
    with pytest.raises(ModelCallError, match="model 'flaky' failed on utterance 'b': HTTP 503") as guarded:
        Guarded(model).generate(requests(), GREEDY)
    labels = ("neutral", "happy")
    strat = STRATEGIES.get("baseline")(
        Context(model, labels, PromptBook.from_params({}, labels), strategy_settings({}), None)
    )
    utts = [Utterance(r.utt_id, r.waveform, r.sample_rate) for r in requests()]
    with pytest.raises(ModelCallError) as direct:
        strat.run(utts, [1])
    assert direct.value.utt_id == guarded.value.utt_id == "b"


def test_the_cache_wrapper_and_the_guard_share_one_wrapper_base(tmp_path):
    model = FailsOn("none")
    cached = CachedModel(model, GenerationCache(tmp_path / "cache"))
    for wrapper in (cached, Guarded(model), Guarded(cached)):
        assert isinstance(wrapper, ModelWrapper)
        assert wrapper.key == "flaky" and wrapper.identity == model.identity and wrapper.usage is model.usage
        assert wrapper.special == "adapter-specific"  # adapter attributes read through
    assert [c[0].text for c in Guarded(cached).generate(requests(), GREEDY)] == ['{"happy": 1}'] * 2
