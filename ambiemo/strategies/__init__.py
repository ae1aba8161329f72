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
- Compute is read from the candidates (their ``meta``) and the option scores (``OptionScores``),
  never from live counters, so a rerun answered by the cache writes identical rows. ``Cost`` keeps
  the model's own usage (option scoring included) apart from the verifier's.

The ``oracle`` readout (the best stored candidate against the human distribution, the ceiling a
perfect selector would reach) needs the ground truth, so it is not a strategy that runs: scoring
computes it (``ambiemo.scoring``: ``oracle_js``, ``pass_at_n``) from each candidate's parsed
distribution, which the inference stage writes to the candidates table beside each predictions
table (``ambiemo.inference.candidates``: one row per candidate of ``Row.candidates``).

Modules: ``base`` (the contract, the registry, ``record``), ``one_shot`` (baseline, cot),
``candidates`` (bon, w-bon, alm-v, w-alm-v and their one ``combine``), ``ensembles``
(self-consistency, label-scoring, prompt-ensemble). Settings and their defaults:
``ambiemo.core.config.strategy_settings`` (the params schema, ``ambiemo.core.params``).
"""

from __future__ import annotations

from ambiemo.core.config import by_profile, strategy_settings
from ambiemo.strategies.base import (
    STRATEGIES,
    Context,
    Cost,
    Row,
    Strategy,
    Utterance,
    check_one_shot,
    record,
    register_strategy,
    softmax,
    weighted_mean,
)
from ambiemo.strategies.best_of_n import (
    BestOfN,
    CandidateStrategy,
    VerifierBest,
    VerifierWeighted,
    WeightedBestOfN,
)
from ambiemo.strategies.ensembles import LabelScoring, PromptEnsemble, SelfConsistency, label_votes
from ambiemo.strategies.one_shot import Baseline, ChainOfThought
from ambiemo.strategies.parsing import parse_rating

__all__ = [
    "STRATEGIES",
    "Baseline",
    "BestOfN",
    "CandidateStrategy",
    "ChainOfThought",
    "Context",
    "Cost",
    "LabelScoring",
    "PromptEnsemble",
    "Row",
    "SelfConsistency",
    "Strategy",
    "Utterance",
    "VerifierBest",
    "VerifierWeighted",
    "WeightedBestOfN",
    "by_profile",
    "check_one_shot",
    "label_votes",
    "parse_rating",
    "record",
    "register_strategy",
    "softmax",
    "strategy_settings",
    "weighted_mean",
]
