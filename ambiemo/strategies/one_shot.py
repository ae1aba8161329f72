"""One-shot strategies: one greedy answer per utterance (baseline, chain of thought)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from ambiemo.models.base import GenerationConfig
from ambiemo.strategies.base import Cost, Row, Strategy, Utterance, check_one_shot, record, register_strategy
from ambiemo.strategies.planning import Request, Route, greedy
from ambiemo.strategies.settings import StrategySettings


class BaselineSettings(StrategySettings):
    prompt: Literal["distribution", "single"] = "distribution"  # single: one label word, one-hot


class _OneGreedy(Strategy):
    prompt_kind: ClassVar[str] = "distribution"
    selection = "the single greedy answer"

    @classmethod
    def requests(cls, settings: dict[str, Any], budgets: Sequence[int], route: Route) -> list[Request]:
        return [greedy(settings.get("prompt", cls.prompt_kind))]

    def run(self, utts: Sequence[Utterance], budgets: Sequence[int]) -> list[list[Row]]:
        check_one_shot(self.name, budgets)
        kind = self.cfg.get("prompt", self.prompt_kind)
        prompts = [self.ctx.prompts.ask(kind, u.utt_id) for u in utts]
        config = GenerationConfig(
            mode="greedy",
            n=1,
            max_new_tokens=self.ctx.max_new_tokens("single" if kind == "single" else self.prompt_kind),
        )
        rows = []
        for prompt, cands in zip(prompts, self.ctx.generate(utts, prompts, config), strict=True):
            p = self.ctx.parse(cands[0].text)
            rows.append(
                [Row(self.name, 1, p, [record(cands[0], p, prompt, selected=p is not None)], Cost().add(cands))]
            )
        return rows


@register_strategy("baseline")
class Baseline(_OneGreedy):
    summary = "one greedy answer to the distribution prompt (params: prompt distribution|single)"
    Settings = BaselineSettings


@register_strategy("cot")
class ChainOfThought(_OneGreedy):
    summary = "reason first, then the JSON distribution; one greedy answer"
    prompt_kind = "cot"
