"""Reading ``params.yaml``: one place that knows where each section lives."""

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
    return Path(params.get("paths", {}).get("cache_dir", ".cache/ambiemo"))
