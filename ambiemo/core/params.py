"""The schema of ``params.yaml``: every key, its type, its allowed values and its default, stated once.

``validate_params`` checks a loaded params mapping before any work and raises one ``ParamsError``
that lists every problem by its dotted key (``strategies.sampling.temprature: unknown key; did
you mean `temperature`?``). Top-level keys and most sections are strict. ``models.<key>`` and
``datasets.<name>`` entries check their shared keys strictly and let adapter- or loader-specific
keys through (the adapter or loader validates those). Cross-references are checked too: the run's
profile, models, datasets and strategies exist; a dataset's label set exists; a per-profile
mapping names known profiles and has an entry for the run's profile.

A value that may differ per profile (``budgets``, ``verifier.model``, ``max_new_tokens.*``) is
``PerProfile``: the value itself, or a mapping profile name -> value.
"""

from __future__ import annotations

import datetime
import difflib
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PositiveInt = Annotated[int, Field(ge=1)]
Budgets = list[PositiveInt]


class ParamsError(ValueError):
    """params.yaml breaks the schema; ``problems`` holds (dotted key, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        n = len(problems)
        listed = "; ".join(f"`{key}`: {msg}" if key else msg for key, msg in problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''}: {listed}. Fix params and run again.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- run and profiles


class Profile(_Strict):
    datasets: list[str]
    models: list[str]
    strategies: list[str]
    limit: Annotated[int, Field(ge=0)] = 0  # utterances per dataset, 0 = all
    reference_models: list[str] = []  # issue 19: the study's rows kept for reference, not run (retired models)


class Run(Profile):
    profile: str | None = None  # picks per-profile values in `strategies`


class Paths(_Strict):
    results: str = "results"
    cache_dir: str = ".cache/ambiemo"  # $AMBIEMO_CACHE_DIR overrides it
    weights_dir: str | None = (
        None  # fetched weights (`ambiemo models fetch`, ambiemo.models.weights); None: the hub cache
    )


# --------------------------------------------------------------------------- data


class LabelSet(_Strict):
    labels: Annotated[list[str], Field(min_length=2)]
    merge: dict[str, str] = {}


class Dataset(_Open):
    loader: str
    root: str | None = None
    label_set: str
    votes: Literal["drop_utterance", "drop_votes", "other"] = "drop_utterance"
    multi_label: Literal["split", "first", "full"] = "split"
    exclude: list[str] = []


class Ambiguity(_Strict):
    method: Literal["fixed", "quantile"] = "fixed"
    bins: list[str] = ["low", "medium", "high"]
    edges_bits: list[Annotated[float, Field(gt=0)]] = [1.0, 1.5]
    quantiles: list[Annotated[float, Field(gt=0, lt=1)]] = [0.3333, 0.6667]


# --------------------------------------------------------------------------- scoring, statistics, figures
# The defaults here match the ones the scoring, stats and plots modules hold today.


class Scoring(_Strict):
    js_base: Literal["e", 2] = "e"
    kl_epsilon: Annotated[float, Field(gt=0)] = 1.0e-6
    ece_bins: PositiveInt = 5
    tie_policy: Literal["exclude", "any", "first"] = "exclude"
    ambiguity_from: Literal["manifest", "entropy"] = "manifest"
    bootstrap_resamples: PositiveInt = 1000
    ci_level: Annotated[float, Field(gt=0, lt=1)] = 0.95
    compute_multiples: list[Annotated[float, Field(gt=0)]] = [1, 2, 4, 8]


class Stats(_Strict):
    baseline: str = "baseline"
    paired_metrics: list[str] = ["js", "bc", "correct"]
    permutation_resamples: PositiveInt = 2000
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    holm_family: list[str] = ["dataset", "model"]
    mixed_model_metric: str = "js"
    budget: Literal["max", "min"] = "max"
    speaker_component_max_utterances: PositiveInt = 1000
    family_term: Literal["fixed", "none"] = "fixed"  # ambiemo.stats.regression: the family term
    power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    power_gains: dict[str, Annotated[float, Field(gt=0)]] = {"js": 0.02}


class Figures(_Strict):
    folder: str = "figures"
    formats: list[Literal["pdf", "png", "svg"]] = ["pdf", "png"]
    dpi: PositiveInt = 200
    heatmap_metrics: list[str] = ["js", "bc", "r2", "accuracy"]
    ambiguity_metric: str = "js"
    interaction_metric: str = "js"
    compute_metric: str = "js"


# --------------------------------------------------------------------------- models


# ---- model lifecycle (issue 19): read by ambiemo.models.lifecycle; `ambiemo plan` lists what it finds ----
class Lifecycle(_Strict):
    """When a served model came and goes, as the provider states it, and when that was checked."""

    checked: datetime.date  # the day the dates and successor below were read off the provider's pages
    source: str | None = None  # where they were read
    released: datetime.date | None = None
    retires: datetime.date | None = None  # shutdown: past = retired, future = scheduled; None: none announced
    successor: str | None = None  # the provider-named replacement (its model id, or a key under `models`)
    alias_ok: str | None = None  # why an undated alias is accepted (e.g. the provider offers no dated snapshot)
    accept_retired: bool = False  # run a retired model anyway: base_url points at a compatible endpoint on purpose
    served_as: list[str] = []  # other model names an answer may come back under that are accepted
    note: str | None = None


# ---- end of the model lifecycle block ----


class Model(_Open):
    """The keys every route shares; route-specific keys (asr, pricing, base_url, ...) pass through."""

    adapter: str
    checkpoint: str | None = None
    revision: str | None = None
    model_id: str | None = None
    dtype: Literal["float32", "float16", "bfloat16", "auto"] | None = None
    device_map: str | dict[str, Any] | None = None
    params_b: Annotated[float, Field(ge=0)] | None = None
    needs: str | None = None
    family: str | None = None
    trust_remote_code: bool = False
    batch_size: PositiveInt | None = None
    lifecycle: Lifecycle | None = None  # issue 19: see the lifecycle block above


# --------------------------------------------------------------------------- prompts, parsing, strategies


class Prompts(_Strict):
    label_order: Literal["canonical", "seeded", "per-utterance"] = "seeded"
    system: bool = True


class Parsing(_Strict):
    on_failure: Literal["uniform", "nan"] = "uniform"


class Inference(_Strict):
    # Share of a cell's utterances that may fail (broken audio, failed model calls) before the cell fails.
    max_failure_share: Annotated[float, Field(ge=0, le=1)] = 0.01


T = typing.TypeVar("T")
PerProfile = Union[T, dict[str, T]]  # noqa: UP007 (a generic alias needs Union)


class MaxNewTokens(_Strict):
    base: PerProfile[Annotated[int, Field(ge=0)]] = 8  # JSON answer: base + per_label x labels
    per_label: PerProfile[PositiveInt] = 10
    reasoning: PerProfile[Annotated[int, Field(ge=0)]] = 112  # cot adds this many for its reasoning
    single: PerProfile[PositiveInt] = 6  # one-word answer
    verifier: PerProfile[PositiveInt] = 4  # the verifier's 0-10 rating


class Likelihood(_Strict):
    length_alpha: Annotated[float, Field(ge=0)] = 1.0  # logprob / n_tokens^alpha: 0 summed, 1 per-token mean


class Sampling(_Strict):
    temperature: Annotated[float, Field(ge=0)] = 0.7
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0


class Verifier(_Strict):
    model: PerProfile[str | None] = None  # a key under `models`
    method: Literal["auto", "options", "generate"] = "auto"


class Baseline(_Strict):
    prompt: Literal["distribution", "single"] = "distribution"


class NoSettings(_Strict):
    pass


class WithBudgets(_Strict):
    budgets: PerProfile[Annotated[Budgets, Field(min_length=1)]] | None = None


class WeightedBon(WithBudgets):
    temperature: Annotated[float, Field(gt=0)] = 1.0  # weights = softmax(likelihood / temperature)


class SelfConsistency(WithBudgets):
    temperature: Annotated[float, Field(ge=0)] | None = None  # None: strategies.sampling.temperature


class LabelScoring(_Strict):
    variants: Annotated[list[Literal["lower", "title", "upper", "as-is"]], Field(min_length=1)] = ["lower", "title"]


class PromptEnsemble(WithBudgets):
    budgets: PerProfile[Annotated[list[Annotated[int, Field(ge=1, le=5)]], Field(min_length=1)]] | None = None


class OtherStrategy(_Open):
    """A registered strategy this schema does not know: its budgets are checked, the rest is its own."""

    budgets: PerProfile[Annotated[Budgets, Field(min_length=1)]] | None = None


class Strategies(_Strict):
    batch_size: PositiveInt = 8  # utterances per model call
    max_new_tokens: MaxNewTokens = Field(default_factory=MaxNewTokens)
    likelihood: Likelihood = Field(default_factory=Likelihood)
    sampling: Sampling = Field(default_factory=Sampling)
    verifier: Verifier = Field(default_factory=Verifier)
    baseline: Baseline = Field(default_factory=Baseline)
    cot: NoSettings = Field(default_factory=NoSettings)
    bon: WithBudgets = Field(default_factory=WithBudgets)
    w_bon: WeightedBon = Field(default_factory=WeightedBon, alias="w-bon")
    alm_v: WithBudgets = Field(default_factory=WithBudgets, alias="alm-v")
    w_alm_v: WithBudgets = Field(default_factory=WithBudgets, alias="w-alm-v")
    self_consistency: SelfConsistency = Field(default_factory=SelfConsistency, alias="self-consistency")
    label_scoring: LabelScoring = Field(default_factory=LabelScoring, alias="label-scoring")
    prompt_ensemble: PromptEnsemble = Field(default_factory=PromptEnsemble, alias="prompt-ensemble")
    others: dict[str, OtherStrategy] = Field({}, exclude=True)  # sections of strategies registered elsewhere

    @model_validator(mode="before")
    @classmethod
    def _registered_elsewhere(cls, data: Any) -> Any:
        """Sections named after a registered strategy the schema does not list go to ``others``."""
        if not isinstance(data, dict):
            return data
        known = _keys(cls)
        extra = [k for k in data if k not in known and k in _registered_strategies()]
        if not extra:
            return data
        return {**{k: v for k, v in data.items() if k not in extra}, "others": {k: data[k] for k in extra}}


class Params(_Strict):
    seed: int = 0
    run: Run | None = None
    profiles: dict[str, Profile] = {}
    paths: Paths = Field(default_factory=Paths)
    label_sets: dict[str, LabelSet] = {}
    datasets: dict[str, Dataset] = {}
    ambiguity: Ambiguity = Field(default_factory=Ambiguity)
    scoring: Scoring = Field(default_factory=Scoring)
    stats: Stats = Field(default_factory=Stats)
    figures: Figures = Field(default_factory=Figures)
    models: dict[str, Model] = {}
    prompts: Prompts = Field(default_factory=Prompts)
    parsing: Parsing = Field(default_factory=Parsing)
    inference: Inference = Field(default_factory=Inference)
    strategies: Strategies = Field(default_factory=Strategies)


# --------------------------------------------------------------------------- checking


def validate_params(params: Any, source: str = "params.yaml") -> Params:
    """The params as a ``Params`` model; every problem in one ``ParamsError``."""
    problems: list[tuple[str, str]] = []
    model = None
    try:
        model = Params.model_validate(params)
    except ValidationError as e:
        described = [_describe(err) for err in e.errors()]
        # A per-profile value that fails as a mapping also fails as a plain value: report the deeper error only.
        keys = [key for key, _ in described]
        problems += [(k, m) for k, m in described if not any(o.startswith(k + ".") for o in keys)]
    if isinstance(params, dict):
        problems += _cross_references(params)
    if problems:
        raise ParamsError(source, problems)
    assert model is not None
    return model


def strategy_defaults() -> dict[str, Any]:
    """Params ``strategies`` as the schema fills it in when nothing is given (unset optionals left out)."""
    return Strategies().model_dump(by_alias=True, exclude_none=True)


def _describe(err: Any) -> tuple[str, str]:
    loc = [str(x) for x in err["loc"] if not _is_union_tag(x)]
    dotted = ".".join(loc)
    if err["type"] == "extra_forbidden":
        known = _known_at(Params, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}"
        return dotted, f"unknown key; {hint}"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return dotted, f"{err['msg'][0].lower()}{err['msg'][1:]} (got {got})"


def _is_union_tag(x: Any) -> bool:
    # pydantic names the union member it tried (`int`, `dict[str,int]`, `constrained-int`) inside the loc
    return isinstance(x, str) and (
        "[" in x
        or x in {"int", "str", "float", "bool", "list", "dict", "none"}
        or "-" in x
        and x.startswith(("constrained", "function"))
    )


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def _known_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys allowed at ``loc`` (a path of keys from the top)."""
    node: Any = model  # a model class, or ("names", model) for a dict[str, model] section
    for key in loc:
        if isinstance(node, tuple):  # ``key`` is a name inside the mapping
            node = node[1]
            continue
        field = next((f for n, f in node.model_fields.items() if key in (n, f.alias)), None)
        node = _model_in(field.annotation) if field is not None else None
        if node is None:
            return []
    return [] if isinstance(node, tuple) else _keys(node)


def _model_in(annotation: Any) -> Any:
    """The model class an annotation holds (through Optional), ("names", model) for dict[str, model], else None."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is dict:
        inner = _model_in(typing.get_args(annotation)[1])
        return ("names", inner) if isinstance(inner, type) else None
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _registered_strategies() -> list[str]:
    from ambiemo.strategies import STRATEGIES

    return STRATEGIES.names()


def _cross_references(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Names that must point at something defined elsewhere in params."""
    problems: list[tuple[str, str]] = []
    profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
    run = params.get("run") if isinstance(params.get("run"), dict) else {}
    profile = run.get("profile")
    # Without a `profiles` section (a minimal params file) run.profile only labels per-profile values.
    if profile is not None and "profiles" in params and profile not in profiles:
        problems.append(("run.profile", f"unknown profile {profile!r}; profiles: {', '.join(profiles) or '(none)'}"))
    blocks = [("run", run)] + [(f"profiles.{k}", v) for k, v in profiles.items() if isinstance(v, dict)]
    strategies = set(_registered_strategies())
    for where, block in blocks:
        for section, known in (("models", params.get("models")), ("datasets", params.get("datasets"))):
            known = known if isinstance(known, dict) else {}
            for name in _names(block.get(section)):
                if name not in known:
                    problems.append((f"{where}.{section}", f"{name!r} is not under `{section}`{_close(name, known)}"))
        for name in _names(block.get("strategies")):
            if name not in strategies:
                problems.append(
                    (f"{where}.strategies", f"{name!r} is no registered strategy{_close(name, strategies)}")
                )
    label_sets = params.get("label_sets") if isinstance(params.get("label_sets"), dict) else {}
    for name, spec in (params.get("datasets") or {}).items() if isinstance(params.get("datasets"), dict) else []:
        if isinstance(spec, dict) and spec.get("label_set") is not None and spec["label_set"] not in label_sets:
            problems.append((f"datasets.{name}.label_set", f"{spec['label_set']!r} is not under `label_sets`"))
    problems += _per_profile(params, profiles, profile)
    return problems


def _per_profile(params: dict[str, Any], profiles: dict, profile: str | None) -> list[tuple[str, str]]:
    """Per-profile mappings name known profiles and cover the run's; the verifier is a model key."""
    problems: list[tuple[str, str]] = []
    strategies = params.get("strategies") if isinstance(params.get("strategies"), dict) else {}
    values: list[tuple[str, Any]] = []
    for name, sec in strategies.items():
        if isinstance(sec, dict) and "budgets" in sec:
            values.append((f"strategies.{name}.budgets", sec["budgets"]))
    for key, value in (
        (strategies.get("max_new_tokens") or {}).items() if isinstance(strategies.get("max_new_tokens"), dict) else []
    ):
        values.append((f"strategies.max_new_tokens.{key}", value))
    verifier = strategies.get("verifier") if isinstance(strategies.get("verifier"), dict) else {}
    if "model" in verifier:
        values.append(("strategies.verifier.model", verifier["model"]))
    for where, value in values:
        if not isinstance(value, dict) or not profiles:
            continue
        unknown = [k for k in value if k not in profiles]
        if unknown:
            problems.append((where, f"names unknown profiles {unknown}; profiles: {', '.join(profiles)}"))
        if profile in profiles and profile not in value:
            problems.append((where, f"has no entry for the run's profile {profile!r}"))
    models = params.get("models") if isinstance(params.get("models"), dict) else {}
    model = verifier.get("model")
    for name in (model.values() if isinstance(model, dict) else [model]) if models else []:
        if isinstance(name, str) and name not in models:
            problems.append(("strategies.verifier.model", f"{name!r} is not under `models`{_close(name, models)}"))
    return problems


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _close(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""
