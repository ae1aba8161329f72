"""Reading answers as distributions: the cases a model really produces, adversarial ones, and
generated text that must never make the parser raise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambiemo.strategies.parsing import apply_failure_policy, label_lookup, parse_distribution, parse_number

FOUR = ("neutral", "happy", "angry", "sad")
SIX = ("angry", "disgust", "fear", "happy", "neutral", "sad")


def dist(**kw: float) -> np.ndarray:
    """A distribution over FOUR from keyword shares, normalised by hand-given totals."""
    return np.array([kw.get(x, 0.0) for x in FOUR])


CASES = [
    # well-formed JSON, in the label set's order and out of it
    ('{"neutral": 0.1, "happy": 0.2, "angry": 0.3, "sad": 0.4}', dist(neutral=0.1, happy=0.2, angry=0.3, sad=0.4)),
    ('{"sad": 0.4, "angry": 0.3, "happy": 0.2, "neutral": 0.1}', dist(neutral=0.1, happy=0.2, angry=0.3, sad=0.4)),
    # Python dict, other case, synonyms and inflections
    ("{'Neutral': 0.5, 'Happiness': 0.25, 'ANGER': 0.25}", dist(neutral=0.5, happy=0.25, angry=0.25)),
    ('{"calm": 0.5, "joy": 0.3, "mad": 0.1, "sadness": 0.1}', dist(neutral=0.5, happy=0.3, angry=0.1, sad=0.1)),
    # unquoted keys, quoted values, trailing comma
    ('{neutral: "0.6", sad: "0.4",}', dist(neutral=0.6, sad=0.4)),
    # sums to 0.9 -> renormalised; sums to 100 -> renormalised
    ('{"happy": 0.6, "sad": 0.3}', dist(happy=2 / 3, sad=1 / 3)),
    ('{"neutral": 10, "happy": 20, "angry": 30, "sad": 40}', dist(neutral=0.1, happy=0.2, angry=0.3, sad=0.4)),
    # percentages, and number words
    ('{"happy": "60%", "sad": "40 percent"}', dist(happy=0.6, sad=0.4)),
    ('{"happy": "twenty-five", "sad": "seventy five"}', dist(happy=0.25, sad=0.75)),
    ('{"happy": "half", "neutral": "a quarter", "sad": "a quarter"}', dist(happy=0.5, neutral=0.25, sad=0.25)),
    # two objects: the last well-formed one wins
    ('First guess {"happy": 1.0}. On reflection: {"sad": 0.5, "neutral": 0.5}', dist(sad=0.5, neutral=0.5)),
    ('{"sad": 0.5, "neutral": 0.5} and then a broken one {"happy": 0,5}', dist(sad=0.5, neutral=0.5)),
    # prose around the answer, a markdown code fence
    (
        'Sure! Here is my estimate:\n```json\n{"angry": 0.7, "sad": 0.3}\n```\nHope this helps.',
        dist(angry=0.7, sad=0.3),
    ),
    # a chain of thought that names several labels before its final answer
    (
        (
            "The voice is loud, which could mean angry or happy; the words are sad, though, and the pitch is flat, "
            'more neutral. Final answer: {"neutral": 0.2, "happy": 0.1, "angry": 0.3, "sad": 0.4}'
        ),
        dist(neutral=0.2, happy=0.1, angry=0.3, sad=0.4),
    ),
    ("I hear happy: 0.9 at first. But overall:\n- **Sad**: 70%\n- **Neutral**: 30%", dist(sad=0.7, neutral=0.3)),
    # nested object
    ('{"emotions": {"happy": 0.7, "sad": 0.3}, "reasoning": "rising pitch"}', dist(happy=0.7, sad=0.3)),
    # a label: value list, numbered list, "and"
    ("happy: 0.6, sad: 0.4", dist(happy=0.6, sad=0.4)),
    ("1. neutral = 0.5\n2. angry = 0.5", dist(neutral=0.5, angry=0.5)),
    ("happy: .5 and sad: .5", dist(happy=0.5, sad=0.5)),
    # labels outside the set are left out, the rest renormalised (conditioning on the set)
    ('{"happy": 0.3, "surprise": 0.4, "sad": 0.3}', dist(happy=0.5, sad=0.5)),
    # bare labels and explicit answers read as one-hot
    ("Sad.", dist(sad=1.0)),
    ("  **Happy**  ", dist(happy=1.0)),
    ('"anger"', dist(angry=1.0)),
    ("It might be angry, or neutral. Final answer: sad", dist(sad=1.0)),
    ('{"emotion": "sad", "confidence": 0.9}', dist(sad=1.0)),
    ("The emotion is happy.", dist(happy=1.0)),
]


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0][:40] for c in CASES])
def test_reads_answers(text: str, expected: np.ndarray) -> None:
    got = parse_distribution(text, FOUR)
    assert got is not None, text
    np.testing.assert_allclose(got, expected, atol=1e-12)


FAILURES = [
    "",
    "   \n ",
    "I am not sure what emotion this is.",
    "The speaker could be angry or sad.",  # prose only: not a guess
    "Emotion: angry or sad",  # an answer key followed by two labels
    "The emotion is angry or sad.",
    "The emotion is not sad.",
    "The speaker expresses sadness, which is neutral.",  # two labels in prose
    '{"happy": 0.5, "joy": 0.5}',  # one label named twice through a synonym
    '{"happy": 0.5, "happy": 0.5}',  # one label named twice
    '{"happy": -0.1, "sad": 1.1}',  # negative value
    '{"happy": 0, "sad": 0}',  # sums to zero
    '{"happy": 0,5, "sad": 0,5}',  # decimal commas: ambiguous
    '{"happy": "high", "sad": "low"}',  # values that are not numbers
    '{"happy": 0.6, "sad": "40%"}',  # percentages mixed with plain numbers: which scale?
    '{"surprise": 0.7, "contempt": 0.3}',  # nothing in the label set
    '{"happy": 0.5, "sad": ',  # truncated by max_new_tokens
    '{"neutral": <probability>, "happy": <probability>}',  # the schema copied back
    "happy sad",
    '{"happy": nan, "sad": 0.5}',
]


@pytest.mark.parametrize("text", FAILURES)
def test_refuses_to_guess(text: str) -> None:
    assert parse_distribution(text, FOUR) is None


def test_synonyms_respect_the_label_set() -> None:
    # "calm" is a synonym of neutral in a set without calm, but its own label where the set has it (RAVDESS)
    np.testing.assert_allclose(parse_distribution('{"calm": 1}', FOUR), [1, 0, 0, 0])
    ravdess = ("neutral", "calm", "happy")
    np.testing.assert_allclose(parse_distribution('{"calm": 0.5, "neutral": 0.5}', ravdess), [0.5, 0.5, 0])
    # six labels: fear/fearful/scared and disgust/disgusted
    np.testing.assert_allclose(parse_distribution('{"scared": 0.5, "disgusted": 0.5}', SIX), [0, 0.5, 0.5, 0, 0, 0])
    assert "fearful" in label_lookup(SIX) and "fearful" not in label_lookup(FOUR)


def test_parse_number() -> None:
    assert parse_number("0.25") == 0.25
    assert parse_number("25%") == 0.25
    assert parse_number("25 per cent") == 0.25
    assert parse_number("ninety-nine") == 99
    assert parse_number("1e-2") == 0.01
    assert parse_number("a lot") is None


def test_failure_policy() -> None:
    p, ok = apply_failure_policy(None, 4, "uniform")
    assert not ok and np.allclose(p, 0.25)
    p, ok = apply_failure_policy(None, 3, "nan")
    assert not ok and np.isnan(p).all() and p.shape == (3,)
    p, ok = apply_failure_policy(np.array([0.2, 0.8]), 2, "uniform")
    assert ok and np.allclose(p, [0.2, 0.8])
    with pytest.raises(ValueError, match="parsing.on_failure"):
        apply_failure_policy(None, 4, "random")


# --------------------------------------------------------------------------- properties


def _check_valid(p: np.ndarray | None, n: int) -> None:
    if p is not None:
        assert p.shape == (n,)
        assert np.isfinite(p).all() and (p >= 0).all()
        assert abs(p.sum() - 1.0) < 1e-9


answer_like = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "{",
                "}",
                ":",
                ",",
                '"',
                "'",
                "%",
                "\n",
                " ",
                "=",
                "-",
                "**",
                "Answer:",
                "emotion:",
                "neutral",
                "Happy",
                "anger",
                "sadness",
                "joy",
                "calm",
                "surprise",
                "half",
                "twenty",
                "0.5",
                "1e309",
                "-1",
                "100",
                ".",
                "nan",
                "inf",
                "0,5",
            ]
        ),
        st.text(max_size=8),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), answer_like))
def test_never_raises_and_returns_a_distribution(text: str) -> None:
    _check_valid(parse_distribution(text, FOUR), 4)
    _check_valid(parse_distribution(text, SIX), 6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 1000), min_size=4, max_size=4).filter(lambda v: sum(v) > 0),
    st.permutations(FOUR),
    st.sampled_from(["json", "python", "list", "percent"]),
    st.text(alphabet="abcdefgh .,!\n", max_size=40),
)
def test_round_trip(values: list[int], order: list[str], style: str, prose: str) -> None:
    """A distribution written in any supported style, with prose before it, reads back exactly."""
    p = np.array(values, dtype=float) / sum(values)
    by_label = {x: float(v) for x, v in zip(FOUR, p, strict=True)}
    if style == "json":
        answer = json.dumps({x: by_label[x] for x in order})
    elif style == "python":
        answer = repr({x: by_label[x] for x in order})
    elif style == "list":
        answer = "\n".join(f"{x}: {by_label[x]!r}" for x in order)
    else:
        answer = ", ".join(f"{x.title()}: {100 * by_label[x]!r}%" for x in order)
    got = parse_distribution(prose + " " + answer, FOUR)
    assert got is not None, answer
    np.testing.assert_allclose(got, p, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "text",
    ["{" * 20000 + "}" * 20000, "{" * 40000, "happy: 0.1, " * 5000, "emotion is " * 10000, ("1" * 50 + ".") * 2000],
)
def test_long_adversarial_text_is_fast(text: str) -> None:
    import time

    start = time.perf_counter()
    parse_distribution(text, FOUR)
    assert time.perf_counter() - start < 2.0, "parsing must stay linear in the text length"


# Found in review: comments between list pairs, a restated top label, commas inside JSON strings.
@pytest.mark.parametrize(
    "text,expected",
    [
        ("happy: 0.6 (mostly), sad: 0.4", [0, 0.6, 0, 0.4]),
        ("Happy: 0.6 (60%)\nSad: 0.4 (40%)", [0, 0.6, 0, 0.4]),
        ("happy: 0.6 - upbeat tone\nsad: 0.4 - low pitch", [0, 0.6, 0, 0.4]),
        ('{"neutral": 0.1, "happy": 0.6, "angry": 0, "sad": 0.3}\nThe predicted emotion is happy.', [0.1, 0.6, 0, 0.3]),
        ("Happy: 60%\nSad: 40%\n\nFinal answer: happy", [0, 0.6, 0, 0.4]),
        ('{"reasoning": "high pitch, fast rate", "happy": 0.7, "sad": 0.3}', [0, 0.7, 0, 0.3]),
        # a final label that is not the distribution's top is a different answer: the last one wins
        ('{"happy": 0.6, "sad": 0.4}\nThe emotion is sad.', [0, 0, 0, 1]),
    ],
)
def test_reads_through_comments_and_restatements(text: str, expected: list[float]) -> None:
    np.testing.assert_allclose(parse_distribution(text, FOUR), expected)


def test_fractions_are_not_read_as_their_numerators() -> None:
    assert parse_distribution("Happy: 1/2, Sad: 1/2", FOUR) is None
