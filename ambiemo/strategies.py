"""Test-time scaling strategies: how much inference an utterance gets, and how it becomes one answer.

Every strategy turns a batch of utterances into predicted distributions over the label set, at
each budget of its grid (params ``strategies.<name>.budgets``), and accounts for what it spent.

    name              what it does                                                   budget
    baseline          one greedy answer to the distribution prompt                   -
    cot               chain-of-thought prompt, one greedy answer                     -
    bon               B candidates; keep the one with the highest likelihood         B
    w-bon             B candidates; average their distributions, weights softmax(likelihood / T)   B
    alm-v             B candidates; a verifier model rates each; keep the best       B
    w-alm-v           B candidates; average, weights proportional to the ratings     B
    self-consistency  N samples at temperature T; mean of their distributions, and   N
                      (readout ``self-consistency-vote``) the histogram of their labels
    label-scoring     p(label word | single-label prompt) from one forward pass      -
    prompt-ensemble   K paraphrased prompts with permuted label orders, one greedy   K
                      answer each, averaged

Candidates are B-beam search where the model has beam search (the paper's setting); where it has
not (the API routes), B samples at ``strategies.sampling.temperature`` stand in, ranked by their
log-likelihoods, and the output's provenance says ``candidate_source: sampled``.

Shared rules, stated once:
- *Likelihood* of a candidate = summed log-probability / n_tokens ** ``length_alpha`` (params
  ``strategies.likelihood.length_alpha``: 0 = summed, 1 = per-token mean, the ranking that
  Hugging Face's beam search itself uses with its default length_penalty=1).
- Selection and weighting use only candidates whose answer parses; the others are kept in the
  output with ``p: null``. A row fails to parse only when no candidate parses. Ties in a
  selection go to the earliest candidate (the best beam, the first sample).
- Smaller budgets are read from the largest budget's candidates where that is the same
  experiment: the first N of N_max independent samples, the first K of K_max prompts. Beam
  search cannot be cut that way (the best 2 of a 3-beam search are not what a 2-beam search
  finds), so every beam width is its own call; ``w-bon`` asks the same beam calls as ``bon``
  and ``alm-v`` asks them with its B, which the generation cache answers without new compute.
- Compute is read from the candidates (their ``meta``), never from live counters, so a rerun
  answered by the cache writes identical rows.

The ``oracle`` readout (the best stored candidate against the human distribution, the ceiling a
perfect selector would reach) needs the ground truth, so it is not a strategy that runs: scoring
computes it (``ambiemo.scoring``: ``oracle_js``, ``pass_at_n``) from each candidate's parsed
distribution, which every row stores in its ``candidates`` JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ambiemo.models.base import AudioLanguageModel, AudioRequest, Candidate, CapabilityError, GenerationConfig
from ambiemo.parsing import parse_distribution
from ambiemo.prompts import PARAPHRASES, VERIFIER_NO, VERIFIER_YES, Prompt, PromptBook
from ambiemo.registry import Registry

# Defaults of params ``strategies`` (params.yaml states them again for the reader; these hold when
# a key is left out there).
DEFAULTS: dict[str, Any] = {
    "batch_size": 8,  # utterances per model call
    "max_new_tokens": {"per_label": 10, "base": 8, "reasoning": 112, "single": 6, "verifier": 4},
    "likelihood": {"length_alpha": 1.0},
    "sampling": {"temperature": 0.7, "top_p": 1.0},
    "verifier": {"model": None, "method": "auto"},
}


@dataclass
class Utterance:
    """What a strategy sees of one utterance."""

    utt_id: str
    waveform: np.ndarray
    sample_rate: int


@dataclass
class Cost:
    """Compute behind one prediction row."""

    model_calls: int = 0
    verifier_calls: int = 0
    prompt_tokens: int | None = 0  # None: a route reported none (option scoring)
    gen_tokens: int = 0
    wall_s: float = 0.0  # NaN: unknown

    def add(self, candidates: Sequence[Candidate], *, verifier: bool = False) -> Cost:
        """One request's candidates (or the first few of them, for a derived budget)."""
        if verifier:
            self.verifier_calls += 1
        else:
            self.model_calls += 1
        if candidates:
            tokens = candidates[0].meta.get("prompt_tokens")
            self.prompt_tokens = (
                None if tokens is None or self.prompt_tokens is None else self.prompt_tokens + int(tokens)
            )
        self.gen_tokens += sum(int(c.n_tokens) for c in candidates)
        self.wall_s += sum(float(c.meta.get("wall_s", math.nan)) for c in candidates)
        return self

    def add_scoring(self, *, verifier: bool = False) -> Cost:
        """One ``score_options`` request: no tokens or time reported by the contract."""
        if verifier:
            self.verifier_calls += 1
        else:
            self.model_calls += 1
            self.prompt_tokens = None
            self.wall_s = math.nan
        return self

    def __add__(self, other: Cost) -> Cost:
        pt = (
            None
            if self.prompt_tokens is None or other.prompt_tokens is None
            else self.prompt_tokens + other.prompt_tokens
        )
        return Cost(
            self.model_calls + other.model_calls,
            self.verifier_calls + other.verifier_calls,
            pt,
            self.gen_tokens + other.gen_tokens,
            self.wall_s + other.wall_s,
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
    settings: dict[str, Any]  # params ``strategies`` with DEFAULTS filled in
    verifier: AudioLanguageModel | None = None

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.settings.get(name) or {})

    def max_new_tokens(self, kind: str) -> int:
        t = self.settings["max_new_tokens"]
        answer = int(t["base"]) + int(t["per_label"]) * len(self.labels)
        return {
            "distribution": answer,
            "cot": int(t["reasoning"]) + answer,
            "single": int(t["single"]),
            "verifier": int(t["verifier"]),
        }[kind]

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
            for c in cands:
                if "error" in c.meta:
                    raise RuntimeError(f"model {model.key!r} failed on utterance {u.utt_id!r}: {c.meta['error']}")
        return out

    def parse(self, text: str) -> np.ndarray | None:
        return parse_distribution(text, self.labels)

    def likelihood(self, c: Candidate) -> float:
        if c.logprob is None:
            raise CapabilityError(f"model {self.model.key!r} returned a candidate without a log-probability")
        alpha = float(self.settings["likelihood"]["length_alpha"])
        return float(c.logprob) / max(int(c.n_tokens), 1) ** alpha


def record(c: Candidate, p: np.ndarray | None, prompt: Prompt, **extra: Any) -> dict[str, Any]:
    """A candidate as stored in the ``candidates`` JSON column."""
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

    A subclass sets the class attributes below and implements ``run``. It raises on a model
    error; the caller then retries utterance by utterance and records the failures.
    """

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


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
register_strategy = STRATEGIES.register


def _check_one_shot(name: str, budgets: Sequence[int]) -> None:
    if list(budgets) != [1]:
        raise ValueError(f"strategy {name!r} has no budget; got budgets {list(budgets)} (use 1)")


# --------------------------------------------------------------------------- one-shot strategies


class _OneGreedy(Strategy):
    prompt_kind: ClassVar[str] = "distribution"
    selection = "the single greedy answer"

    def run(self, utts: Sequence[Utterance], budgets: Sequence[int]) -> list[list[Row]]:
        _check_one_shot(self.name, budgets)
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
    name = "baseline"
    summary = "one greedy answer to the distribution prompt (params: prompt distribution|single)"


@register_strategy("cot")
class ChainOfThought(_OneGreedy):
    name = "cot"
    summary = "reason first, then the JSON distribution; one greedy answer"
    prompt_kind = "cot"


# --------------------------------------------------------------------------- B candidates


class CandidateStrategy(Strategy):
    """Strategies that choose among, or combine, B candidates to the distribution prompt."""

    budget_name = "B"

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
            s = ctx.settings["sampling"]
            config = GenerationConfig(
                mode="sample",
                n=max(budgets),
                max_new_tokens=max_tokens,
                temperature=float(s["temperature"]),
                top_p=float(s["top_p"]),
                seed=int(ctx.prompts.seed),
            )
            all_cands = ctx.generate(utts, prompts, config)
            for b in budgets:
                out[b] = [(c[:b], Cost().add(c[:b])) for c in all_cands]
        return out

    def run(self, utts: Sequence[Utterance], budgets: Sequence[int]) -> list[list[Row]]:
        prompts = [self.ctx.prompts.ask("distribution", u.utt_id) for u in utts]
        per_budget = self.candidates(utts, prompts, budgets)
        rows: list[list[Row]] = [[] for _ in utts]
        for b in budgets:
            for i, (cands, cost) in enumerate(per_budget[b]):
                rows[i].append(self.combine(utts[i], prompts[i], cands, cost, b))
        return rows

    def combine(self, utt: Utterance, prompt: Prompt, cands: list[Candidate], cost: Cost, budget: int) -> Row:
        raise NotImplementedError


@register_strategy("bon")
class BestOfN(CandidateStrategy):
    name = "bon"
    summary = "B beams (or samples ranked by likelihood); keep the most likely candidate"
    needs = ("logprobs",)
    selection = "argmax likelihood among parsed candidates"

    def combine(self, utt, prompt, cands, cost, budget):
        dists = [self.ctx.parse(c.text) for c in cands]
        ok = [i for i, p in enumerate(dists) if p is not None]
        scores = [self.ctx.likelihood(c) for c in cands]
        best = max(ok, key=lambda i: (scores[i], -i)) if ok else None
        recs = [record(c, p, prompt, selected=i == best) for i, (c, p) in enumerate(zip(cands, dists, strict=True))]
        return Row(self.name, budget, None if best is None else dists[best], recs, cost)


@register_strategy("w-bon")
class WeightedBestOfN(CandidateStrategy):
    name = "w-bon"
    summary = "B beams; mixture of their distributions weighted by softmax(likelihood / T)"
    needs = ("logprobs",)
    selection = "softmax(likelihood / temperature) over parsed candidates"

    def check(self) -> None:
        super().check()
        temperature = float(self.cfg.get("temperature", 1.0))
        if not temperature > 0:
            raise ValueError(
                f"params strategies.w-bon.temperature must be > 0, got {temperature} "
                "(use bon for the T -> 0 limit: the single most likely candidate)"
            )

    def combine(self, utt, prompt, cands, cost, budget):
        temperature = float(self.cfg.get("temperature", 1.0))
        dists = [self.ctx.parse(c.text) for c in cands]
        ok = [i for i, p in enumerate(dists) if p is not None]
        weights = {}
        if ok:
            w = softmax(np.array([self.ctx.likelihood(cands[i]) for i in ok]) / temperature)
            weights = dict(zip(ok, w, strict=True))
        recs = [
            record(c, p, prompt, weight=float(weights[i]) if i in weights else None, selected=i in weights)
            for i, (c, p) in enumerate(zip(cands, dists, strict=True))
        ]
        p = weighted_mean([dists[i] for i in ok], np.array([weights[i] for i in ok])) if ok else None
        return Row(self.name, budget, p, recs, cost)


_RATING_RE = re.compile(r"(?<![\d.\-])(\d+(?:\.\d+)?)(?:\s*/\s*10)?")  # "-3" is no rating


def parse_rating(text: str) -> float | None:
    """The verifier's reply ``7`` / ``7/10`` / ``Score: 7.`` -> 0.7; None when it names no number in 0..10."""
    m = _RATING_RE.search(text or "")
    if m is None:
        return None
    value = float(m.group(1))
    return value / 10.0 if 0.0 <= value <= 10.0 else None


class _Verified(CandidateStrategy):
    """Candidates rated by a verifier model that hears the audio, the question and the answer."""

    uses_verifier = True

    def verifier_method(self) -> str:
        method = self.ctx.settings["verifier"].get("method", "auto")
        if method not in ("auto", "options", "generate"):
            raise ValueError(f"params strategies.verifier.method must be auto, options or generate, got {method!r}")
        if method == "auto":
            return "options" if self.ctx.verifier.capabilities.option_scoring else "generate"
        return method

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "verifier_method": self.verifier_method()}

    def rate(
        self, utt: Utterance, prompt: Prompt, cands: list[Candidate], dists: list, cost: Cost
    ) -> list[float | None]:
        """A score in [0, 1] per parsed candidate (None for the others, and for an unreadable rating).

        ``options``: the verifier's p(Yes) / (p(Yes) + p(No)) to "does the answer describe the
        emotions well?", case forms summed (one forward pass per option); ``generate``: its greedy
        0-10 rating, divided by 10.
        """
        verifier = self.ctx.verifier
        method = self.verifier_method()
        scores: list[float | None] = []
        for c, p in zip(cands, dists, strict=True):
            if p is None:
                scores.append(None)
                continue
            messages = self.ctx.prompts.verifier(prompt, c.text, method)
            request = AudioRequest(utt.utt_id, utt.waveform, utt.sample_rate, messages)
            if method == "options":
                logp = np.asarray(verifier.score_options(request, [*VERIFIER_YES, *VERIFIER_NO]), dtype=float)
                yes, no = np.logaddexp.reduce(logp[: len(VERIFIER_YES)]), np.logaddexp.reduce(logp[len(VERIFIER_YES) :])
                scores.append(float(1.0 / (1.0 + np.exp(no - yes))) if np.isfinite([yes, no]).all() else None)
                cost.add_scoring(verifier=True)
            else:
                config = GenerationConfig(mode="greedy", n=1, max_new_tokens=self.ctx.max_new_tokens("verifier"))
                reply = verifier.generate([request], config)[0]
                if "error" in reply[0].meta:
                    raise RuntimeError(f"verifier {verifier.key!r} failed on {utt.utt_id!r}: {reply[0].meta['error']}")
                scores.append(parse_rating(reply[0].text))
                cost.add(reply, verifier=True)
        return scores


@register_strategy("alm-v")
class VerifierBest(_Verified):
    name = "alm-v"
    summary = "B candidates; a verifier ALM scores each (p(Yes) or a 0-10 rating); keep the best"
    selection = "argmax verifier score among parsed candidates (no readable score: the first parsed)"

    def combine(self, utt, prompt, cands, cost, budget):
        dists = [self.ctx.parse(c.text) for c in cands]
        scores = self.rate(utt, prompt, cands, dists, cost)
        ok = [i for i, p in enumerate(dists) if p is not None]
        best = max(ok, key=lambda i: (scores[i] if scores[i] is not None else -1.0, -i)) if ok else None
        recs = [
            record(c, p, prompt, verifier_score=s, selected=i == best)
            for i, (c, p, s) in enumerate(zip(cands, dists, scores, strict=True))
        ]
        return Row(self.name, budget, None if best is None else dists[best], recs, cost)


@register_strategy("w-alm-v")
class VerifierWeighted(_Verified):
    name = "w-alm-v"
    summary = "B candidates; mixture weighted by the verifier's ratings"
    selection = "weights proportional to verifier scores over parsed candidates (all zero or unreadable: plain mean)"

    def combine(self, utt, prompt, cands, cost, budget):
        dists = [self.ctx.parse(c.text) for c in cands]
        scores = self.rate(utt, prompt, cands, dists, cost)
        ok = [i for i, p in enumerate(dists) if p is not None]
        raw = np.array([scores[i] or 0.0 for i in ok])
        w = raw / raw.sum() if raw.sum() > 0 else np.full(len(ok), 1.0 / max(len(ok), 1))
        weights = dict(zip(ok, w, strict=True))
        recs = [
            record(
                c,
                p,
                prompt,
                verifier_score=s,
                weight=float(weights[i]) if i in weights else None,
                selected=i in weights,
            )
            for i, (c, p, s) in enumerate(zip(cands, dists, scores, strict=True))
        ]
        p = weighted_mean([dists[i] for i in ok], w) if ok else None
        return Row(self.name, budget, p, recs, cost)


# --------------------------------------------------------------------------- sampling and ensembles


def label_votes(dists: Sequence[np.ndarray]) -> np.ndarray:
    """Histogram of the answers' labels: each answer's argmax gets one vote, split equally on a tie."""
    votes = np.zeros(len(dists[0]))
    for p in dists:
        top = np.flatnonzero(np.isclose(p, p.max()))
        votes[top] += 1.0 / len(top)
    return votes / votes.sum()


@register_strategy("self-consistency")
class SelfConsistency(Strategy):
    name = "self-consistency"
    summary = "N samples at temperature T; mean of their distributions (+ readout -vote: label histogram)"
    budget_name = "N"
    readouts = ("self-consistency-vote",)
    selection = "mean of parsed distributions; -vote: histogram of their argmax labels"

    def candidate_source(self) -> str:
        return "sampled"

    def run(self, utts, budgets):
        ctx = self.ctx
        s = ctx.settings["sampling"]
        prompts = [ctx.prompts.ask("distribution", u.utt_id) for u in utts]
        config = GenerationConfig(
            mode="sample",
            n=max(budgets),
            max_new_tokens=ctx.max_new_tokens("distribution"),
            temperature=float(self.cfg.get("temperature", s["temperature"])),
            top_p=float(s["top_p"]),
            seed=int(ctx.prompts.seed),
        )
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
    name = "label-scoring"
    summary = "p(label word) as the answer to the single-label prompt; one forward pass, no generation"
    needs = ("option_scoring",)
    selection = "softmax over labels of log p(label word), case variants summed"

    def candidate_source(self) -> str:
        return "options"

    def check(self) -> None:
        super().check()
        self.variants(self.ctx.labels[0])  # an unknown variant name fails now, not per utterance

    def variants(self, label: str) -> list[str]:
        forms = {"lower": label.lower(), "title": label.title(), "upper": label.upper(), "as-is": label}
        names = self.cfg.get("variants", ["lower", "title"])
        unknown = [v for v in names if v not in forms]
        if unknown:
            raise ValueError(f"params strategies.label-scoring.variants: unknown {unknown}; known: {list(forms)}")
        return list(dict.fromkeys(forms[v] for v in names))

    def run(self, utts, budgets):
        _check_one_shot(self.name, budgets)
        ctx = self.ctx
        options, owner = [], []
        for j, label in enumerate(ctx.labels):
            for form in self.variants(label):
                options.append(form)
                owner.append(j)
        owner_arr = np.array(owner)
        rows = []
        for u in utts:
            prompt = ctx.prompts.ask("single", u.utt_id)
            request = AudioRequest(u.utt_id, u.waveform, u.sample_rate, list(prompt.messages))
            logp = np.asarray(ctx.model.score_options(request, options), dtype=float)
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
            rows.append([Row(self.name, 1, p, recs, Cost().add_scoring())])
        return rows


@register_strategy("prompt-ensemble")
class PromptEnsemble(Strategy):
    name = "prompt-ensemble"
    summary = "K paraphrased prompts with permuted label orders, one greedy answer each, averaged"
    budget_name = "K"
    selection = "mean of parsed distributions over the first K paraphrases"

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


# --------------------------------------------------------------------------- settings


def strategy_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Params ``strategies`` with ``DEFAULTS`` under it, and per-profile values resolved.

    ``budgets``, ``verifier.model`` and each ``max_new_tokens`` entry may be a mapping from
    profile name to value (the verifier is ``cascade-smollm2`` in the demo and ``gpt-4o`` in the
    paper); ``run.profile`` picks one.
    """
    user = dict(params.get("strategies") or {})
    settings: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        settings[key] = {**default, **(user.get(key) or {})} if isinstance(default, dict) else user.get(key, default)
    for key, value in user.items():
        settings.setdefault(key, value)
    profile = (params.get("run") or {}).get("profile")
    settings["verifier"]["model"] = by_profile(settings["verifier"].get("model"), profile, "strategies.verifier.model")
    settings["max_new_tokens"] = {
        k: by_profile(v, profile, f"strategies.max_new_tokens.{k}") for k, v in settings["max_new_tokens"].items()
    }
    for name, sec in settings.items():
        if isinstance(sec, dict) and "budgets" in sec:
            settings[name] = {**sec, "budgets": by_profile(sec["budgets"], profile, f"strategies.{name}.budgets")}
    return settings


def by_profile(value: Any, profile: str | None, where: str) -> Any:
    """``value``, or ``value[profile]`` when it is a per-profile mapping."""
    if not isinstance(value, dict):
        return value
    if profile not in value:
        raise KeyError(f"params.yaml {where} has no entry for profile {profile!r} (has: {', '.join(value)})")
    return value[profile]
