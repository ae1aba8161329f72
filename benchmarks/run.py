"""`make bench`: every speed figure as a ratio measured side by side in one run.

These machines are shared and noisy, so absolute times are not stable; each figure compares two
ways of doing the same work, interleaved and repeated (the median ratio is reported), on the same
inputs in the same process. Every result names its workload and its target, and what bounds it
when it misses.

    .venv/bin/python benchmarks/run.py                 # everything (~10 min on 2 cores)
    .venv/bin/python benchmarks/run.py --only cache concurrency --quick

Writes a table to stdout and the same as JSON (``--out``, default ``results/bench/bench.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

LOCAL_MODELS = ("tiny-qwen2-audio", "cascade-smollm2")

# What the profiles showed (pyinstrument for the single-threaded paths, py-spy --threads for the
# concurrent one), written into the JSON as its `note`: where a target is missed, what bounds it.
NOTES = {
    "candidates": (
        "pyinstrument of 5 beams on the cascade (16 clips, batch 8): ~74% of the time in transformers' "
        "decoding steps over 40 rows (8 prompts x 5 beams), ~25% in the one shared prefill, ~4% in "
        "compute_transition_scores; ambiemo's own code is under 1%. SmolLM2-135M on 2 CPU cores is "
        "compute-bound already at the 8 rows of a greedy batch, so each decoding step costs about in "
        "proportion to its rows; the <= 1.6x target assumes memory-bound decoding (a GPU), where 5 rows "
        "cost little more than 1. Bound: the CPU's arithmetic, not the project."
    ),
    "batching": "",
    "cache": (
        "pyinstrument of the rerun (tiny model, 32 clips x 5 samples): reading the manifest and the audio, "
        "building and writing the table and the cache lookups; fixed per cell, so the ratio depends on how "
        "long the first run took (the tiny model's first run is a few seconds). Fixed here: every candidate's "
        "key re-hashed the clip and re-serialised the conversation (now once per request), and every output "
        "read 13 packages' metadata (now once per process)."
    ),
    "concurrency": (
        "py-spy --threads at 16 in flight: each of the first 16 threads built its own openai client (an httpx "
        "pool and TLS context, and the first waited on the SDK's import lock); fixed, one client per endpoint. "
        "The in-process fake server's handler threads shared the client's interpreter lock and HTTP/1.0 made "
        "every request open a TCP connection: the server now runs in its own process with keep-alive, as vLLM "
        "does. What remains is CPU per request under one interpreter lock on 2 shared cores: 200 requests at "
        "16 in flight took 3.3 s where the server's delay accounts for 1.25 s, about 10 ms of client CPU per "
        "request, of which 4-5 ms was ambiemo encoding the clip as a base64 WAV (pyinstrument): now encoded once "
        "per clip (ambiemo.models.api.client.request_wav, kept in the feature memo). The rest is the SDK (request "
        "building, pydantic parsing of the answer, httpx), 5-6 ms; 16 in flight needs under 6 ms, so the ratio "
        "sits at the edge of the target and moves with the machine's load and the process's weight."
    ),
    "scoring": (
        "pyinstrument: the bootstrap spent 85% of its time in a one-hot (rows x distinct values) product for "
        "the entropy ranks, O(B*n^2); now O(B*n) sums over rows sorted by value, bit-identical. The metrics "
        "spent most of their time in row-wise input checks (now whole-array, row-wise only on failure), "
        "scipy's stable-sort rankdata (now an exact quicksort average rank) and scikit-learn's input "
        "validation for F1 and UAR (now per-class counts); tests/scoring/test_bench_equivalence.py checks each "
        "against the code or library it replaced."
    ),
    "pipeline": "",
}


@dataclass
class Result:
    name: str
    workload: str
    value: float
    unit: str  # "x" (a ratio) or "s" (seconds, for the absolute targets the issue states)
    target: str  # e.g. "<= 1.6", ">= 4"
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)
    bound: str = ""  # what limits the figure where the target is missed


def meets(value: float, target: str) -> bool:
    op, bound = target.split()
    return value <= float(bound) if op == "<=" else value >= float(bound)


def result(name: str, workload: str, value: float, unit: str, target: str, **details: Any) -> Result:
    bound = details.pop("bound", "")
    ok = meets(value, target)
    return Result(name, workload, round(float(value), 4), unit, target, ok, details, "" if ok else bound)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median_ratio(
    slow: Callable[[], Any], fast: Callable[[], Any], repeats: int
) -> tuple[float, list[float], list[float]]:
    """Run the two interleaved ``repeats`` times; the median of slow/fast per round."""
    ts, tf = [], []
    for _ in range(repeats):
        ts.append(timed(slow)[0])
        tf.append(timed(fast)[0])
    ratio = statistics.median(s / f for s, f in zip(ts, tf, strict=True))
    return ratio, ts, tf


# --------------------------------------------------------------------------- the workload


class Workload:
    """The demo corpus (``n`` clips, built here), its prompts, and the local models, loaded once."""

    def __init__(self, n: int, tmp: Path) -> None:
        from ambiemo.core.config import load_params
        from ambiemo.data import prepare_dataset
        from ambiemo.strategies.prompts import PromptBook

        self.tmp = tmp
        self.params = load_params(ROOT / "params.yaml")
        self.params["datasets"]["demo"] = {**self.params["datasets"]["demo"], "n_utterances": n}
        self.manifest_path = tmp / "manifest.parquet"
        manifest = prepare_dataset("demo", self.params, root=tmp / "corpus", out=self.manifest_path)
        self.manifest = manifest
        self.prompts = PromptBook.from_params(self.params, manifest.labels)
        self.cache_dir = tmp / "weights"
        self._models: dict[str, Any] = {}

    def requests(self, n: int | None = None) -> list[Any]:
        from ambiemo.data.audio import load_audio
        from ambiemo.models.base import AudioRequest

        df = self.manifest.df.iloc[:n]
        out = []
        for utt_id, path in zip(df["utt_id"], df["audio_path"], strict=True):
            messages = list(self.prompts.ask("distribution", str(utt_id)).messages)
            out.append(AudioRequest(str(utt_id), load_audio(path), 16000, messages))
        return out

    def model(self, key: str) -> Any:
        if key not in self._models:
            from ambiemo.models import load_model

            m = load_model(key, dict(self.params["models"][key]), cache_dir=self.cache_dir)
            m._ensure_loaded()
            self._models[key] = m
        return self._models[key]


@contextlib.contextmanager
def fixed_length(model: Any, n_tokens: int) -> Iterator[None]:
    """Every candidate exactly ``n_tokens`` long (no early end-of-turn), so that greedy, beam and
    sampled runs decode the same number of steps and the ratios compare like with like."""
    original = model._hf_generation_config

    def patched(config):
        hf = original(config)
        hf.min_new_tokens = n_tokens
        hf.max_new_tokens = n_tokens
        return hf

    model._hf_generation_config = patched
    try:
        yield
    finally:
        model._hf_generation_config = original


# --------------------------------------------------------------------------- 1. candidates


def bench_candidates(w: Workload, args: argparse.Namespace) -> list[Result]:
    from ambiemo.models.base import GenerationConfig

    out = []
    n_utt = 8 if args.quick else 16
    length = 24
    for key in LOCAL_MODELS:
        model = w.model(key)
        reqs = w.requests(n_utt)
        greedy = GenerationConfig(mode="greedy", n=1, max_new_tokens=length)
        configs = {
            "beam": GenerationConfig(mode="beam", n=5, num_beams=5, max_new_tokens=length),
            "sample": GenerationConfig(mode="sample", n=5, max_new_tokens=length, temperature=0.7, seed=1),
        }
        with fixed_length(model, length):
            model.generate(reqs[:2], greedy)  # warm-up
            for how, cfg in configs.items():
                ratio, ts, tf = median_ratio(
                    lambda cfg=cfg, model=model, reqs=reqs: model.generate(reqs, cfg),
                    lambda model=model, reqs=reqs, greedy=greedy: model.generate(reqs, greedy),
                    args.repeats,
                )
                out.append(
                    result(
                        f"candidates/{key}/{how}5_vs_greedy",
                        f"{n_utt} demo clips, 5 {how} candidates vs 1 greedy, {length} new tokens each, "
                        f"batch {getattr(model, 'batch_size', '?')}",
                        ratio,
                        "x",
                        "<= 1.6",
                        seconds_5=[round(t, 3) for t in ts],
                        seconds_1=[round(t, 3) for t in tf],
                        bound="decoding 5 rows per prompt on a CPU that is compute-bound at this size: each "
                        "step costs in proportion to its rows (on a GPU decoding is memory-bound); see note",
                    )
                )
    return out


# --------------------------------------------------------------------------- 2 & 3. batching and cache


def bench_batching_and_cache(w: Workload, args: argparse.Namespace) -> list[Result]:
    from ambiemo.inference.cache import CachedModel, GenerationCache
    from ambiemo.inference.run import run_inference
    from ambiemo.models import load_model
    from ambiemo.models.base import GenerationConfig

    out = []
    length = 24
    n_cand = 5
    for key in LOCAL_MODELS:
        n_utt = (8 if args.quick else 16) if key.startswith("cascade") else (16 if args.quick else 32)
        model = w.model(key)
        reqs = w.requests(n_utt)
        params = {**w.params, "strategies": {**w.params["strategies"]}}
        params["strategies"]["self-consistency"] = {
            **params["strategies"].get("self-consistency", {}),
            "budgets": [n_cand],
        }
        cache_dir = Path(tempfile.mkdtemp(dir=w.tmp, prefix=f"cache-{key}-"))

        def harness(cache_dir=cache_dir, model=model, params=params, n_utt=n_utt, key=key):
            cached = CachedModel(model, GenerationCache(cache_dir))
            return run_inference(
                params,
                key,
                "self-consistency",
                w.manifest_path,
                w.tmp / f"pred-{key}.parquet",
                limit=n_utt,
                model=cached,
            )

        def loop(model=model, reqs=reqs):
            for r in reqs:
                for k in range(n_cand):
                    model.generate(
                        [r], GenerationConfig(mode="sample", n=1, max_new_tokens=length, temperature=0.7, seed=k)
                    )

        with fixed_length(model, length):
            t_loop, _ = timed(loop)
            t_first, first = timed(harness)
        out.append(
            result(
                f"batching/{key}/loop_vs_ambiemo",
                f"{n_utt} clips x {n_cand} sampled candidates ({length} tokens): run_inference (self-consistency, "
                "cold cache) vs one generate call per utterance per candidate",
                t_loop / t_first,
                "x",
                ">= 4",
                loop_s=round(t_loop, 2),
                ambiemo_s=round(t_first, 2),
                bound="the loop repeats the prefill (audio encoder and prompt) per candidate; where it is short "
                "the shared prefill saves little",
            )
        )

        # 3. a rerun of the finished cell with a fresh, unloaded model object and the same cache
        fresh = load_model(key, dict(w.params["models"][key]), cache_dir=w.cache_dir)

        def rerun(fresh=fresh, cache_dir=cache_dir, params=params, n_utt=n_utt, key=key):
            return run_inference(
                params,
                key,
                "self-consistency",
                w.manifest_path,
                w.tmp / f"pred-{key}-rerun.parquet",
                limit=n_utt,
                model=CachedModel(fresh, GenerationCache(cache_dir)),
            )

        t_rerun, again = timed(rerun)
        usage = again.attrs.get("usage", {})
        loaded = getattr(fresh, "model", None) is not None
        same = (w.tmp / f"pred-{key}.parquet").read_bytes() == (w.tmp / f"pred-{key}-rerun.parquet").read_bytes()
        out.append(
            result(
                f"cache/{key}/rerun_vs_first",
                f"the same cell rerun from the generation cache ({n_utt} clips x {n_cand} samples)",
                t_rerun / t_first,
                "x",
                "<= 0.02",
                model_calls=usage.get("calls"),
                cache_hits=usage.get("cache_hits"),
                weights_loaded=loaded,
                identical_file=same,
                first_s=round(t_first, 2),
                rerun_s=round(t_rerun, 3),
                bound="reading the manifest and audio, writing the table: fixed costs per cell that do not "
                "shrink with the cache, against a first run that is short for the tiny model; see note",
            )
        )
        if usage.get("calls") or loaded:
            out[-1].ok = False
            out[-1].bound = f"the rerun made {usage.get('calls')} model calls, weights loaded: {loaded}"
        del first
    return out


# --------------------------------------------------------------------------- 4. concurrency


def bench_concurrency(w: Workload, args: argparse.Namespace) -> list[Result]:
    from fake_server import FakeChatServer

    from ambiemo.models import load_model
    from ambiemo.models.base import GenerationConfig

    n = 100 if args.quick else 200
    concurrency = 16
    reqs = (w.requests(8) * ((n + 7) // 8))[:n]
    reqs = [type(r)(f"{r.utt_id}-{i}", r.waveform, r.sample_rate, r.messages) for i, r in enumerate(reqs)]
    config = GenerationConfig(mode="greedy", n=1, max_new_tokens=48)
    os.environ.setdefault("OPENAI_API_KEY", "bench-not-a-key")
    times, peak = {}, {}
    with FakeChatServer(delay_s=0.1) as server:
        for c in (1, concurrency):
            spec = {
                "adapter": "openai-compatible",
                "model_id": "fake",
                "base_url": server.url,
                "concurrency": c,
                "logprobs": False,
            }
            model = load_model(f"bench-c{c}", spec)
            model.generate(reqs[:c], config)  # warm-up: the SDK imported and the client built, for both
            server.reset()
            times[c], _ = timed(lambda model=model: model.generate(reqs, config))
            peak[c] = server.max_in_flight
    ratio = times[1] / times[concurrency]
    return [
        result(
            f"concurrency/openai-compatible/c{concurrency}_vs_c1",
            f"{n} requests to a local fake server that answers after 100 ms, concurrency {concurrency} vs 1",
            ratio,
            "x",
            f">= {0.8 * concurrency:g}",
            sequential_s=round(times[1], 2),
            concurrent_s=round(times[concurrency], 2),
            peak_in_flight=peak[concurrency],
            bound="the SDK's per-request CPU under one interpreter lock on 2 shared cores; see note",
        )
    ]


# --------------------------------------------------------------------------- 5. scoring


def bench_scoring(w: Workload, args: argparse.Namespace) -> list[Result]:
    import pandas as pd

    from ambiemo.scoring import metrics as M
    from ambiemo.scoring import score_predictions
    from ambiemo.stats import bootstrap_ci

    rng = np.random.default_rng(0)
    n = 10**5 if args.quick else 10**6
    k = 4
    p = rng.dirichlet(np.ones(k), size=n)
    q = rng.dirichlet(np.ones(k), size=n)
    y_true = p.argmax(1)
    y_pred = q.argmax(1)
    calls = {
        "js": lambda: M.js_distance(p, q),
        "bc": lambda: M.bhattacharyya_coefficient(p, q),
        "kl": lambda: M.kl_divergence(p, q),
        "tv": lambda: M.total_variation(p, q),
        "brier": lambda: M.brier(p, q),
        "r2": lambda: M.r2(p, q),
        "entropy_spearman": lambda: M.entropy_spearman(p, q),
        "ece": lambda: M.expected_calibration_error(q.max(1), y_true == y_pred),
        "accuracy": lambda: M.accuracy(y_true, y_pred),
        "weighted_f1": lambda: M.weighted_f1(y_true, y_pred),
        "uar": lambda: M.uar(y_true, y_pred),
        "plausible_accuracy": lambda: M.plausible_accuracy(p, y_pred),
    }
    each = {name: round(timed(fn)[0], 3) for name, fn in calls.items()}
    out = [
        result(
            "scoring/metrics",
            f"every metric over {n:,} utterance distributions of {k} labels",
            sum(each.values()) * (10**6 / n),
            "s",
            "<= 2",
            seconds_per_metric=each,
            bound="the slowest metrics in seconds_per_metric",
        )
    ]

    n_utt, n_spk = (2000, 20) if args.quick else (10**4, 100)
    labels = ["neutral", "happy", "angry", "sad"]
    true = rng.dirichlet(np.ones(4), size=n_utt)
    pred = rng.dirichlet(np.ones(4), size=n_utt)
    ent = -(true * np.log2(true)).sum(1)
    manifest = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(n_utt)],
            "dataset": "bench",
            "speaker": [f"s{i % n_spk}" for i in range(n_utt)],
            "majority": [labels[i] for i in true.argmax(1)],
            "majority_tie": False,
            "entropy_bits": ent,
            "n_raters": 5,
            "ambiguity": np.where(ent < 1.0, "low", np.where(ent < 1.5, "medium", "high")),
            **{f"p_{x}": true[:, j] for j, x in enumerate(labels)},
        }
    )
    preds = pd.DataFrame(
        {
            "utt_id": manifest["utt_id"],
            "dataset": "bench",
            "model": "m",
            "strategy": "baseline",
            "budget": 1,
            **{f"p_{x}": pred[:, j] for j, x in enumerate(labels)},
            "pred_label": [labels[i] for i in pred.argmax(1)],
            "parsed_ok": True,
            "n_candidates": 1,
            "model_calls": 1,
            "verifier_calls": 0,
            "prompt_tokens": 10,
            "gen_tokens": 10,
            "wall_s": 0.1,
            "candidates": "[]",
        }
    )
    t_score, scores = timed(lambda: score_predictions(manifest, preds, w.params))
    t_boot, _ = timed(lambda: bootstrap_ci(scores, w.params, n_resamples=1000, seed=0))
    out.append(
        result(
            "scoring/bootstrap",
            f"1,000-resample speaker-clustered bootstrap of every metric over {n_utt:,} utterances, {n_spk} speakers",
            t_boot * (10**4 / n_utt),
            "s",
            "<= 5",
            per_utterance_scoring_s=round(t_score, 2),
            bound="weighted metric evaluation per resample (B x n arrays for the ranks and means)",
        )
    )
    return out


# --------------------------------------------------------------------------- 6. pipeline


def bench_pipeline(w: Workload, args: argparse.Namespace) -> list[Result]:
    import nbformat

    out = []
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import ambiemo.scoring, ambiemo.stats")]
    path = w.tmp / "noop.ipynb"
    nbformat.write(nb, path)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def papermill():
        subprocess.run(
            [
                str(bin_dir / "papermill"),
                str(path),
                str(w.tmp / "noop.out.ipynb"),
                "-k",
                "python3",
                "--log-level",
                "WARNING",
                "--no-progress-bar",
            ],
            check=True,
            env=env,
            capture_output=True,
        )

    def plain():
        subprocess.run([sys.executable, "-c", "import ambiemo.scoring, ambiemo.stats"], check=True, env=env)

    ratio, tp, tq = median_ratio(papermill, plain, max(2, args.repeats))
    out.append(
        result(
            "pipeline/papermill_overhead",
            "a one-cell notebook importing ambiemo under papermill vs the same import in a plain interpreter",
            ratio,
            "x",
            "<= 10",
            papermill_s=round(statistics.median(tp), 2),
            plain_s=round(statistics.median(tq), 2),
            overhead_s=round(statistics.median(tp) - statistics.median(tq), 2),
            bound="starting a Jupyter kernel per stage",
        )
    )
    dvc = bin_dir / "dvc"
    status = subprocess.run([str(dvc), "status", "--quiet"], cwd=ROOT, env=env, capture_output=True)
    if status.returncode == 0:
        t, _ = timed(lambda: subprocess.run([str(dvc), "repro"], cwd=ROOT, env=env, check=True, capture_output=True))
        out.append(result("pipeline/noop_repro", "`dvc repro` with every stage up to date", t, "s", "<= 10"))
    else:
        print("pipeline/noop_repro: skipped (the pipeline is not up to date here: run `make repro` first)")
    return out


BENCHES = {
    "candidates": bench_candidates,
    "batching": bench_batching_and_cache,  # also measures the cache rerun
    "concurrency": bench_concurrency,
    "scoring": bench_scoring,
    "pipeline": bench_pipeline,
}


def print_table(results: list[Result]) -> None:
    print(f"\n{'benchmark':<52} {'measured':>10} {'target':>9}  ok")
    for r in results:
        unit = "x" if r.unit == "x" else " s"
        print(f"{r.name:<52} {r.value:>9.3g}{unit} {r.target:>9}  {'yes' if r.ok else 'NO: ' + r.bound}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke test of the benchmarks)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per ratio (median reported)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "bench.json")
    args = ap.parse_args(argv)
    import torch

    names = args.only or list(BENCHES)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ambiemo-bench-") as tmp:
        w = Workload(16 if args.quick else 32, Path(tmp))
        for name in names:
            print(f"[bench] {name} ...", flush=True)
            results += BENCHES[name](w, args)
    print_table(results)
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine,
                "quick": args.quick,
                "load_average": os.getloadavg(),  # other users of a shared machine show here
                "note": {k: v for k, v in NOTES.items() if v and any(r.name.startswith(k) for r in results)},
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
