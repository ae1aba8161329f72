"""Prompts: the labels they list, in which order, and that the order is reproducible and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ambiemo.strategies.parsing import parse_distribution
from ambiemo.strategies.prompts import PARAPHRASES, PROMPT_VERSION, PromptBook

FOUR = ("neutral", "happy", "angry", "sad")


def user_text(prompt) -> str:
    (turn,) = [m for m in prompt.messages if m.role == "user"]
    assert turn.audio, "the user turn carries the audio"
    return turn.text


def test_distribution_prompt_lists_labels_in_the_recorded_order() -> None:
    book = PromptBook(FOUR, seed=7, label_order="seeded")
    prompt = book.ask("distribution", "utt1")
    text = user_text(prompt)
    assert sorted(prompt.label_order) == sorted(FOUR)
    positions = [text.index(f'"{x}"') for x in prompt.label_order]
    assert positions == sorted(positions), "the JSON schema follows the recorded order"
    assert prompt.id == f"distribution@{PROMPT_VERSION}"
    assert prompt.messages[0].role == "system"
    # the schema we show is not itself an answer (a model that copies it back fails to parse)
    assert parse_distribution(text[text.index("{") :], FOUR) is None


def test_label_orders() -> None:
    canonical = PromptBook(FOUR, seed=7, label_order="canonical")
    assert canonical.label_order("a") == FOUR
    seeded = PromptBook(FOUR, seed=20260203, label_order="seeded")
    assert seeded.label_order("a") == seeded.label_order("b") == ("sad", "neutral", "angry", "happy")
    assert seeded.label_order("a") == PromptBook(FOUR, seed=20260203).label_order("zzz"), "reproducible"
    per = PromptBook(FOUR, seed=20260203, label_order="per-utterance")
    orders = {per.label_order(f"u{i}") for i in range(40)}
    assert len(orders) > 5, "per-utterance orders vary"
    assert per.label_order("u1") == PromptBook(FOUR, seed=20260203, label_order="per-utterance").label_order("u1")
    assert per.describe()["order"] is None and seeded.describe()["order"] == ["sad", "neutral", "angry", "happy"]
    with pytest.raises(ValueError, match="prompts.label_order"):
        PromptBook(FOUR, seed=1, label_order="alphabetical")


def test_paraphrases() -> None:
    book = PromptBook(FOUR, seed=3, label_order="canonical")
    # paraphrase 0 is the distribution prompt itself, so an ensemble of one equals the baseline
    assert book.paraphrase(0, "u").messages == book.ask("distribution", "u").messages
    texts = {user_text(book.paraphrase(k, "u")) for k in range(len(PARAPHRASES))}
    assert len(texts) == len(PARAPHRASES)
    orders = {book.paraphrase(k, "u").label_order for k in range(len(PARAPHRASES))}
    assert len(orders) > 1, "paraphrases permute the label order"
    with pytest.raises(ValueError, match="prompt-ensemble"):
        book.paraphrase(len(PARAPHRASES), "u")


def test_variants_and_verifier() -> None:
    book = PromptBook(FOUR, seed=3, system=False)
    single, cot = book.ask("single", "u"), book.ask("cot", "u")
    assert len(single.messages) == 1 and "one word" in user_text(single)
    assert "step by step" in user_text(cot) and "JSON" in user_text(cot)
    answer = json.dumps({"happy": 1.0})
    conv = book.verifier(single, answer)
    assert [m.role for m in conv] == ["user", "assistant", "user"]
    assert conv[1].text == answer and conv[0].audio and not conv[2].audio
    assert "0 (completely wrong) to 10" in conv[2].text
    assert "Answer Yes or No" in book.verifier(single, answer, "options")[2].text
    with pytest.raises(KeyError, match="unknown prompt kind"):
        book.ask("poem", "u")


def test_from_params_and_fingerprint() -> None:
    book = PromptBook.from_params({"seed": 5, "prompts": {"label_order": "canonical", "system": False}}, FOUR)
    assert book.label_order("x") == FOUR and not book.system
    d = book.describe()
    assert d["version"] == PROMPT_VERSION and len(d["sha1"]) == 40
    np.testing.assert_equal(d["order"], list(FOUR))
