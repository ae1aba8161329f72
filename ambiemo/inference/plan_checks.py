"""What a model of the plan lacks on this machine, before anything runs: API keys, weights, a GPU.

Called by ``ambiemo.inference.plan`` for every model of the run; every finding is a line of the
plan's ``missing`` with its fix, never a failed stage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ambiemo.inference.plan import ModelPlan, Plan


def check_model(key: str, mp: ModelPlan, spec: Mapping[str, Any], out: Plan, pilot: Mapping[str, float] | None) -> None:
    """What ``key`` lacks here (an API key, weights on disk, a GPU), into ``out.missing``; GPU hours from a pilot."""
    if not mp.local:
        names = spec.get("api_key_env") or (
            ["GEMINI_API_KEY", "GOOGLE_API_KEY"] if mp.route == "gemini" else ["OPENAI_API_KEY"]
        )
        names = [names] if isinstance(names, str) else list(names)
        if mp.route != "openai-compatible" and not any(os.environ.get(n) for n in names):
            out.missing.append(
                {
                    "what": f"model {key}: no API key in the environment ({' or '.join(names)})",
                    "fix": f"export {names[0]}=... (keys are read from the environment only)",
                }
            )
        return
    if pilot and pilot.get("s_per_call"):
        mp.gpu_hours = round(mp.new_calls * float(pilot["s_per_call"]) / 3600.0, 2)
    checkpoint = str(spec.get("checkpoint") or "")
    remote = checkpoint and not checkpoint.startswith("tiny:") and "/" in checkpoint and not Path(checkpoint).exists()
    if remote and not _weights_cached(checkpoint, spec.get("revision")):
        out.missing.append(
            {
                "what": f"model {key}: weights of {checkpoint}@{spec.get('revision')} not on disk",
                "fix": f"`ambiemo models fetch {key}` on a machine with network (or set HF_HOME to where they are)",
            }
        )
    need = _gpu_gb(str(spec.get("needs") or ""))
    if need:
        have = _gpu_free_gb()
        if have is None:
            out.missing.append(
                {
                    "what": f"model {key}: needs a GPU with {need:g} GB; none is visible here",
                    "fix": "run the profile on a GPU machine (see README: the full study on GPUs)",
                }
            )
        elif have < need:
            out.missing.append(
                {
                    "what": f"model {key}: needs {need:g} GB of GPU memory, {have:.0f} GB free",
                    "fix": "a larger GPU, or lower batch_size / use the vLLM pool",
                }
            )


def _weights_cached(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return False
    hit = try_to_load_from_cache(repo_id, "config.json", revision=revision or None)
    return isinstance(hit, str)


def _gpu_gb(needs: str) -> float | None:
    import re

    m = re.search(r"GPU\s+(\d+(?:\.\d+)?)\s*GB", needs)
    return float(m.group(1)) if m else None


def _gpu_free_gb() -> float | None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return free / 2**30
