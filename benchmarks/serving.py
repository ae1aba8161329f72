"""Serving benchmarks, each through the whole ``ambiemo infer`` command (a fresh process,
a fresh generation cache) against fake OpenAI-compatible servers on 127.0.0.1 (``fake_server.py``,
each in its own process):

- **breaker**: a server that answers 503 to everything, N utterances, default retry settings: the
  cell must stop within 60 s of wall time, with one message and no predictions written;
- **burst**: the same server answering 429 to the first 10 requests, then normally: every utterance
  answered;
- **concurrency**: a 400 ms endpoint, 120 requests (baseline: one per utterance), concurrency 16 vs 1
  (target >= 10x), and a pool of three such endpoints vs one at concurrency 16 (target >= 2.5x).
  Each endpoint works on at most 16 requests at once and queues the rest (``fake_server.py
  --capacity``), as one GPU serving a model has a fixed throughput; concurrency 16 fills it, so
  the first ratio is the same as against an endpoint without a limit. A control, one endpoint at
  concurrency 48 (the pool's requests in flight), shows that the pool's gain is the capacity of
  three endpoints, not the 48 requests in flight: against one endpoint they only queue.

Both ratios include the command's start-up (imports, params, manifest, the SDK), a fixed cost paid
once per command; ``in_process`` repeats each run inside this process after a warm-up, without it.
At 120 requests the pool's ratio cannot reach its target through the whole command: 120 requests
are 8 rounds of 400 ms on one endpoint (3.2 s) and 3 rounds on three (1.2 s), a ceiling of 2.67x
without start-up, and (3.2 + S) / (1.2 + S) >= 2.5 holds only for a start-up S under 0.13 s.

    python benchmarks/serving.py --quick     # seconds: 40 utterances, a 100 ms endpoint
    python benchmarks/serving.py             # the issue's sizes: 500 utterances; 120 requests at 400 ms

Prints one line per figure and writes JSON (``--out``, default ``results/bench/serving.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = 16  # requests one fake endpoint works on at once (the rest queue): see the docstring
sys.path.insert(0, str(ROOT / "benchmarks"))


def manifest(tmp: Path, n: int) -> Path:
    """A demo corpus of ``n`` clips and its manifest."""
    from ambiemo.core.config import load_params
    from ambiemo.data import prepare_dataset

    params = load_params(ROOT / "params.yaml")
    params["datasets"]["demo"] = {**params["datasets"]["demo"], "n_utterances": n}
    out = tmp / f"manifest-{n}.parquet"
    prepare_dataset("demo", params, root=tmp / f"corpus-{n}", out=out)
    return out


def infer(tmp: Path, name: str, manifest_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """``python -m ambiemo infer`` with model ``spec`` (fresh cache); wall time, exit code, output."""
    from ambiemo.core.config import load_params

    params = load_params(ROOT / "params.yaml")
    params["models"]["bench"] = spec
    params["paths"] = {**params.get("paths", {}), "cache_dir": str(tmp / f"cache-{name}")}
    params_path = tmp / f"params-{name}.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    out = tmp / f"pred-{name}.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "bench-not-a-key", "NO_PROXY": "127.0.0.1"}
    env.pop("AMBIEMO_CACHE_DIR", None)
    cmd = [sys.executable, "-m", "ambiemo", "infer", "--model", "bench", "--strategy", "baseline"]
    cmd += ["--manifest", str(manifest_path), "--out", str(out), "--params", str(params_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
    wall = time.perf_counter() - t0
    answered = failed = None
    if out.exists():
        from ambiemo.inference.predictions import read_predictions

        pred = read_predictions(out)
        failed = int(pred.meta.get("failures_by_kind", {}).get("model", 0))
        answered = len(pred.df)
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if os.environ.get("BENCH_STDERR"):
        print(proc.stderr[-3000:])
    return {"wall_s": round(wall, 2), "rc": proc.returncode, "rows": answered, "failed": failed, "stderr": last[-3:]}


def infer_in_process(tmp: Path, name: str, manifest_path: Path, spec: dict[str, Any]) -> float:
    """``run_inference`` in this process, after a 4-utterance warm-up run (SDK imported, client built):
    the seconds the cell's requests take without the process start-up, which on a loaded 2-core
    machine is several seconds of imports and bounds the whole-command ratio."""
    from ambiemo.core.config import load_params
    from ambiemo.inference.run import run_inference

    os.environ.setdefault("OPENAI_API_KEY", "bench-not-a-key")
    params = load_params(ROOT / "params.yaml")
    params["models"]["bench"] = spec
    for run, limit in (("warm", 4), ("timed", None)):
        params["paths"] = {**params.get("paths", {}), "cache_dir": str(tmp / f"cache-{name}-{run}")}
        t0 = time.perf_counter()
        run_inference(
            params, "bench", "baseline", manifest_path, tmp / f"pred-{name}-{run}.parquet", limit, progress=False
        )
    return time.perf_counter() - t0


def machine() -> dict[str, Any]:
    """What the figures were measured on: the commit, the cores and their other users (the load)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    return {
        "commit": commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else ""),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # other users of a shared machine show here
    }


def spec_for(urls: list[str], concurrency: int, **extra: Any) -> dict[str, Any]:
    return {
        "adapter": "openai-compatible",
        "model_id": "fake",
        "base_url": urls if len(urls) > 1 else urls[0],
        "concurrency": concurrency,
        "logprobs": False,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    from fake_server import FakeChatServer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: runs in well under a minute")
    ap.add_argument("--only", nargs="*", default=["breaker", "burst", "concurrency"])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "serving.json")
    args = ap.parse_args(argv)
    n_breaker = 40 if args.quick else 500
    n_conc, delay = (40, 0.1) if args.quick else (120, 0.4)
    results: dict[str, Any] = {"quick": args.quick, "machine": machine()}
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        if "breaker" in args.only or "burst" in args.only:
            m = manifest(tmp, n_breaker)
        if "breaker" in args.only:
            down = stack.enter_context(FakeChatServer(0.0, "--status", "503"))
            r = infer(tmp, "breaker", m, spec_for([down.url], 4))
            r["requests_seen"] = down.requests
            r["target"] = "stops within 60 s, nonzero exit, no predictions written"
            r["meets"] = r["wall_s"] <= 60 and r["rc"] != 0 and r["rows"] is None
            results[f"breaker_503_{n_breaker}_utterances"] = r
            print(f"breaker: 503 to everything, {n_breaker} utterances: {r['wall_s']} s, exit {r['rc']}", flush=True)
            print("   " + "\n   ".join(r["stderr"]), flush=True)
        if "burst" in args.only:
            burst = stack.enter_context(FakeChatServer(0.0, "--fail-first", "10"))
            r = infer(tmp, "burst", m, spec_for([burst.url], 4))
            r["target"] = f"all {n_breaker} answered"
            r["meets"] = r["rc"] == 0 and r["rows"] == n_breaker and not r["failed"]
            results[f"burst_429x10_{n_breaker}_utterances"] = r
            print(f"burst: 429 x10: {r['wall_s']} s, exit {r['rc']}, rows {r['rows']}, failed {r['failed']}")
        if "concurrency" in args.only:
            m = manifest(tmp, n_conc)
            servers = [stack.enter_context(FakeChatServer(delay, "--capacity", str(CAPACITY))) for _ in range(3)]
            runs = {
                "c1": spec_for([servers[0].url], 1),
                "c16": spec_for([servers[0].url], 16),
                "pool3_c16": spec_for([s.url for s in servers], 16),
                "c48": spec_for([servers[0].url], 48),  # the control: the pool's 48 in flight on one endpoint
            }
            t = {}
            for name, spec in runs.items():
                r = infer(tmp, name, m, spec)
                t[name] = r["wall_s"]
                results[f"infer_{name}"] = r
                print(f"infer {name}: {n_conc} requests at {delay * 1000:.0f} ms: {r['wall_s']} s, exit {r['rc']}")
            results["c16_vs_c1"] = {"ratio": round(t["c1"] / t["c16"], 2), "target": ">= 10"}
            results["pool3_vs_one_c16"] = {"ratio": round(t["c16"] / t["pool3_c16"], 2), "target": ">= 2.5"}
            results["one_c48_vs_c16"] = {"ratio": round(t["c16"] / t["c48"], 2), "expected": "about 1 (capacity 16)"}
            print(f"whole command: c16 vs c1: {results['c16_vs_c1']['ratio']}x (target >= 10)")
            print(f"whole command: pool of 3 vs 1 at c16: {results['pool3_vs_one_c16']['ratio']}x (target >= 2.5)")
            print(f"whole command: one endpoint at c48 vs c16: {results['one_c48_vs_c16']['ratio']}x (about 1)")
            ip = {name: infer_in_process(tmp, name, m, spec) for name, spec in runs.items()}
            results["in_process_s"] = {k: round(v, 2) for k, v in ip.items()}
            results["in_process_c16_vs_c1"] = round(ip["c1"] / ip["c16"], 2)
            results["in_process_pool3_vs_one_c16"] = round(ip["c16"] / ip["pool3_c16"], 2)
            results["in_process_one_c48_vs_c16"] = round(ip["c16"] / ip["c48"], 2)
            # What the whole command adds to the same requests: its start-up, once per command.
            results["start_up_s"] = {k: round(t[k] - ip[k], 2) for k in ip}
            print(
                f"in process (start-up excluded): {results['in_process_s']}; c16 vs c1 "
                f"{results['in_process_c16_vs_c1']}x, pool of 3 vs 1 {results['in_process_pool3_vs_one_c16']}x, "
                f"one endpoint c48 vs c16 {results['in_process_one_c48_vs_c16']}x"
            )
            print(f"start-up (whole command minus in process): {results['start_up_s']}")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average: {results['machine']['load_average']} at the start, {os.getloadavg()[0]:.2f} at the end")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
