"""What a run reads from params before any work: the model behind the cache, the failure share."""

from __future__ import annotations

from typing import Any

from ambiemo.models.base import AudioLanguageModel

# A model key that needs no params entry: the scripted test double (ambiemo.models.fake).
FAKE_SPEC = {"adapter": "fake"}
# Settings of params ``strategies`` that say how a run is done, not what it computes: left out of the
# outputs' provenance, so that the files are byte-identical whatever they are.
RUN_ONLY_SETTINGS = frozenset({"batch_size"})


def cell_provenance(params: dict[str, Any], dataset: str, **parts: Any) -> dict[str, Any]:
    """A cell's provenance (``ambiemo.core.provenance``): the params that change its numbers (seed,
    prompts, parsing, and strategies without their run-only settings), the dataset, and ``parts``
    (model, strategy, ...). A run and a skipped cell record it alike."""
    from ambiemo.core.provenance import provenance

    relevant = {k: params[k] for k in ("seed", "prompts", "parsing", "strategies") if k in params}
    if "strategies" in relevant:  # how utterances are batched changes no number, so not the files either
        relevant["strategies"] = {k: v for k, v in relevant["strategies"].items() if k not in RUN_ONLY_SETTINGS}
    return provenance(relevant, params.get("seed"), dataset=dataset, **parts)


def inference_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Params ``inference`` with the schema's defaults (``ambiemo.core.params.Inference``), per-profile
    values resolved for ``run.profile``."""
    from ambiemo.core.config import by_profile, settings

    out = settings(params, "inference")
    profile = (params.get("run") or {}).get("profile")
    out["record_wall_s"] = bool(by_profile(out["record_wall_s"], profile, "inference.record_wall_s"))
    return out


def model_spec(params: dict[str, Any], key: str) -> dict[str, Any]:
    """Params ``models.<key>``; the ``fake`` model needs no entry."""
    models = params.get("models") or {}
    if key in models:
        return dict(models[key])
    if key == "fake":
        return dict(FAKE_SPEC)
    known = ", ".join(sorted(models)) or "(none)"
    raise KeyError(f"params.yaml models has no {key!r}; defined: {known} (or `fake`, the offline test double)")


def build_model(params: dict[str, Any], key: str, cache: Any = None, **kwargs: Any) -> AudioLanguageModel:
    """The model ``key`` behind the generation cache (``cache``: a GenerationCache, default from params)."""
    from ambiemo.core.config import cache_dir
    from ambiemo.inference.cache import CachedModel, GenerationCache
    from ambiemo.models import load_model

    cache = cache if cache is not None else GenerationCache(cache_dir(params))
    # Local adapters keep built or converted weights (tiny models, the cascade's LLM) beside the cache.
    kwargs.setdefault("cache_dir", cache_dir(params))
    kwargs.setdefault("weights_dir", (params.get("paths") or {}).get("weights_dir"))  # fetched weights, if any
    return CachedModel(load_model(key, model_spec(params, key), **kwargs), cache)
