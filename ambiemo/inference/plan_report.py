"""The plan for people (``format_plan``) and the pilot that measures a model's throughput (``pilot_run``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ambiemo.inference.plan import Plan, coverage


def _share(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


def format_plan(p: Plan) -> str:
    """The plan as a table for people (every figure an estimate)."""
    lines = [f"plan for profile {p.profile!r} (estimates: see `ambiemo.inference.plan` for how each is made)", ""]
    for ds, info in p.datasets.items():
        n = info["utterances"]
        lines.append(
            f"dataset {ds:<14} utterances {n if n is not None else 'unknown':>8}   mean clip "
            f"{info['mean_clip_s']:.1f} s   ({info['source']})"
        )
    lines.append("")
    head = (
        f"{'model':<22} {'route':<18} {'cells':>5} {'written':>7} {'calls':>10} {'unique':>10} {'cached':>7} "
        f"{'verifier':>9} "
        f"{'prompt Mtok':>11} {'gen Mtok':>9} {'USD':>9} {'GPU h':>7} {'cand/bound':>10} {'mem GB':>7}"
    )
    lines += [head, "-" * len(head)]
    for m in p.models.values():
        usd = "-" if m.usd is None else f"{m.usd:,.2f}" + ("*" if m.rate_assumed else "")
        gpu = "-" if not m.local else ("pilot?" if m.gpu_hours is None else f"{m.gpu_hours:,.1f}")
        lines.append(
            f"{m.key:<22} {m.route:<18} {m.cells:>5} {m.cells_written:>7} {m.calls:>10,} {m.new_calls:>10,} "
            f"{_share(coverage(m)):>7} "
            f"{m.verifier_calls:>9,} {m.prompt_tokens / 1e6:>11.2f} {m.gen_tokens / 1e6:>9.2f} {usd:>9} "
            f"{gpu:>7} {f'{m.max_candidates}/{m.candidate_bound}':>10} "
            f"{'-' if m.memory_gb is None else f'{m.memory_gb:,.1f}':>7}"
        )
    lines.append(
        f"\nAPI spend, all models: about USD {p.usd:,.2f}"
        + (" (* audio token rate assumed, not documented)" if any(m.rate_assumed for m in p.models.values()) else "")
    )
    lines.append(
        "cand/bound: the most candidates one request asks / the route's bound (params strategies.max_candidates); "
        "mem GB: weights in bf16 plus the KV cache of one batch at that width, an estimate for local models"
    )
    if p.missing:
        lines.append("\nmissing before this profile can run:")
        lines += [f"  - {m['what']}\n      fix: {m['fix']}" for m in p.missing]
    else:
        lines.append("\nnothing missing: the profile can run here")
    if p.notes:
        lines.append("\nnotes:")
        lines += [f"  - {n}" for n in p.notes]
    return "\n".join(lines)


def pilot_run(params: Mapping[str, Any], key: str, manifest: str | os.PathLike, n: int) -> dict[str, float]:
    """Measure a model's throughput on ``n`` utterances (the baseline strategy, cache bypassed)."""
    import tempfile
    import time

    from ambiemo.core.config import cache_dir as weights_dir
    from ambiemo.inference.cache import CachedModel, GenerationCache
    from ambiemo.inference.run import model_spec, run_inference
    from ambiemo.models import load_model

    model = load_model(key, model_spec(dict(params), key), cache_dir=weights_dir(dict(params)))
    with tempfile.TemporaryDirectory(prefix="ambiemo-pilot-") as tmp:
        t = time.perf_counter()
        df = run_inference(
            dict(params),
            key,
            "baseline",
            manifest,
            Path(tmp) / "pilot.parquet",
            limit=n,
            model=CachedModel(model, GenerationCache(Path(tmp) / "cache")),
        )
        wall = time.perf_counter() - t
    calls = max(int(df["model_calls"].sum()), 1)
    return {
        "s_per_call": wall / calls,
        "gen_tokens_per_candidate": float(df["gen_tokens"].sum()) / calls,
        "utterances": len(df),
    }
