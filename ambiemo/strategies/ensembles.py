"""Sampling and ensemble strategies: N samples (self-consistency), label scoring, K paraphrased prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from ambiemo.core.params import PerProfile
from ambiemo.models.base import AudioRequest, GenerationConfig
from ambiemo.strategies.base import Cost, Row, Strategy, check_one_shot, record, register_strategy, softmax
from ambiemo.strategies.planning import Request, Route, greedy
from ambiemo.strategies.prompts import PARAPHRASES
from ambiemo.strategies.settings import BudgetSettings, StrategySettings


class SelfConsistencySettings(BudgetSettings):
    temperature: Annotated[float, Field(ge=0)] | None = None  # None: strategies.sampling.temperature


class LabelScoringSettings(StrategySettings):
    variants: Annotated[list[Literal["lower", "title", "upper", "as-is"]], Field(min_length=1)] = ["lower", "title"]


class PromptEnsembleSettings(BudgetSettings):
    budgets: (
        PerProfile[Annotated[list[Annotated[int, Field(ge=1, le=len(PARAPHRASES))]], Field(min_length=1)]] | None
    ) = None


def label_votes(dists: Sequence[np.ndarray]) -> np.ndarray:
    """Histogram of the answers' labels: each answer's argmax gets one vote, split equally on a tie."""
    votes = np.zeros(len(dists[0]))
    for p in dists:
        top = np.flatnonzero(np.isclose(p, p.max()))
        votes[top] += 1.0 / len(top)
    return votes / votes.sum()


@register_strategy("self-consistency")
class SelfConsistency(Strategy):
    summary = "N samples at temperature T; mean of their distributions (+ readout -vote: label histogram)"
    budget_name = "N"
    readouts = ("self-consistency-vote",)
    selection = "mean of parsed distributions; -vote: histogram of their argmax labels"
    Settings = SelfConsistencySettings

    @classmethod
    def requests(cls, settings: dict[str, Any], budgets: Sequence[int], route: Route) -> list[Request]:
        return [Request("model", "generate", "distribution", "sample", max(budgets))]

    def candidate_source(self) -> str:
        return "sampled"

    def run(self, utts, budgets):
        ctx = self.ctx
        prompts = [ctx.prompts.ask("distribution", u.utt_id) for u in utts]
        config = ctx.sampling(max(budgets), self.cfg.get("temperature"))
        rows = []
        for prompt, all_cands in zip(prompts, ctx.generate(utts, prompts, config), strict=True):
            all_dists = [ctx.parse(c.text) for c in all_cands]
            out = []
            for n in budgets:  # the first n of the samples are an n-sample run
                cands, dists = all_cands[:n], all_dists[:n]
                parsed = [p for p in dists if p is not None]
                recs = [record(c, p, prompt, selected=p is not None) for c, p in zip(cands, dists, strict=True)]
                mean = np.mean(parsed, axis=0) if parsed else None
                votes = label_votes(parsed) if parsed else None
                out.append(Row(self.name, n, mean, recs, Cost().add(cands)))
                out.append(Row(self.readouts[0], n, votes, recs, Cost().add(cands)))
            rows.append(out)
        return rows


@register_strategy("label-scoring")
class LabelScoring(Strategy):
    summary = "p(label word) as the answer to the single-label prompt; one forward pass, no generation"
    needs = ("option_scoring",)
    selection = "softmax over labels of log p(label word), case variants summed"
    Settings = LabelScoringSettings

    @classmethod
    def requests(cls, settings: dict[str, Any], budgets: Sequence[int], route: Route) -> list[Request]:
        return [Request("model", "options", "single", "options", 2 * route.n_labels)]

    def candidate_source(self) -> str:
        return "options"

    def check(self) -> None:
        super().check()
        self.variants(self.ctx.labels[0])  # an unknown variant name fails now, not per utterance

    def variants(self, label: str) -> list[str]:
        forms = {"lower": label.lower(), "title": label.title(), "upper": label.upper(), "as-is": label}
        names = self.cfg["variants"]
        unknown = [v for v in names if v not in forms]
        if unknown:
            raise ValueError(f"params strategies.label-scoring.variants: unknown {unknown}; known: {list(forms)}")
        return list(dict.fromkeys(forms[v] for v in names))

    def run(self, utts, budgets):
        check_one_shot(self.name, budgets)
        ctx = self.ctx
        options, owner = [], []
        for j, label in enumerate(ctx.labels):
            for form in self.variants(label):
                options.append(form)
                owner.append(j)
        owner_arr = np.array(owner)
        prompts = [ctx.prompts.ask("single", u.utt_id) for u in utts]
        requests = [
            AudioRequest(u.utt_id, u.waveform, u.sample_rate, list(prompt.messages))
            for u, prompt in zip(utts, prompts, strict=True)
        ]
        rows = []
        for u, prompt, scored in zip(utts, prompts, ctx.score_options(requests, options), strict=True):
            logp = scored.logprobs
            if not np.isfinite(logp).all():
                raise RuntimeError(f"model {ctx.model.key!r} could not score the labels of {u.utt_id!r}")
            # log p(label) = logsumexp over its written forms, then normalised over the label set.
            per_label = np.array([np.logaddexp.reduce(logp[owner_arr == j]) for j in range(len(ctx.labels))])
            p = softmax(per_label)
            recs = [
                {
                    "text": form,
                    "logprob": float(lp),
                    "n_tokens": None,
                    "p": None,
                    "verifier_score": None,
                    "weight": None,
                    "selected": False,
                    **prompt.record(),
                }
                for form, lp in zip(options, logp, strict=True)
            ]
            rows.append([Row(self.name, 1, p, recs, Cost().add_scoring(scored))])
        return rows


@register_strategy("prompt-ensemble")
class PromptEnsemble(Strategy):
    summary = "K paraphrased prompts with permuted label orders, one greedy answer each, averaged"
    budget_name = "K"
    selection = "mean of parsed distributions over the first K paraphrases"
    Settings = PromptEnsembleSettings

    @classmethod
    def requests(cls, settings: dict[str, Any], budgets: Sequence[int], route: Route) -> list[Request]:
        # paraphrase 0 is the main prompt (ambiemo.strategies.prompts): the baseline's request, paid once
        return [greedy(f"paraphrase-{k}" if k else "distribution") for k in range(max(budgets))]

    def check_budgets(self, budgets: Sequence[int]) -> None:
        super().check_budgets(budgets)
        if max(budgets) > len(PARAPHRASES):
            raise ValueError(
                f"prompt-ensemble has {len(PARAPHRASES)} paraphrases; budget K={max(budgets)} is too "
                f"large (lower params strategies.prompt-ensemble.budgets)"
            )

    def run(self, utts, budgets):
        ctx = self.ctx
        config = GenerationConfig(mode="greedy", n=1, max_new_tokens=ctx.max_new_tokens("distribution"))
        answers = []  # per paraphrase k: (prompts, candidates) over utts
        for k in range(max(budgets)):  # the first K of K_max prompts are a K-prompt ensemble
            prompts = [ctx.prompts.paraphrase(k, u.utt_id) for u in utts]
            answers.append((prompts, ctx.generate(utts, prompts, config)))
        rows = []
        for i in range(len(utts)):
            out = []
            for kk in budgets:
                recs, parsed, cost = [], [], Cost()
                for prompts, cands in answers[:kk]:
                    c = cands[i][0]
                    p = ctx.parse(c.text)
                    recs.append(record(c, p, prompts[i], selected=p is not None))
                    cost.add(cands[i])
                    if p is not None:
                        parsed.append(p)
                out.append(Row(self.name, kk, np.mean(parsed, axis=0) if parsed else None, recs, cost))
            rows.append(out)
        return rows
