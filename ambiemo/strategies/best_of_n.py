"""Candidate strategies: B candidates to the distribution prompt, one answer from them.

Every candidate strategy goes through one ``combine``: parse each candidate, rate it (verifier
strategies only), let the strategy weigh the parsed candidates, record, and write the row once. A
selection (bon, alm-v) states each candidate's merit and answers with the distribution of the parsed
candidate of most merit; a mixture (w-bon, w-alm-v) gives weights and answers with the weighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from ambiemo.core.errors import check_candidates
from ambiemo.models.base import AudioRequest, Candidate, GenerationConfig
from ambiemo.strategies import planning
from ambiemo.strategies.base import Cost, Row, Strategy, Utterance, record, register_strategy, softmax, weighted_mean
from ambiemo.strategies.parsing import parse_rating
from ambiemo.strategies.planning import Request, Route
from ambiemo.strategies.prompts import VERIFIER_NO, VERIFIER_YES, Prompt
from ambiemo.strategies.settings import BudgetSettings


class WeightedSettings(BudgetSettings):
    temperature: Annotated[float, Field(gt=0)] = 1.0  # weights = softmax(likelihood / temperature)


class CandidateStrategy(Strategy):
    """Strategies that choose among, or combine, B candidates to the distribution prompt.

    A subclass implements ``merit`` (a selection: the parsed candidate of most merit is the answer, a tie
    going to the earliest) or ``weights`` (a mixture of the parsed candidates' distributions); ``selects``
    says which, set from the class.
    """

    budget_name = "B"

    @classmethod
    def requests(cls, settings: dict[str, Any], budgets: Sequence[int], route: Route) -> list[Request]:
        return planning.candidates(budgets, route)

    selects: ClassVar[bool] = False  # True: the class implements merit; set by __init_subclass__

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "selects" in own or ("merit" in own and "weights" in own):
            raise TypeError(
                f"{cls.__name__}: a candidate strategy implements merit (a selection) or weights (a mixture), "
                "not both, and does not set selects, which follows from which one it implements"
            )
        cls.selects = cls.merit is not CandidateStrategy.merit

    def check(self) -> None:
        super().check()
        if self.merit.__func__ is CandidateStrategy.merit and self.weights.__func__ is CandidateStrategy.weights:
            raise NotImplementedError(f"strategy {self.name!r} implements neither merit nor weights")

    def candidate_source(self) -> str:
        return "beam" if self.ctx.model.capabilities.beam_search else "sampled"

    def candidates(
        self, utts: Sequence[Utterance], prompts: Sequence[Prompt], budgets: Sequence[int]
    ) -> dict[int, list[tuple[list[Candidate], Cost]]]:
        """For each budget B, each utterance's B candidates and what they cost."""
        ctx = self.ctx
        max_tokens = ctx.max_new_tokens("distribution")
        out: dict[int, list[tuple[list[Candidate], Cost]]] = {}
        if self.candidate_source() == "beam":
            # One beam search per width: a narrower search is not a subset of a wider one.
            for b in budgets:
                config = GenerationConfig(mode="beam", n=b, num_beams=b, max_new_tokens=max_tokens)
                out[b] = [(c, Cost().add(c)) for c in ctx.generate(utts, prompts, config)]
        else:
            # Independent samples: the first B of B_max are a B-sample run.
            config = ctx.sampling(max(budgets))
            all_cands = ctx.generate(utts, prompts, config)
            for b in budgets:
                out[b] = [(c[:b], Cost().add(c[:b])) for c in all_cands]
        return out

    def run(self, utts: Sequence[Utterance], budgets: Sequence[int]) -> list[list[Row]]:
        prompts = [self.ctx.prompts.ask("distribution", u.utt_id) for u in utts]
        per_budget = self.candidates(utts, prompts, budgets)
        dists = {b: [[self.ctx.parse(c.text) for c in cands] for cands, _ in per_budget[b]] for b in budgets}
        scores = self.rate(utts, prompts, per_budget, dists)
        rows: list[list[Row]] = [[] for _ in utts]
        for b in budgets:
            for i, (cands, cost) in enumerate(per_budget[b]):
                rows[i].append(self.combine(prompts[i], cands, dists[b][i], scores[b][i], cost, b))
        return rows

    def rate(
        self,
        utts: Sequence[Utterance],
        prompts: Sequence[Prompt],
        per_budget: dict[int, list[tuple[list[Candidate], Cost]]],
        dists: dict[int, list[list[np.ndarray | None]]],
    ) -> dict[int, list[list[float | None]]]:
        """A verifier score per candidate, per budget and utterance; None without a verifier."""
        return {b: [[None] * len(cands) for cands, _ in rows] for b, rows in per_budget.items()}

    def weights(self, cands: list[Candidate], ok: list[int], scores: list[float | None]) -> np.ndarray:
        """A mixture's weights of the parsed candidates ``ok`` (in that order); empty when none parsed."""
        raise NotImplementedError

    def merit(self, cands: list[Candidate], scores: list[float | None]) -> list[float]:
        """A selection's merit of every candidate, parsed or not (higher is better)."""
        raise NotImplementedError

    def combine(
        self,
        prompt: Prompt,
        cands: list[Candidate],
        dists: list[np.ndarray | None],
        scores: list[float | None],
        cost: Cost,
        budget: int,
    ) -> Row:
        ok = [i for i, p in enumerate(dists) if p is not None]
        if self.selects:
            merit = self.merit(cands, scores)
            best = max(ok, key=lambda i: (merit[i], -i)) if ok else None  # a tie goes to the earliest
            p = None if best is None else dists[best]
            chosen = {} if best is None else {best: None}  # a selection records no weight
        else:
            w = self.weights(cands, ok, scores)
            p = weighted_mean([dists[i] for i in ok], w) if ok else None
            chosen = {i: float(x) for i, x in zip(ok, w, strict=True)}
        recs = [
            record(c, d, prompt, verifier_score=s, weight=chosen.get(i), selected=i in chosen)
            for i, (c, d, s) in enumerate(zip(cands, dists, scores, strict=True))
        ]
        return Row(self.name, budget, p, recs, cost)


class _ByLikelihood(CandidateStrategy):
    """Candidates weighed by their own likelihood under the model, so the route must return log-probabilities."""

    needs = ("logprobs",)


@register_strategy("bon")
class BestOfN(_ByLikelihood):
    summary = "B beams (or samples ranked by likelihood); keep the most likely candidate"
    selection = "argmax likelihood among parsed candidates"

    def merit(self, cands, scores):
        return [self.ctx.likelihood(c) for c in cands]  # every candidate's: a missing log-prob fails loudly


@register_strategy("w-bon")
class WeightedBestOfN(_ByLikelihood):
    summary = "B beams; mixture of their distributions weighted by softmax(likelihood / T)"
    selection = "softmax(likelihood / temperature) over parsed candidates"
    Settings = WeightedSettings

    def check(self) -> None:
        super().check()
        temperature = float(self.cfg["temperature"])
        if not temperature > 0:
            raise ValueError(
                f"params strategies.w-bon.temperature must be > 0, got {temperature} "
                "(use bon for the T -> 0 limit: the single most likely candidate)"
            )

    def weights(self, cands, ok, scores):
        if not ok:
            return np.empty(0)
        temperature = float(self.cfg["temperature"])
        return softmax(np.array([self.ctx.likelihood(cands[i]) for i in ok]) / temperature)


class _Verified(CandidateStrategy):
    """Candidates rated by a verifier model that hears the audio, the question and the answer."""

    uses_verifier = True

    @classmethod
    def requests(cls, settings: dict[str, Any], budgets: Sequence[int], route: Route) -> list[Request]:
        return planning.candidates(budgets, route) + planning.ratings(budgets, route)

    def verifier_method(self) -> str:
        method = self.ctx.settings["verifier"]["method"]
        if method not in ("auto", "options", "generate"):
            raise ValueError(f"params strategies.verifier.method must be auto, options or generate, got {method!r}")
        if method == "auto":
            return "options" if self.ctx.verifier.capabilities.option_scoring else "generate"
        return method

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "verifier_method": self.verifier_method()}

    def rate(self, utts, prompts, per_budget, dists):
        """A score in [0, 1] per parsed candidate (None for the others, and for an unreadable rating).

        ``options``: the verifier's p(Yes) / (p(Yes) + p(No)) to "does the answer describe the
        emotions well?", case forms summed; ``generate``: its greedy 0-10 rating, divided by 10.
        Every parsed candidate of every utterance and budget goes to the verifier in one call (a
        local verifier batches them, an API verifier sends them concurrently); each row is charged
        for its own candidates' ratings.
        """
        verifier = self.ctx.verifier
        method = self.verifier_method()
        scores = super().rate(utts, prompts, per_budget, dists)
        jobs, requests = [], []  # (budget, utterance, candidate) of each request, in that order
        for b, rows in per_budget.items():
            for i, (cands, _) in enumerate(rows):
                for j, (c, p) in enumerate(zip(cands, dists[b][i], strict=True)):
                    if p is None:
                        continue
                    u = utts[i]
                    messages = self.ctx.prompts.verifier(prompts[i], c.text, method)
                    jobs.append((b, i, j))
                    requests.append(AudioRequest(u.utt_id, u.waveform, u.sample_rate, messages))
        if not requests:
            return scores
        if method == "options":
            n_yes = len(VERIFIER_YES)
            for (b, i, j), rated in zip(
                jobs, self.ctx.score_options(requests, [*VERIFIER_YES, *VERIFIER_NO], model=verifier), strict=True
            ):
                logp = rated.logprobs
                yes, no = np.logaddexp.reduce(logp[:n_yes]), np.logaddexp.reduce(logp[n_yes:])
                scores[b][i][j] = float(1.0 / (1.0 + np.exp(no - yes))) if np.isfinite([yes, no]).all() else None
                per_budget[b][i][1].add_scoring(rated, verifier=True)
            return scores
        config = GenerationConfig(mode="greedy", n=1, max_new_tokens=self.ctx.max_new_tokens("verifier"))
        for (b, i, j), reply in zip(jobs, verifier.generate(requests, config), strict=True):
            check_candidates(f"verifier {verifier.key!r}", utts[i].utt_id, reply)
            scores[b][i][j] = parse_rating(reply[0].text)
            per_budget[b][i][1].add(reply, verifier=True)
        return scores


@register_strategy("alm-v")
class VerifierBest(_Verified):
    summary = "B candidates; a verifier ALM scores each (p(Yes) or a 0-10 rating); keep the best"
    selection = "argmax verifier score among parsed candidates (no readable score: the first parsed)"

    def merit(self, cands, scores):
        return [-1.0 if s is None else s for s in scores]  # an unreadable score is below every readable one


@register_strategy("w-alm-v")
class VerifierWeighted(_Verified):
    summary = "B candidates; mixture weighted by the verifier's ratings"
    selection = "weights proportional to verifier scores over parsed candidates (all zero or unreadable: plain mean)"

    def weights(self, cands, ok, scores):
        raw = np.array([scores[i] or 0.0 for i in ok])
        return raw / raw.sum() if raw.sum() > 0 else np.full(len(ok), 1.0 / max(len(ok), 1))
