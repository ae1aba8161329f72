"""The strategy contract: what a strategy sees (Utterance, Context), what it returns (Row, Cost),
what it declares (its ``Settings``, its ``requests`` for the planner), how a candidate is stored
(``record``), and the registry that names each strategy."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from ambiemo.core.errors import check_candidates
from ambiemo.core.registry import Registry
from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    CapabilityError,
    GenerationConfig,
    OptionScores,
)
from ambiemo.strategies.parsing import parse_distribution
from ambiemo.strategies.planning import Request, Route, max_new_tokens
from ambiemo.strategies.prompts import Prompt, PromptBook
from ambiemo.strategies.settings import BudgetSettings, StrategySettings


@dataclass
class Utterance:
    """What a strategy sees of one utterance."""

    utt_id: str
    waveform: np.ndarray
    sample_rate: int


def _plus(a: int | None, b: int | None) -> int | None:
    """Token counts add up; one unknown (None) makes the sum unknown."""
    return None if a is None or b is None else a + b


@dataclass
class Cost:
    """Compute behind one prediction row: the model's own (``prompt_tokens``, ``gen_tokens``,
    ``wall_s``, option scoring included) and the verifier's (``verifier_*``), kept apart.

    A token count is None where a route reports none (it stays unknown when added to); seconds
    are NaN where unknown. Everything is read from the candidates' ``meta`` and the
    ``OptionScores`` the calls returned, never from live counters, so a rerun answered by the
    cache gives the same cost.
    """

    model_calls: int = 0
    verifier_calls: int = 0
    prompt_tokens: int | None = 0
    gen_tokens: int = 0
    wall_s: float = 0.0
    verifier_prompt_tokens: int | None = 0
    verifier_gen_tokens: int = 0
    verifier_wall_s: float = 0.0

    def add(self, candidates: Sequence[Candidate], *, verifier: bool = False) -> Cost:
        """One request's candidates (or the first few of them, for a derived budget)."""
        tokens: int | None = 0
        if candidates:
            first = candidates[0].meta.get("prompt_tokens")
            tokens = None if first is None else int(first)
        gen = sum(int(c.n_tokens) for c in candidates)
        wall = sum(float(c.meta.get("wall_s", math.nan)) for c in candidates)
        return self._charge(verifier, tokens, gen, wall)

    def add_scoring(self, scores: OptionScores, *, verifier: bool = False) -> Cost:
        """One option-scoring request: its prompt tokens and seconds (no tokens are generated)."""
        return self._charge(verifier, scores.prompt_tokens, 0, float(scores.wall_s))

    def _charge(self, verifier: bool, prompt_tokens: int | None, gen_tokens: int, wall_s: float) -> Cost:
        if verifier:
            self.verifier_calls += 1
            self.verifier_prompt_tokens = _plus(self.verifier_prompt_tokens, prompt_tokens)
            self.verifier_gen_tokens += gen_tokens
            self.verifier_wall_s += wall_s
        else:
            self.model_calls += 1
            self.prompt_tokens = _plus(self.prompt_tokens, prompt_tokens)
            self.gen_tokens += gen_tokens
            self.wall_s += wall_s
        return self

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.model_calls + other.model_calls,
            self.verifier_calls + other.verifier_calls,
            _plus(self.prompt_tokens, other.prompt_tokens),
            self.gen_tokens + other.gen_tokens,
            self.wall_s + other.wall_s,
            _plus(self.verifier_prompt_tokens, other.verifier_prompt_tokens),
            self.verifier_gen_tokens + other.verifier_gen_tokens,
            self.verifier_wall_s + other.verifier_wall_s,
        )


@dataclass
class Row:
    """One predictions row before the parse-failure policy: ``p`` is None when nothing parsed."""

    strategy: str
    budget: int
    p: np.ndarray | None
    candidates: list[dict[str, Any]]
    cost: Cost


@dataclass
class Context:
    """Everything a strategy needs: the model, the labels, the prompts, its settings."""

    model: AudioLanguageModel
    labels: tuple[str, ...]
    prompts: PromptBook
    settings: dict[str, Any]  # params ``strategies``, defaults filled in (ambiemo.core.config.strategy_settings)
    verifier: AudioLanguageModel | None = None

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.settings.get(name) or {})

    def max_new_tokens(self, kind: str) -> int:
        return max_new_tokens(self.settings, kind, len(self.labels))

    def sampling(self, n: int, temperature: float | None = None) -> GenerationConfig:
        """``n`` seeded samples of the distribution prompt at params ``strategies.sampling`` (or
        ``temperature``): the first k of them are a k-sample run, whatever the batch."""
        s = self.settings["sampling"]
        return GenerationConfig(
            mode="sample",
            n=n,
            max_new_tokens=self.max_new_tokens("distribution"),
            temperature=float(s["temperature"] if temperature is None else temperature),
            top_p=float(s["top_p"]),
            seed=int(self.prompts.seed),
        )

    def generate(
        self, utts: Sequence[Utterance], prompts: Sequence[Prompt], config: GenerationConfig
    ) -> list[list[Candidate]]:
        """One request per utterance; a candidate carrying an ``error`` (a failed API request) fails its utterance."""
        model = self.model
        requests = [
            AudioRequest(u.utt_id, u.waveform, u.sample_rate, list(p.messages))
            for u, p in zip(utts, prompts, strict=True)
        ]
        out = model.generate(requests, config)
        for u, cands in zip(utts, out, strict=True):
            check_candidates(f"model {model.key!r}", u.utt_id, cands)
        return out

    def score_options(
        self, requests: Sequence[AudioRequest], options: Sequence[str], model: AudioLanguageModel | None = None
    ) -> list[OptionScores]:
        """Log-probabilities of ``options`` for every request, with what each call cost, in one call
        where the route batches them."""
        model = model or self.model
        return list(model.score_options_many(list(requests), list(options)))

    def parse(self, text: str) -> np.ndarray | None:
        return parse_distribution(text, self.labels)

    def likelihood(self, c: Candidate) -> float:
        if c.logprob is None:
            raise CapabilityError(f"model {self.model.key!r} returned a candidate without a log-probability")
        alpha = float(self.settings["likelihood"]["length_alpha"])
        return float(c.logprob) / max(int(c.n_tokens), 1) ** alpha


def record(c: Candidate, p: np.ndarray | None, prompt: Prompt, **extra: Any) -> dict[str, Any]:
    """A candidate as the strategies keep it in ``Row.candidates``; the inference stage writes these
    to the candidates table (``ambiemo.inference.candidates``), one row each."""
    out = {
        "text": c.text,
        "logprob": c.logprob,
        "n_tokens": int(c.n_tokens),
        "p": None if p is None else [float(x) for x in p],
        "verifier_score": None,
        "weight": None,
        "selected": False,
        **prompt.record(),
    }
    out.update(extra)
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    z = np.exp(x - x.max())
    return z / z.sum()


def weighted_mean(dists: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Mixture of distributions; weights are normalised here (all zero: the plain mean)."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum() if w.sum() > 0 else np.full(len(dists), 1.0 / len(dists))
    return np.einsum("i,ij->j", w, np.asarray(dists, dtype=float))


class Strategy:
    """The contract: ``run(utterances, budgets) -> rows per utterance``.

    A subclass sets the class attributes below and implements ``run`` and ``requests`` (what it
    asks per utterance, for ``ambiemo plan``); its params section is checked by ``Settings``
    (the budgets only, where it has a budget and declares none). It raises on a model error; the
    caller then retries utterance by utterance and records the failures. Figures draw a strategy
    that ``ambiemo.report.style`` does not list with a unique fallback encoding.
    """

    Settings: ClassVar[type[StrategySettings]] = StrategySettings

    name: ClassVar[str]
    summary: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()  # model capabilities: logprobs, beam_search, option_scoring
    budget_name: ClassVar[str | None] = None  # "B", "N", "K"; None: one-shot (budget 1)
    uses_verifier: ClassVar[bool] = False
    readouts: ClassVar[tuple[str, ...]] = ()  # extra row labels besides ``name``
    selection: ClassVar[str] = ""  # how the answer is chosen or combined, for provenance

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.section(self.name)

    def check(self) -> None:
        """Refuse, before any work, a model that lacks what this strategy needs."""
        for capability in self.needs:
            self.ctx.model.require(capability, self.name)
        if self.uses_verifier and self.ctx.verifier is None:
            raise CapabilityError(
                f"strategy {self.name!r} needs a verifier model: set params strategies.verifier.model"
            )

    def default_budgets(self) -> list[int]:
        if self.budget_name is None:
            return [1]
        budgets = self.cfg.get("budgets")
        if not budgets:
            raise KeyError(f"params.yaml strategies.{self.name}.budgets is empty; give a list such as [2, 3]")
        return sorted({int(b) for b in budgets})

    def check_budgets(self, budgets: Sequence[int]) -> None:
        """Refuse budgets this strategy cannot run, before any work."""
        if self.budget_name is None and list(budgets) != [1]:
            raise ValueError(f"strategy {self.name!r} has no budget; got budgets {list(budgets)} (use 1)")
        if any(int(b) < 1 for b in budgets):
            raise ValueError(f"strategy {self.name!r}: budgets must be >= 1, got {list(budgets)}")

    def row_labels(self) -> tuple[str, ...]:
        return (self.name, *self.readouts)

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.cfg,
            "candidate_source": self.candidate_source(),
            "selection": self.selection,
        }

    def candidate_source(self) -> str:
        return "greedy"

    def run(self, utts: Sequence[Utterance], budgets: Sequence[int]) -> list[list[Row]]:
        raise NotImplementedError

    @classmethod
    def requests(cls, settings: dict[str, Any], budgets: Sequence[int], route: Route) -> list[Request]:
        """The requests this strategy sends per utterance at ``budgets`` on ``route``, given its own
        params section ``settings`` (defaults filled in)."""
        raise NotImplementedError

    @classmethod
    def settings_model(cls) -> type[StrategySettings]:
        """``Settings``; a strategy with a budget that declares none gets the budgets alone."""
        if cls.Settings is StrategySettings and cls.budget_name is not None:
            return BudgetSettings
        return cls.Settings


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")

S = TypeVar("S", bound=type[Strategy])


def register_strategy(name: str) -> Callable[[S], S]:
    """``@register_strategy("bon")``: registers the class under ``name`` and sets ``cls.name`` (written once)."""

    def decorator(cls: S) -> S:
        if cls.requests.__func__ is Strategy.requests.__func__:
            raise TypeError(f"strategy {cls.__name__} ({name!r}) must implement the classmethod requests")
        cls.name = name
        return STRATEGIES.register(name)(cls)

    return decorator


def check_one_shot(name: str, budgets: Sequence[int]) -> None:
    if list(budgets) != [1]:
        raise ValueError(f"strategy {name!r} has no budget; got budgets {list(budgets)} (use 1)")
