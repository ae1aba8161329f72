"""Reading ``params.yaml``: one place that knows where each section lives.

``load_params`` checks the file against the schema (``ambiemo.core.params``) before any work;
``strategy_settings`` resolves params ``strategies`` (defaults from the schema, per-profile values
picked by ``run.profile``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found; run from the repository root or pass --params")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise TypeError(f"{path}: expected a mapping at the top level, got {type(params).__name__}")
    from ambiemo.core.params import validate_params

    validate_params(params, source=str(path))
    return params


def section(params: dict[str, Any], *keys: str) -> Any:
    """``section(params, "models", "gpt-4o")`` with an error that names the missing key."""
    node: Any = params
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[: i + 1])
            raise KeyError(f"params.yaml has no {where!r}")
        node = node[key]
    return node


def cache_dir(params: dict[str, Any]) -> Path:
    """The generation cache's folder: $AMBIEMO_CACHE_DIR, else params ``paths.cache_dir``."""
    env = os.environ.get("AMBIEMO_CACHE_DIR")
    if env:
        return Path(env)
    from ambiemo.core.params import Paths

    return Path((params.get("paths") or {}).get("cache_dir") or Paths().cache_dir)


def strategy_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Params ``strategies`` with the schema's defaults under it, and per-profile values resolved.

    ``budgets``, ``verifier.model`` and each ``max_new_tokens`` entry may be a mapping from
    profile name to value (the verifier is ``cascade-smollm2`` in the demo and ``gpt-4o`` in the
    paper); ``run.profile`` picks one. Values are not checked here (``load_params`` did that);
    a strategy refuses what it cannot run.
    """
    from ambiemo.core.params import strategy_defaults

    user = dict(params.get("strategies") or {})
    settings: dict[str, Any] = {}
    for key, default in strategy_defaults().items():
        given = user.get(key)
        if isinstance(default, dict):
            given = dict(given or {})
            settings[key] = {**given, **{k: v for k, v in default.items() if k not in given}}
        else:
            settings[key] = user.get(key, default)
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
