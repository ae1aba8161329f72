"""The schema of ``params.yaml``: every key, its type, its allowed values and its default, stated once.

Top-level keys and most sections are strict (unknown keys refused, values taken as written).
``models.<key>`` and ``datasets.<name>`` entries check their shared keys strictly and let adapter- or
loader-specific keys through (the adapter or loader validates those); a strategy's own section is
checked by that strategy's ``Settings``. ``ambiemo.core.validation`` checks a params mapping against
this schema and its cross-references.

A value that may differ per profile (``budgets``, ``verifier.model``, ``max_new_tokens.*``) is
``PerProfile``: the value itself, or a mapping profile name -> value.
"""

from __future__ import annotations

import datetime
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]
Budgets = list[PositiveInt]


class _Strict(BaseModel):
    # strict: "5" is no integer and `true` no limit; a YAML value is taken as written or refused
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)


# --------------------------------------------------------------------------- run and profiles


class Profile(_Strict):
    datasets: list[str]
    models: list[str]
    strategies: list[str]
    limit: Annotated[int, Field(ge=0)] = 0  # utterances per dataset, 0 = all
    reference_models: list[str] = []  # the study's rows kept for reference, not run (retired models)


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
    calibration_folds: Annotated[int, Field(ge=2)] = 5  # ambiemo.scoring.calibration
    calibration_fit_rows: PositiveInt = 500  # ambiemo.scoring.calibration: the most utterances one fold's fit reads


class Stats(_Strict):
    baseline: str = "baseline"
    paired_metrics: list[str] = ["js", "bc", "correct"]
    permutation_resamples: PositiveInt = 2000
    sign_flip_normal_from: PositiveInt = (
        5000  # ambiemo.stats.permutation: from this many clusters, the normal approximation
    )
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    holm_family: list[str] = ["dataset", "model"]
    mixed_model_metric: str = "js"
    budget: Literal["max", "min"] = "max"
    speaker_component_max_utterances: PositiveInt = 1000
    grouped_fit_min_rows: PositiveInt = 100_000  # ambiemo.stats.grouped_fit: at this size, no per-group loops
    family_term: Literal["fixed", "none"] = "fixed"  # ambiemo.stats.regression: the family term
    power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    power_gains: dict[str, Annotated[float, Field(gt=0)]] = {"js": 0.02}
    annotator_repeats: PositiveInt = 20  # ambiemo.stats.annotators
    annotator_tau_stable: Annotated[float, Field(gt=-1, le=1)] = 0.9


class Figures(_Strict):
    folder: str = "figures"
    formats: list[Literal["pdf", "png", "svg"]] = ["pdf", "png"]
    dpi: PositiveInt = 200
    heatmap_metrics: list[str] = ["js", "bc", "r2", "accuracy"]
    ambiguity_metric: str = "js"
    interaction_metric: str = "js"
    compute_metric: str = "js"


# --------------------------------------------------------------------------- models


# ---- model lifecycle: read by ambiemo.models.lifecycle; `ambiemo plan` lists what it finds ----
Day = Annotated[datetime.date, Field(strict=False)]  # a YAML date, or the same as an ISO string "2026-12-07"


class Lifecycle(_Strict):
    """When a served model came and goes, as the provider states it, and when that was checked."""

    checked: Day  # the day the dates and successor below were read off the provider's pages
    source: str | None = None  # where they were read
    released: Day | None = None
    retires: Day | None = None  # shutdown: past = retired, future = scheduled; None: none announced
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
    lifecycle: Lifecycle | None = None  # see the lifecycle block above


# --------------------------------------------------------------------------- prompts, parsing, strategies


class Prompts(_Strict):
    label_order: Literal["canonical", "seeded", "per-utterance"] = "seeded"
    system: bool = True


class Parsing(_Strict):
    # a failed answer: uniform | nan | neutral (AER-LLM) | drop (scaling-ambiguity-SER); see
    # ambiemo.core.failures.FAILURE_POLICIES
    on_failure: Literal["uniform", "nan", "neutral", "drop"] = "uniform"


T = typing.TypeVar("T")
PerProfile = Union[T, dict[str, T]]  # noqa: UP007 (a generic alias needs Union)


class Inference(_Strict):
    # Share of a cell's utterances that may fail (broken audio, failed model calls) before the cell fails.
    max_failure_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    # Wall-clock seconds of each call in the predictions (wall_s, verifier_wall_s): a measurement of the
    # machine, not of the method, so a profile whose outputs must be byte-identical on any machine (the
    # demo, checked by `.ci/run`) leaves them out (NaN); token counts are recorded either way.
    record_wall_s: PerProfile[bool] = True


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


class Candidates(_Strict):
    """How many candidates one request may ask for (beams, samples), per kind of route.

    A bound, not a target: 10,000 beams would be accepted by a model and exhaust the GPU's memory
    long before an answer. Raise a bound on purpose where a route can take more; ``ambiemo plan``
    shows each model's bound beside its planned memory."""

    local: PositiveInt = 64  # transformers in this process: beams/samples share one forward pass
    served: PositiveInt = 128  # vLLM and other OpenAI-compatible servers (`n`, `best_of`)
    api: PositiveInt = 16  # hosted APIs (OpenAI `n`, Gemini `candidate_count`: at most 8 there)


class Strategies(_Open):
    """The settings every strategy shares. Each strategy's own section (``strategies.<name>``) is
    checked by that strategy's ``Settings`` (``ambiemo.strategies``), which registers the check."""

    batch_size: PositiveInt = 8  # utterances per model call
    max_new_tokens: MaxNewTokens = Field(default_factory=MaxNewTokens)
    likelihood: Likelihood = Field(default_factory=Likelihood)
    sampling: Sampling = Field(default_factory=Sampling)
    verifier: Verifier = Field(default_factory=Verifier)
    max_candidates: Candidates = Field(default_factory=Candidates)


class Params(_Strict):
    seed: Annotated[int, Field(ge=0)] = 0  # numpy and torch take non-negative seeds only
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
