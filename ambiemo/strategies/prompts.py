"""The prompts: every text a model is asked, in one place, versioned.

The main prompt asks for a probability *distribution* over the label set as a JSON object, as
in the authors' earlier work (AER-LLM), because the study compares it with the distribution of
the annotators' votes. Variants: a single-label answer (used by ``label-scoring`` and optionally
by ``baseline``), a chain of thought before the JSON (``cot``), ``PARAPHRASES`` of the main prompt
(``prompt-ensemble``; paraphrase 0 *is* the main prompt, so an ensemble of one equals the
baseline), and the verifier's question (``alm-v``, ``w-alm-v``).

Label order is a known bias of multiple-choice prompts, so it is a setting (params
``prompts.label_order``) and every answer records the order it was asked in:

    canonical      the label set's own order
    seeded         one permutation of the label set drawn from the seed, the same for all utterances
    per-utterance  a permutation per utterance, drawn from (seed, utt_id)

Paraphrase k > 0 of the ensemble always uses its own permutation (drawn from (seed, k) and, with
``per-utterance``, the utterance), since varying the order is part of what the ensemble is for.

Changing any text here changes the conversation and therefore every cache key: bump
``PROMPT_VERSION`` so that outputs record which wording produced them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ambiemo.models.base import Message

PROMPT_VERSION = "1"
LABEL_ORDERS = ("canonical", "seeded", "per-utterance")

SYSTEM = "You are an expert in how people perceive emotion in speech."

# {labels}: "neutral, happy, angry or sad"; {schema}: {"neutral": <probability>, ...} in the asked order.
# The wording was checked on the demo's 135M-parameter cascade LLM, the most fragile reader: asking
# for "one line of JSON and nothing else, in this form" stopped it from wrapping the object in
# prose and a code fence that the token limit then cut off.
_ANSWER_FORM = "Answer with one line of JSON and nothing else, in this form: {schema}"
DISTRIBUTION = (
    "Listeners often disagree about the emotion they hear. Estimate the probability, summing to 1, that a "
    "listener perceives each of these emotions: {labels}. " + _ANSWER_FORM
)
SINGLE = "Which emotion does the speaker express: {labels}? Answer with one word."
COT = (
    "Listeners often disagree about the emotion they hear. Think step by step: in two or three sentences, say "
    "what the words and the voice (tone, pitch, energy) suggest about these emotions: {labels}. Then, on a new "
    "line, give the probability of each emotion, summing to 1, as one line of JSON in this form: {schema}"
)
PARAPHRASES: tuple[str, ...] = (
    DISTRIBUTION,
    (
        "How likely is each of these emotions to be heard in this recording: {labels}? Give probabilities that add "
        "up to 1. " + _ANSWER_FORM
    ),
    (
        "Imagine that many people listened to this clip and each named the emotion they perceived, choosing from "
        "{labels}. What share of them would choose each emotion? Give the shares as probabilities summing to 1. "
        + _ANSWER_FORM
    ),
    "Describe the emotional content of this utterance as a probability distribution over {labels}. " + _ANSWER_FORM,
    "You hear a speaker. Give the probability of each emotion among {labels}, summing to 1. " + _ANSWER_FORM,
)
# The verifier's question depends on how its answer is read (params strategies.verifier.method):
# ``generate`` reads a 0-10 rating from its reply; ``options`` reads p(Yes) / (p(Yes) + p(No)) from
# two option scores, one forward pass per option, where eleven ratings would cost eleven.
VERIFIER_RATING = (
    "Judge the answer above. How well does it describe the emotions that listeners would perceive in this "
    "speech? Reply with one whole number from 0 (completely wrong) to 10 (perfect), and nothing else."
)
VERIFIER_YES_NO = (
    "Judge the answer above. Does it describe well the emotions that listeners would perceive in this speech? "
    "Answer Yes or No."
)
VERIFIER_YES = ("Yes", "yes")
VERIFIER_NO = ("No", "no")

TEMPLATES = {"distribution": DISTRIBUTION, "single": SINGLE, "cot": COT}


@dataclass(frozen=True)
class Prompt:
    """One asked question: the conversation and what identifies it in the outputs."""

    id: str  # "distribution@1", "paraphrase-2@1", ...
    messages: tuple[Message, ...]
    label_order: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """What each candidate stores about the prompt it answers."""
        return {"prompt": self.id, "label_order": list(self.label_order)}


def _join(labels: Sequence[str]) -> str:
    return ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]


def _schema(labels: Sequence[str]) -> str:
    return "{" + ", ".join(f'"{x}": <probability>' for x in labels) + "}"


def _stable_int(text: str) -> int:
    """A seed component from a string that does not change between processes (unlike hash())."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


class PromptBook:
    """Builds the conversations for one label set, seed and label-order setting."""

    def __init__(self, labels: Sequence[str], *, seed: int, label_order: str = "seeded", system: bool = True) -> None:
        if label_order not in LABEL_ORDERS:
            raise ValueError(f"params prompts.label_order must be one of {LABEL_ORDERS}, got {label_order!r}")
        if len(labels) < 2:
            raise ValueError(f"a prompt needs at least two labels, got {list(labels)}")
        self.labels = tuple(labels)
        self.seed = int(seed)
        self.mode = label_order
        self.system = system

    @classmethod
    def from_params(cls, params: dict[str, Any], labels: Sequence[str]) -> PromptBook:
        cfg = params.get("prompts") or {}
        return cls(
            labels,
            seed=int(params.get("seed", 0)),
            label_order=cfg.get("label_order", "seeded"),
            system=bool(cfg.get("system", True)),
        )

    def label_order(self, utt_id: str, k: int = 0) -> tuple[str, ...]:
        """The order in which the labels are listed for utterance ``utt_id`` in prompt variant ``k``."""
        if self.mode == "canonical" and k == 0:
            return self.labels
        key = [self.seed, k]
        if self.mode == "per-utterance":
            key.append(_stable_int(utt_id))
        perm = np.random.default_rng(key).permutation(len(self.labels))
        return tuple(self.labels[i] for i in perm)

    def _build(self, template: str, prompt_id: str, order: tuple[str, ...]) -> Prompt:
        text = template.format(labels=_join(order), schema=_schema(order))
        messages = [Message("system", SYSTEM)] if self.system else []
        messages.append(Message("user", text, audio=True))
        return Prompt(f"{prompt_id}@{PROMPT_VERSION}", tuple(messages), order)

    def ask(self, kind: str, utt_id: str) -> Prompt:
        """The ``distribution``, ``single`` or ``cot`` prompt for one utterance."""
        if kind not in TEMPLATES:
            raise KeyError(f"unknown prompt kind {kind!r}; known: {', '.join(TEMPLATES)}")
        return self._build(TEMPLATES[kind], kind, self.label_order(utt_id))

    def paraphrase(self, k: int, utt_id: str) -> Prompt:
        """Paraphrase ``k`` of the distribution prompt (0 is the distribution prompt itself)."""
        if not 0 <= k < len(PARAPHRASES):
            raise ValueError(
                f"prompt-ensemble has {len(PARAPHRASES)} paraphrases; asked for number {k} "
                f"(lower params strategies.prompt-ensemble.budgets to at most {len(PARAPHRASES)})"
            )
        return self._build(PARAPHRASES[k], f"paraphrase-{k}" if k else "distribution", self.label_order(utt_id, k))

    @staticmethod
    def verifier(task: Prompt, answer: str, method: str = "generate") -> list[Message]:
        """The verifier's conversation: the task as the model heard it, the candidate answer as the
        assistant's turn, then the question (a 0-10 rating for ``generate``, yes/no for ``options``)."""
        question = VERIFIER_YES_NO if method == "options" else VERIFIER_RATING
        return [*task.messages, Message("assistant", answer), Message("user", question)]

    def describe(self) -> dict[str, Any]:
        """For provenance: the version, the order setting, and the texts' fingerprint."""
        texts = {
            "system": SYSTEM,
            **TEMPLATES,
            "paraphrases": list(PARAPHRASES),
            "verifier": [VERIFIER_RATING, VERIFIER_YES_NO],
        }
        return {
            "version": PROMPT_VERSION,
            "label_order": self.mode,
            "order": list(self.label_order("")) if self.mode != "per-utterance" else None,
            "system": self.system,
            "sha1": hashlib.sha1(json.dumps(texts, sort_keys=True).encode()).hexdigest(),
        }
