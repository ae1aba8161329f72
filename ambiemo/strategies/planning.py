"""What a strategy will ask for, declared on the strategy, for the planner and the run alike.

``Request`` is one kind of request a strategy sends per utterance; each strategy class returns its
own from ``Strategy.requests`` (``ambiemo.inference.plan`` counts them, nothing there knows a strategy
by name). ``max_new_tokens`` is the one token budget per prompt kind: the run asks for it
(``Context.max_new_tokens``) and the planner counts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    """What the planner knows of the model a cell runs on, for a strategy's request pattern."""

    beam_search: bool  # the route can return B beams in one request
    n_labels: int
    verifier_options: bool  # the verifier rates by option scoring (else it generates a rating)


@dataclass
class Request:
    """One kind of request a strategy sends per utterance."""

    role: str  # "model" | "verifier"
    kind: str  # "generate" | "options"
    prompt: str  # distribution | cot | single | verifier | paraphrase-<k>
    mode: str  # greedy | sample | beam | options
    n: int  # candidates returned (options: the number of options)
    per_utterance: int = 1  # how many such requests per utterance (the verifier: one per candidate)

    def signature(self) -> tuple:
        return (self.role, self.kind, self.prompt, self.mode, self.n)


def greedy(prompt: str = "distribution") -> Request:
    return Request("model", "generate", prompt, "greedy", 1)


def candidates(budgets: Sequence[int], route: Route) -> list[Request]:
    """B candidates to the distribution prompt: one beam search per width where the route has beam
    search, else the first B of one request of max(B) samples."""
    if route.beam_search:
        return [Request("model", "generate", "distribution", "beam", b) for b in budgets]
    return [Request("model", "generate", "distribution", "sample", max(budgets))]


def ratings(budgets: Sequence[int], route: Route) -> list[Request]:
    """The verifier rates every candidate once; candidates of different widths are different texts."""
    if route.verifier_options:
        return [Request("verifier", "options", "verifier", "options", 4, per_utterance=b) for b in budgets]
    return [Request("verifier", "generate", "verifier", "greedy", 1, per_utterance=b) for b in budgets]


def max_new_tokens(settings: Mapping[str, Any], prompt: str, n_labels: int) -> int:
    """The generation budget of a prompt kind: a JSON answer grows with the labels, a chain of thought
    adds its reasoning, a one-word answer and a rating are short (params ``strategies.max_new_tokens``)."""
    t = settings["max_new_tokens"]
    answer = int(t["base"]) + int(t["per_label"]) * n_labels
    if prompt == "cot":
        return int(t["reasoning"]) + answer
    if prompt == "single":
        return int(t["single"])
    if prompt == "verifier":
        return int(t["verifier"])
    return answer  # the distribution prompt and its paraphrases
