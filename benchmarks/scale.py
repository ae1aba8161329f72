"""The analysis at study scale: score, aggregate and stats on synthetic tables of the ladder's size.

The ladder profile's full size is IEMOCAP, MSP-Podcast and CREMA-D at their real sizes (about
47,500 utterances), 16 models and every strategy at every budget of the profile (31 strategy ×
budget readouts): about 23.6 M model score rows. This script writes manifests and predictions of
that shape with the project's own writers (``write_manifest``, and ``write_predictions`` with each
cell's candidates beside it), then runs each stage function (``write_score_run``, ``aggregate_run``,
``stats_run``) in a fresh process and records its wall time and peak resident memory. It does so
at ``--scale`` and at a tenth of it, so that the growth ratio (time at 10× the rows over time at
the rows) shows whether a stage's cost is linear in the rows (the target: at most 11).

    .venv/bin/python benchmarks/scale.py                     # 1% of the study (~240 k rows), minutes
    .venv/bin/python benchmarks/scale.py --scale 0.001       # seconds
    .venv/bin/python benchmarks/scale.py --scale 1           # the study's full size (targets: 10 min, 6 GB)
    .venv/bin/python benchmarks/scale.py --rows 2000000      # a number of model score rows instead

Writes ``results/bench/scale.json``: ``{"stages": {name: {"rows", "wall_s", "peak_gb"}},
"growth_10x": ratio, ...}`` (``stages`` at ``--scale``; ``small`` the same at a tenth; per-stage
growth under ``growth_by_stage``). The CPU is shared, so the load average is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("neutral", "happy", "angry", "sad")
# The ladder's corpora: (name, utterances, speakers) at their real sizes (MSP-Podcast's test sets).
DATASETS = (("iemocap", 10_039, 10), ("msp-podcast", 30_000, 1_200), ("crema-d", 7_442, 91))
BINS = {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]}
N_MODELS = 16
STAGES = ("score", "aggregate", "stats")


def ladder_budgets() -> dict[str, list[int]]:
    """Every strategy of the ladder profile and its budgets, from params.yaml."""
    from ambiemo.core.config import by_profile, load_params
    from ambiemo.strategies import strategy_settings

    params = load_params(ROOT / "params.yaml")
    params["run"] = {**params["run"], "profile": "ladder"}
    settings = strategy_settings(params)
    out = {}
    for name in params["profiles"]["ladder"]["strategies"]:
        spec = settings.get(name) or {}
        out[name] = [int(b) for b in by_profile(spec.get("budgets", [1]), "ladder", f"strategies.{name}.budgets")]
    return out


def model_rows(scale: float, budgets: dict[str, list[int]], n_models: int = N_MODELS) -> int:
    n = sum(max(8, round(u * scale)) for _, u, _ in DATASETS)
    return n * n_models * sum(len(b) for b in budgets.values())


def _manifest(name: str, n: int, n_speakers: int, rng: np.random.Generator) -> pd.DataFrame:
    k = len(LABELS)
    raters = rng.integers(3, 8, n)
    main = rng.integers(0, k, n)
    conc = rng.uniform(0.2, 1.0, n)
    probs = np.repeat(((1 - conc) / k)[:, None], k, axis=1)
    probs[np.arange(n), main] += conc
    votes = rng.multinomial(raters, probs / probs.sum(axis=1, keepdims=True)).astype(float)
    p = votes / votes.sum(axis=1, keepdims=True)
    top = np.isclose(p, p.max(axis=1, keepdims=True))
    tie = top.sum(axis=1) > 1
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0).sum(axis=1)
    df = pd.DataFrame(
        {
            "utt_id": [f"{name}-{i:06d}" for i in range(n)],
            "dataset": name,
            "audio_path": "",
            "duration_s": 2.0,
            "speaker": [f"s{i % n_speakers:04d}" for i in range(n)],
            "gender": "",
            "split": "",
            "transcript": "",
            "intended": "",
        }
    )
    for j, x in enumerate(LABELS):
        df[f"votes_{x}"] = votes[:, j]
    for j, x in enumerate(LABELS):
        df[f"p_{x}"] = p[:, j]
    df["n_raters"] = votes.sum(axis=1).astype(int)
    df["majority"] = np.where(tie, "", np.asarray(LABELS)[p.argmax(axis=1)])
    df["majority_tie"] = tie
    df["entropy_bits"] = h
    df["max_share"] = p.max(axis=1)
    df["n_distinct"] = (votes > 0).sum(axis=1)
    df["ambiguity"] = np.select([h <= 1e-9, h <= 1.0, h <= 1.5], ["clear", "low", "medium"], "high")
    return df


def _cell(man: pd.DataFrame, model: str, strategy: str, budgets: list[int], quality: float, rng) -> pd.DataFrame:
    p = man[[f"p_{x}" for x in LABELS]].to_numpy()
    parts = []
    for b in budgets:
        n = len(p)
        q = quality * p + (1 - quality) * rng.dirichlet(np.ones(len(LABELS)), n)
        ok = rng.random(n) > 0.03
        q[~ok] = 1 / len(LABELS)
        df = pd.DataFrame({"utt_id": man["utt_id"], "dataset": man["dataset"], "model": model, "strategy": strategy})
        df["budget"] = b
        for j, x in enumerate(LABELS):
            df[f"p_{x}"] = q[:, j]
        df["pred_label"] = np.where(ok, np.asarray(LABELS)[q.argmax(axis=1)], "")
        df["parsed_ok"] = ok
        df["n_candidates"] = b
        df["model_calls"], df["verifier_calls"] = b, 0
        df["prompt_tokens"], df["gen_tokens"], df["wall_s"] = 100 * b, 12 * b, 0.1 * b
        df["verifier_prompt_tokens"], df["verifier_gen_tokens"], df["verifier_wall_s"] = 0, 0, 0.0
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def synthesise(
    folder: Path, scale: float, budgets: dict[str, list[int]], seed: int = 0, n_models: int = N_MODELS
) -> dict[str, Any]:
    """Write the manifests and every predictions table of the run; return its params."""
    from ambiemo.core.layout import Layout
    from ambiemo.data import manifest as mm
    from ambiemo.data.labels import LabelSet
    from ambiemo.inference.candidates import candidates_frame
    from ambiemo.inference.predictions import write_predictions

    models = {f"m{i:02d}": {"params_b": float(2 ** (i % 4)), "family": f"f{i // 4}"} for i in range(n_models)}
    params = {
        "seed": seed,
        "paths": {"results": str(folder / "results")},
        "run": {"datasets": [d for d, _, _ in DATASETS], "models": list(models), "strategies": list(budgets)},
        "models": models,
        "scoring": {"bootstrap_resamples": 1000, "ci_level": 0.95},
        "stats": {"permutation_resamples": 2000},
    }
    layout = Layout.from_params(params)
    rng = np.random.default_rng(seed)
    empty = candidates_frame([], LABELS)
    for name, n, n_speakers in DATASETS:
        size = max(8, round(n * scale))
        man = _manifest(name, size, max(2, min(n_speakers, size // 4)), rng)
        mm.write_manifest(man, layout.manifest(name), label_set=LabelSet("four", LABELS), ambiguity=BINS, exclusions={})
        for mi, model in enumerate(models):
            for si, (strategy, bs) in enumerate(budgets.items()):
                df = _cell(man, model, strategy, bs, min(0.9, 0.2 + 0.03 * mi + 0.02 * si), rng)
                prov = {"model": model, "strategy": {"name": strategy, "budgets": bs}}
                kw = {"labels": LABELS, "label_set": "four", "provenance": prov}
                write_predictions(df, layout.predictions(name, model, strategy), candidates=empty, **kw)
    (folder / "params.json").write_text(json.dumps(params))
    return params


def run_stage(stage: str, params_path: Path) -> None:
    """One stage in this (fresh) process; prints its wall time and peak memory as JSON."""
    import warnings

    warnings.simplefilter("ignore")
    params = json.loads(params_path.read_text())
    start = time.perf_counter()
    if stage == "score":
        from ambiemo.scoring.stream import write_score_run

        write_score_run(params)
    elif stage == "aggregate":
        from ambiemo.scoring.stages import aggregate_run

        aggregate_run(params)
    else:
        from ambiemo.stats.stage import stats_run

        stats_run(params)
    wall = time.perf_counter() - start
    from ambiemo.core.layout import Layout
    from ambiemo.core.workers import worker_count
    from ambiemo.scoring.schema import chunk_keys

    scores = Layout.from_params(params).scores
    workers = 1 if stage == "score" else worker_count(model_rows_in(scores), len(chunk_keys(scores)))
    # the stage's own peak, plus each chunk process at the largest one's peak: an upper bound of
    # the memory held at once (the processes live side by side)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20 if workers > 1 else 0.0
    peak = own + workers * child
    print(json.dumps({"wall_s": round(wall, 2), "peak_gb": round(peak, 3), "workers": workers}))


def model_rows_in(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def measure(
    scale: float, budgets: dict[str, list[int]], stages: list[str], timeout: float, n_models: int = N_MODELS
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ambiemo-scale-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        synthesise(folder, scale, budgets, n_models=n_models)
        took = time.perf_counter() - t0
        print(f"scale {scale:g}: synthesised {model_rows(scale, budgets, n_models):,} model rows in {took:.0f} s")
        out = {}
        for stage in stages:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            cmd = [sys.executable, __file__, "--stage", stage, "--params", str(folder / "params.json")]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=True)
                out[stage] = {
                    "rows": model_rows(scale, budgets, n_models),
                    **json.loads(res.stdout.strip().splitlines()[-1]),
                }
            except subprocess.TimeoutExpired:
                out[stage] = {
                    "rows": model_rows(scale, budgets, n_models),
                    "wall_s": None,
                    "peak_gb": None,
                    "note": "timeout",
                }
                print(f"  {stage}: stopped after {timeout:.0f} s")
                break
            except subprocess.CalledProcessError as err:
                raise SystemExit(f"stage {stage} failed:\n{err.stderr[-3000:]}") from None
            print(f"  {stage}: {out[stage]['wall_s']} s, {out[stage]['peak_gb']} GB peak")
        return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=0.01, help="fraction of the study's utterances (1 = full size)")
    ap.add_argument("--rows", type=int, help="model score rows wanted (sets --scale)")
    ap.add_argument("--models", type=int, default=N_MODELS, help="models in the run (16: the ladder's)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per stage before it is stopped")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "scale.json")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: one stage in a child
    ap.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        run_stage(args.stage, args.params)
        return
    budgets = ladder_budgets()
    scale = args.scale if args.rows is None else args.rows / model_rows(1.0, budgets, args.models)
    load = os.getloadavg()
    small = measure(scale / 10, budgets, args.stages, args.timeout, args.models)
    big = measure(scale, budgets, args.stages, args.timeout, args.models)
    growth = {
        s: round(big[s]["wall_s"] / small[s]["wall_s"], 2)
        for s in big
        if s in small and big[s].get("wall_s") and small[s].get("wall_s")
    }
    total = [sum(t[s]["wall_s"] or 0 for s in growth) for t in (small, big)]
    result = {
        "stages": big,
        "small": small,
        "growth_10x": round(total[1] / total[0], 2) if total[0] else None,
        "growth_by_stage": growth,
        "scale": scale,
        "models": args.models,
        "study_rows": model_rows(1.0, budgets),
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'stage':10} {'rows':>12} {'wall_s':>8} {'peak_gb':>8} {'growth_10x':>10}")
    for s, r in big.items():
        print(f"{s:10} {r['rows']:>12,} {r['wall_s']!s:>8} {r['peak_gb']!s:>8} {growth.get(s, '')!s:>10}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
