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

Enters: an ``Utterance`` batch, the model, the prompts and the params ``strategies`` section.
Leaves: ``Row``s (a distribution per budget, its candidates, its ``Cost``), and for the planner each
strategy's ``requests``.

Modules: ``base`` (the contract, the registry, ``record``), ``settings`` (a strategy's typed params
section), ``planning`` (``Request`` and the token budgets), ``prompts`` and ``parsing`` (what is asked,
how an answer is read), and one module per family of strategies: ``one_shot`` (baseline, cot),
``best_of_n`` (bon, w-bon, alm-v, w-alm-v and their one ``combine``), ``ensembles``
(self-consistency, label-scoring, prompt-ensemble). Every module of this package is imported here,
so a new strategy is one new module (registered with ``@register_strategy``) plus its params entry;
``strategy_settings`` gives every strategy's section with the defaults its ``Settings`` states.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pydantic import ValidationError

from ambiemo.core import config
from ambiemo.core.config import by_profile
from ambiemo.core.params import Strategies
from ambiemo.core.validation import close_match, describe_error, register_section_check
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
from ambiemo.strategies.planning import Request, Route

# Discovery: every module of the package registers what it defines; no list to edit.
for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

SHARED = tuple(f.alias or name for name, f in Strategies.model_fields.items())  # batch_size, sampling, ...


def _defaults() -> dict[str, Any]:
    out = config.settings({}, "strategies")
    for name in STRATEGIES.names():
        out[name] = STRATEGIES.get(name).settings_model()().model_dump(by_alias=True, exclude_none=True)
    return out


def strategy_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Params ``strategies`` with every default under it (the shared ones from the params schema, each
    strategy's from its ``Settings``), and per-profile values resolved.

    ``budgets``, ``verifier.model`` and each ``max_new_tokens`` entry may be a mapping from profile
    name to value (the verifier is ``cascade-smollm2`` in the demo and ``gpt-4o`` in the paper);
    ``run.profile`` picks one. A user's section keeps its own keys and order; the defaults fill
    what it leaves out. Values are not checked here (``load_params`` did that).
    """
    user = dict(params.get("strategies") or {})
    out: dict[str, Any] = {}
    for key, default in _defaults().items():
        given = user.get(key)
        if isinstance(default, dict):
            given = dict(given or {})
            out[key] = {**given, **{k: v for k, v in default.items() if k not in given}}
        else:
            out[key] = user.get(key, default)
    for key, value in user.items():
        out.setdefault(key, value)
    profile = (params.get("run") or {}).get("profile")
    out["verifier"]["model"] = by_profile(out["verifier"].get("model"), profile, "strategies.verifier.model")
    out["max_new_tokens"] = {
        k: by_profile(v, profile, f"strategies.max_new_tokens.{k}") for k, v in out["max_new_tokens"].items()
    }
    for name, sec in out.items():
        if isinstance(sec, dict) and "budgets" in sec:
            out[name] = {**sec, "budgets": by_profile(sec["budgets"], profile, f"strategies.{name}.budgets")}
    return out


def check_sections(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Each ``strategies.<name>`` section against its strategy's ``Settings``; the strategies a run or
    profile names are registered. (dotted key, message) pairs, for ``ParamsError``."""
    problems: list[tuple[str, str]] = []
    user = params.get("strategies") if isinstance(params.get("strategies"), dict) else {}
    names = STRATEGIES.names()
    for key, section in user.items():
        if key in SHARED:
            continue
        if key not in STRATEGIES:
            problems.append(
                (f"strategies.{key}", f"no registered strategy has this section{close_match(key, [*SHARED, *names])}")
            )
            continue
        model = STRATEGIES.get(key).settings_model()
        try:
            model.model_validate(section if section is not None else {})
        except ValidationError as e:
            described = [describe_error(err, model, f"strategies.{key}") for err in e.errors()]
            found = [k for k, _ in described]  # a per-profile value failing as a mapping fails as a value too
            problems += [(k, m) for k, m in described if not any(o.startswith(k + ".") for o in found)]
    run = params.get("run") if isinstance(params.get("run"), dict) else {}
    profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
    blocks = [("run", run)] + [(f"profiles.{k}", v) for k, v in profiles.items() if isinstance(v, dict)]
    for where, block in blocks:
        listed = block.get("strategies")
        for name in [str(v) for v in listed] if isinstance(listed, list) else []:
            if name not in STRATEGIES:
                problems.append(
                    (f"{where}.strategies", f"{name!r} is no registered strategy{close_match(name, names)}")
                )
    return problems + _candidate_bounds(params, blocks)


def route_kind(adapter: str) -> str:
    """``local`` (this process), ``served`` (an OpenAI-compatible server) or ``api`` (a hosted API)."""
    return {"openai-compatible": "served", "openai-chat": "api", "gemini": "api"}.get(adapter, "local")


def candidate_bound(params: dict[str, Any], model_key: str) -> int:
    """The most candidates one request may ask ``model_key`` for: its entry's ``max_candidates``, else
    params ``strategies.max_candidates`` for its kind of route."""
    spec = (params.get("models") or {}).get(model_key) or {}
    if "max_candidates" in spec:
        return int(spec["max_candidates"])
    return int(config.settings(params, "strategies")["max_candidates"][route_kind(str(spec.get("adapter")))])


def _candidate_bounds(params: dict[str, Any], blocks: list[tuple[str, dict]]) -> list[tuple[str, str]]:
    """Budgets that would ask a model for more candidates in one request than its route's bound."""
    models = params.get("models") if isinstance(params.get("models"), dict) else {}
    over: dict[tuple[str, str], tuple[int, list[str]]] = {}  # (strategy, model) -> (candidates, where)
    for where, block in blocks:
        profile = block.get("profile") if where == "run" else where.split(".", 1)[1]
        try:
            resolved = strategy_settings({**params, "run": {**block, "profile": profile}})
        except (KeyError, TypeError, AttributeError, ValueError):
            continue  # per-profile values that do not resolve are reported by the schema's own checks
        for strat in [s for s in block.get("strategies") or [] if s in STRATEGIES]:
            cls, own = STRATEGIES.get(strat), resolved.get(strat) or {}
            budgets = own.get("budgets") if cls.budget_name else [1]
            if not budgets or not isinstance(budgets, list) or not all(isinstance(b, int) for b in budgets):
                continue
            requests = cls.requests(own, sorted(budgets), Route(True, 2, False))
            n = max([r.n for r in requests if r.kind == "generate"], default=1)
            for key in [m for m in block.get("models") or [] if m in models]:
                if n > candidate_bound(params, key):
                    most, places = over.get((strat, key), (0, []))
                    over[(strat, key)] = (max(most, n), [*places, where])
    problems = []
    for (strat, key), (n, places) in over.items():
        kind, bound = route_kind(str(models[key].get("adapter"))), candidate_bound(params, key)
        problems.append(
            (
                f"strategies.{strat}.budgets",
                f"{' and '.join(places)} run {strat} on {key}, whose one request would ask for {n} candidates; "
                f"the bound on a {kind} route is {bound} (raise strategies.max_candidates.{kind}, "
                f"or models.{key}.max_candidates, on purpose where the hardware takes it)",
            )
        )
    return problems


register_section_check("strategies", check_sections)

__all__ = [
    "SHARED",
    "STRATEGIES",
    "Context",
    "Cost",
    "Request",
    "Route",
    "Row",
    "Strategy",
    "Utterance",
    "by_profile",
    "candidate_bound",
    "check_one_shot",
    "check_sections",
    "record",
    "register_strategy",
    "route_kind",
    "softmax",
    "strategy_settings",
    "weighted_mean",
]
