"""The model contract's shared pieces: which turn carries the clip, generation settings."""

import numpy as np
import pytest

from ambiemo.models.base import AudioRequest, Candidate, GenerationConfig, Message


def _request(*messages: Message) -> AudioRequest:
    return AudioRequest("u1", np.zeros(160, dtype=np.float32), 16_000, list(messages))


def test_audio_turn_is_the_marked_turn_else_the_first_user_turn():
    sys, u1, a, u2 = (
        Message("system", "s"),
        Message("user", "q1"),
        Message("assistant", "a"),
        Message("user", "q2", audio=True),
    )
    assert _request(sys, u1, a, u2).audio_turn() == 3
    assert _request(sys, Message("user", "q1"), a, Message("user", "q2")).audio_turn() == 1


def test_audio_turn_names_the_utterance_when_ambiguous_or_impossible():
    with pytest.raises(ValueError, match="'u1': 2 turns are marked"):
        _request(Message("user", "a", audio=True), Message("user", "b", audio=True)).audio_turn()
    with pytest.raises(ValueError, match="'u1': the conversation has no user turn"):
        _request(Message("system", "s")).audio_turn()


def test_audio_hash_changes_with_content_and_rate():
    a = _request(Message("user", "q"))
    b = AudioRequest("u1", a.waveform.copy(), 8_000, a.messages)
    c = AudioRequest("u1", a.waveform + 1e-3, 16_000, a.messages)
    assert len({a.audio_sha1(), b.audio_sha1(), c.audio_sha1()}) == 3


def test_generation_config_refuses_impossible_settings():
    with pytest.raises(ValueError, match="greedy decoding gives one candidate"):
        GenerationConfig(mode="greedy", n=2)
    with pytest.raises(ValueError, match="num_beams=2 cannot return n=3"):
        GenerationConfig(mode="beam", n=3, num_beams=2)


def test_mean_logprob_is_per_token_and_none_without_logprobs():
    assert Candidate("x", -6.0, None, 3).mean_logprob() == -2.0
    assert Candidate("x", None, None, 3).mean_logprob() is None
