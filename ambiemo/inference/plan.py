"""What a profile will cost before it runs: cells, calls, tokens, dollars, GPU hours, and what is missing.

``plan(params)`` reads only params and, where they exist, the prepared manifests; it calls no model.
Every figure is an estimate and says so:

- **calls**: the requests each strategy sends per utterance at its budgets (the counts follow the
  strategies' own rules: one beam search per width, the first N of N_max samples, the verifier
  once per candidate). Requests that two cells send identically (``w-bon`` asks ``bon``'s beam
  searches, ``w-alm-v`` ``alm-v``'s candidates and ratings) count once under *unique*, on the
  model that serves them (a verifier's unique requests include those of other models' cells).
- **cached**: the share of the unique requests' cache entries (one per candidate of a generation,
  one per option-scoring request) that the generation cache (``paths.cache_dir``) already holds for
  the model's identity (built from its params entry, nothing loaded). An estimate from entry counts:
  entries of another limit or dataset count too, while a verifier rates identical candidate texts
  once (so a finished run can show less than 100%); unknown where the identity cannot be built here.
- **tokens**: prompt text at about 4 characters per token, plus audio tokens at the model's rate
  (``models.<key>.audio_tokens_per_s``; defaults below) times the clips' mean duration; generated
  tokens at the prompt's ``max_new_tokens`` (an upper bound; plus a thinking model's ``thinking_budget``),
  or at the mean a pilot measured.
- **USD**: the model entry's ``pricing`` (USD per million tokens, dated in params.yaml).
- **GPU hours** of a local model: only from a pilot's measured throughput (``ambiemo plan --pilot N``
  runs the baseline on N utterances); without one, unknown.
- **missing**: corpus roots and audio, API keys in the environment, weights on disk, a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ambiemo.inference.plan_checks import check_model
from ambiemo.strategies.planning import Request, Route, max_new_tokens

CHARS_PER_TOKEN = 4.0
# Audio tokens per second of a clip, by route, where params give none. Whisper-encoder ALMs pool
# 50 frames/s to 25 tokens/s (Qwen2-Audio: 1 s of audio -> 25 tokens); Gemini documents 32 tokens
# per second of audio; OpenAI documents no rate for gpt-audio: 10/s is an assumption, labelled so.
AUDIO_TOKENS_PER_S = {"gemini": 32.0, "openai-chat": 10.0, "openai-compatible": 25.0}
DEFAULT_AUDIO_TOKENS_PER_S = 25.0
ASSUMED_RATES = {"openai-chat"}
# KV cache bytes per token per billion parameters, for the memory estimate: grouped-query attention as
# in the Qwen2 7B text model (28 layers x 2 x 4 KV heads x 128 x 2 bytes = 57 kB per token, about 8 kB
# per B). A model with full multi-head attention needs up to ten times this: the figure is a floor.
KV_BYTES_PER_TOKEN_PER_B = 8.2e3
DEFAULT_CLIP_S = 4.5  # when no manifest gives durations: typical of acted emotional speech corpora
# Whole-corpus sizes as their owners publish them, for a plan before `prepare` has run (the prepared
# subset is smaller: votes outside the label set, exclusions, a split). Others: `--utterances DS=N`.
PUBLISHED_SIZES = {"crema-d": 7442, "iemocap": 10039}


@dataclass
class ModelPlan:
    key: str
    route: str
    local: bool
    cells: int = 0
    calls: int = 0
    new_calls: int = 0  # unique requests this model serves (printed as "unique")
    needed_entries: float = 0.0  # cache entries those requests make: one per generated candidate or scoring
    cached_entries: int | None = None  # entries the generation cache holds for the model's identity
    verifier_calls: int = 0
    prompt_tokens: float = 0.0  # text and audio
    audio_tokens: float = 0.0  # the audio part of prompt_tokens
    gen_tokens: float = 0.0
    usd: float | None = None
    gpu_hours: float | None = None
    audio_tokens_per_s: float = DEFAULT_AUDIO_TOKENS_PER_S
    rate_assumed: bool = False
    cells_written: int = 0
    thinking_tokens: int = 0  # billed reasoning tokens per candidate (Gemini 2.5 `thinking_budget`), at most
    max_candidates: int = 0  # the most candidates one request asks for (beams or samples)
    candidate_bound: int = 0  # what params allow one request to ask this route for
    max_tokens: float = 0.0  # the longest sequence of one candidate: prompt (text and audio) plus generation
    batch_size: int = 1  # utterances per call
    memory_gb: float | None = None  # local routes: weights plus the KV cache of one batch at max_candidates


@dataclass
class Plan:
    profile: str | None
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, ModelPlan] = field(default_factory=dict)
    missing: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "estimate": True,
            "datasets": self.datasets,
            "models": {k: {**asdict(v), "cached_share": coverage(v)} for k, v in self.models.items()},
            "missing": self.missing,
            "notes": self.notes,
        }

    @property
    def usd(self) -> float:
        return sum(m.usd or 0.0 for m in self.models.values())


def _dataset_size(
    params: Mapping[str, Any], name: str, results: Path, given: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Utterances and mean clip duration: from the prepared manifest where it exists, else as given
    (``--utterances``), else the corpus's published size."""
    path = results / "prepared" / name / "manifest.parquet"
    limit = int((params.get("run") or {}).get("limit") or 0)
    if path.exists():
        from ambiemo.data.manifest import read_manifest

        df = read_manifest(path).df
        n = len(df)
        dur = df["duration_s"].dropna() if "duration_s" in df else []
        mean_s = float(dur.mean()) if len(dur) else DEFAULT_CLIP_S
        info = {"utterances": n, "mean_clip_s": round(mean_s, 2), "source": "prepared manifest"}
    elif given and name in given:
        info = {"utterances": int(given[name]), "mean_clip_s": DEFAULT_CLIP_S, "source": "given (--utterances)"}
    elif name in PUBLISHED_SIZES:
        info = {
            "utterances": PUBLISHED_SIZES[name],
            "mean_clip_s": DEFAULT_CLIP_S,
            "source": "not prepared: the corpus's published size, an upper bound",
        }
    else:
        info = {"utterances": None, "mean_clip_s": DEFAULT_CLIP_S, "source": "not prepared yet"}
    if limit and info["utterances"] is not None:
        info["utterances"] = min(limit, info["utterances"])
    return info


def _capabilities(key: str, spec: Mapping[str, Any]) -> dict[str, bool]:
    from ambiemo.models import MODELS, _import_adapters

    _import_adapters()
    cls = MODELS.get(spec["adapter"])
    if hasattr(cls, "spec_capabilities"):
        caps = cls.spec_capabilities(dict(spec))
    else:  # adapters load lazily: building one reads its spec, loads nothing
        caps = cls.from_spec(key, dict(spec)).capabilities
    return {"logprobs": caps.logprobs, "beam_search": caps.beam_search, "option_scoring": caps.option_scoring}


def _prompt_chars(params: Mapping[str, Any], labels: list[str]) -> dict[str, float]:
    from ambiemo.strategies.prompts import PromptBook

    book = PromptBook.from_params(dict(params), labels)
    chars = {kind: sum(len(m.text) for m in book.ask(kind, "u").messages) for kind in ("distribution", "cot", "single")}
    for k in range(5):
        try:
            chars[f"paraphrase-{k}"] = sum(len(m.text) for m in book.paraphrase(k, "u").messages)
        except (IndexError, ValueError):
            break
    chars["verifier"] = chars["distribution"] + 200  # the question, an answer of ~50 tokens, the rating ask
    return chars


API_ROUTES = ("openai-chat", "gemini", "openai-compatible")


def plan(
    params: Mapping[str, Any],
    *,
    results: str | os.PathLike | None = None,
    pilot: Mapping[str, Mapping[str, float]] | None = None,
    utterances: Mapping[str, int] | None = None,
) -> Plan:
    """The cost of the active run (params ``run``); ``pilot``: per model key, measured
    ``{"s_per_call": ..., "gen_tokens_per_candidate": ...}`` from ``pilot_run``; ``utterances``:
    per dataset, a size to assume where no manifest is prepared."""
    from ambiemo.inference.run import model_spec
    from ambiemo.strategies import strategy_settings

    run = params.get("run") or {}
    results = Path(results or (params.get("paths") or {}).get("results", "results"))
    out = Plan(profile=run.get("profile"))
    ctx = _Ctx(params, strategy_settings(dict(params)), results, pilot or {}, out, dict(utterances or {}))
    for ds in run.get("datasets") or []:
        _plan_dataset(ctx, ds)
    held = _cache_entries(params)
    for key, mp in out.models.items():
        spec = model_spec(dict(params), key)
        _price(mp, spec)
        check_model(key, mp, spec, out, ctx.pilot.get(key))
        _memory(mp, spec, dict(params), ctx.settings)
        mp.cached_entries = _cached_for(key, spec, held, out)
    from ambiemo.models.lifecycle import findings  # retired, retiring and unpinned models

    for f in findings(params):
        (out.missing if f["kind"] == "retired" else out.notes).append(
            {"what": f["what"], "fix": f["fix"]} if f["kind"] == "retired" else f"{f['what']}; fix: {f['fix']}"
        )
    return out


def _memory(mp: ModelPlan, spec: Mapping[str, Any], params: dict[str, Any], settings: Mapping[str, Any]) -> None:
    """The route's candidate bound, and for a local model with ``params_b`` the memory one batch needs
    at the widest request: bf16 weights plus the KV cache (an estimate, KV_BYTES_PER_TOKEN_PER_B)."""
    from ambiemo.strategies import candidate_bound

    mp.candidate_bound = candidate_bound(params, mp.key)
    mp.batch_size = int(spec.get("batch_size") or settings["batch_size"])
    if mp.local and spec.get("params_b") is not None:
        b = float(spec["params_b"])
        kv = mp.batch_size * max(mp.max_candidates, 1) * mp.max_tokens * b * KV_BYTES_PER_TOKEN_PER_B
        mp.memory_gb = round(2 * b * 1e9 / 2**30 + kv / 2**30, 1)


def _cache_entries(params: Mapping[str, Any]) -> dict[str, int]:
    """Entries per identity_sha in the generation cache, or {} where there is no cache yet."""
    from ambiemo.core.config import cache_dir
    from ambiemo.inference.cache import GenerationCache

    folder = cache_dir(dict(params))
    if not folder.exists():
        return {}
    return {row["identity_sha"]: int(row["entries"]) for row in GenerationCache(folder).identity_stats()}


def _cached_for(key: str, spec: Mapping[str, Any], held: Mapping[str, int], out: Plan) -> int | None:
    """The cache entries held for the identity ``key``'s params entry builds (nothing is loaded)."""
    from ambiemo.inference.cache import identity_sha
    from ambiemo.models import load_model

    try:
        identity = load_model(key, dict(spec)).identity
    except Exception as exc:  # a route whose package is absent here, remote code not allowed, ...
        out.notes.append(f"{key}: cache coverage unknown (its identity cannot be built here: {exc})")
        return None
    return held.get(identity_sha(identity), 0)


def coverage(mp: ModelPlan) -> float | None:
    """The share of ``mp``'s needed cache entries already held (at most 1), or None where unknown."""
    if mp.cached_entries is None or not mp.needed_entries:
        return None
    return min(1.0, mp.cached_entries / mp.needed_entries)


@dataclass
class _Ctx:
    params: Mapping[str, Any]
    settings: dict[str, Any]
    results: Path
    pilot: Mapping[str, Mapping[str, float]]
    out: Plan
    utterances: dict[str, int]

    def model(self, key: str) -> ModelPlan:
        from ambiemo.inference.run import model_spec

        if key not in self.out.models:
            spec = model_spec(dict(self.params), key)
            route = spec["adapter"]
            mp = ModelPlan(key, route, route not in API_ROUTES)
            mp.audio_tokens_per_s = float(
                spec.get("audio_tokens_per_s") or AUDIO_TOKENS_PER_S.get(route, DEFAULT_AUDIO_TOKENS_PER_S)
            )
            mp.rate_assumed = "audio_tokens_per_s" not in spec and route in ASSUMED_RATES
            mp.thinking_tokens = int(spec.get("thinking_budget") or 0)
            self.out.models[key] = mp
        return self.out.models[key]

    def capabilities(self, key: str) -> dict[str, bool]:
        from ambiemo.inference.run import model_spec

        return _capabilities(key, model_spec(dict(self.params), key))

    def verifier_uses_options(self, key: str | None) -> bool:
        if not key:
            return False
        method = self.settings["verifier"].get("method", "auto")
        return method == "options" or (method == "auto" and self.capabilities(key)["option_scoring"])


def _plan_dataset(ctx: _Ctx, ds: str) -> None:
    from ambiemo.strategies import STRATEGIES

    params, out, run = ctx.params, ctx.out, ctx.params.get("run") or {}
    info = _dataset_size(params, ds, ctx.results, ctx.utterances)
    spec = (params.get("datasets") or {}).get(ds, {})
    label_sets = params.get("label_sets") or {}
    labels = list((label_sets.get(spec.get("label_set"), {}) or {}).get("labels", ["a", "b", "c", "d"]))
    info["labels"] = len(labels)
    out.datasets[ds] = info
    root = spec.get("root")
    if ds != "demo" and (not root or not Path(str(root)).exists()):
        out.missing.append(
            {
                "what": f"dataset {ds}: corpus root {root!r} not found",
                "fix": f"set datasets.{ds}.root in params.yaml to the corpus folder",
            }
        )
    if info["utterances"] is None:
        out.notes.append(
            f"{ds}: not prepared yet, so calls and tokens are not counted for it "
            f"(`dvc repro prepare@{ds}` first, then plan again)"
        )
    chars = _prompt_chars(params, labels)
    seen: set[tuple] = set()  # requests already counted for this dataset: cells that share them pay once
    verifier_key = ctx.settings["verifier"].get("model")
    for key in run.get("models") or []:
        mp, caps = ctx.model(key), ctx.capabilities(key)
        for strat in run.get("strategies") or []:
            cls = STRATEGIES.get(strat)
            lacking = [c for c in cls.needs if not caps.get(c, False)]
            if lacking:
                out.notes.append(f"{ds}/{key}/{strat}: skipped (the route lacks {', '.join(lacking)})")
                continue
            mp.cells += 1
            mp.cells_written += (ctx.results / "predictions" / ds / key / f"{strat}.parquet").exists()
            own = ctx.settings.get(strat, {})
            budgets = [1] if cls.budget_name is None else sorted(own.get("budgets") or [1])
            vkey = verifier_key if cls.uses_verifier else None
            route = Route(bool(caps.get("beam_search")), len(labels), ctx.verifier_uses_options(vkey))
            for req in cls.requests(own, budgets, route):
                target = ctx.model(key if req.role == "model" else vkey)
                if req.kind == "generate":
                    target.max_candidates = max(target.max_candidates, req.n)
                if info["utterances"] is not None:
                    _count(ctx, mp, target, req, info, chars, labels, seen)


def _count(
    ctx: _Ctx,
    mp: ModelPlan,
    target: ModelPlan,
    req: Request,
    info: Mapping[str, Any],
    chars: Mapping[str, float],
    labels: list[str],
    seen: set[tuple],
) -> None:
    """Add ``req`` for every utterance: to the asking cell's calls, and (once) to the target's compute."""
    count = info["utterances"] * req.per_utterance
    if req.role == "model":
        mp.calls += count
    else:
        mp.verifier_calls += count
    sig = (target.key, *req.signature(), req.per_utterance)
    if sig in seen:
        return
    seen.add(sig)
    target.new_calls += count
    target.needed_entries += count * (req.n if req.kind == "generate" else 1)
    audio = count * info["mean_clip_s"] * target.audio_tokens_per_s
    target.audio_tokens += audio
    target.prompt_tokens += audio + count * chars.get(req.prompt, chars["distribution"]) / CHARS_PER_TOKEN
    if req.kind == "generate":
        measured = (ctx.pilot.get(target.key) or {}).get("gen_tokens_per_candidate")
        per = measured if measured else max_new_tokens(ctx.settings, req.prompt, len(labels)) + target.thinking_tokens
        target.gen_tokens += count * req.n * per
        prompt = info["mean_clip_s"] * target.audio_tokens_per_s + chars.get(req.prompt, 0) / CHARS_PER_TOKEN
        target.max_tokens = max(target.max_tokens, prompt + max_new_tokens(ctx.settings, req.prompt, len(labels)))


def _price(mp: ModelPlan, spec: Mapping[str, Any]) -> None:
    pricing = spec.get("pricing")
    if mp.local or not pricing:
        return
    text_rate = float(pricing.get("input_per_mtok", 0.0))
    audio_rate = float(pricing.get("audio_input_per_mtok", text_rate))
    out_rate = float(pricing.get("output_per_mtok", 0.0))
    text_tok = mp.prompt_tokens - mp.audio_tokens
    audio_tok = mp.audio_tokens
    mp.usd = round((text_tok * text_rate + audio_tok * audio_rate + mp.gen_tokens * out_rate) / 1e6, 2)
