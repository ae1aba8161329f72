"""Measure how far the demo cascade's outputs depend on the batch size: batch 1 against batch 8 on the same
EmoDB clips, for sampled, greedy and beam candidates. Reports, per mode, how many candidates have identical
token ids and the largest per-token log-probability difference among them (the number the README states
and ``tests/inference/test_batch_invariance.py`` bounds).

    python benchmarks/batch_invariance.py --audio-dir ../shared/data/emodb            # 2 clips x 4 prompts
    python benchmarks/batch_invariance.py --audio-dir ../shared/data/emodb --full     # 16 clips x 2, 24 tokens

Each clip is asked with several prompts, so that a batch of 8 needs few clips (perception, the slow part
on a CPU, is done once per clip). Writes results/bench/batch_invariance.json (and prints it).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message

PROMPTS = (
    "Which emotion does the speaker express: neutral, happy, angry or sad? Answer with one word.",
    "Name the speaker's emotion (neutral, happy, angry or sad).",
    "How does the speaker feel? Choose one of neutral, happy, angry, sad.",
    'Give probabilities for neutral, happy, angry and sad as JSON, e.g. {"neutral": 0.4, "happy": 0.6}.',
)


def requests(folder: Path, n_clips: int, n_prompts: int) -> list[AudioRequest]:
    """``n_clips`` clips (sorted by name), each with the first ``n_prompts`` prompts."""
    import soundfile as sf

    out = []
    for path in sorted(folder.glob("*.wav"))[:n_clips]:
        wav, sr = sf.read(path, dtype="float32")
        for k, prompt in enumerate(PROMPTS[:n_prompts]):
            messages = [
                Message("system", "You are an expert in speech emotion recognition."),
                Message("user", prompt, audio=True),
            ]
            out.append(AudioRequest(f"{path.name}#{k}", wav, sr, messages))
    return out


def compare(model, reqs: list[AudioRequest], config: GenerationConfig, batch: int) -> dict:
    """Candidates at batch 1 and at ``batch``: identical token ids, and the largest log-probability difference."""
    runs = {}
    for size in (1, batch):
        model.batch_size = size
        t0 = time.perf_counter()
        runs[size] = (model.generate(reqs, config), time.perf_counter() - t0)
    compared = identical = 0
    worst = 0.0
    for a_cands, b_cands in zip(runs[1][0], runs[batch][0], strict=True):
        for a, b in zip(a_cands, b_cands, strict=True):
            compared += 1
            if a.meta["token_ids"] == b.meta["token_ids"]:
                identical += 1
                worst = max(worst, float(np.max(np.abs(np.subtract(a.token_logprobs, b.token_logprobs)))))
    return {
        "candidates": compared,
        "identical_tokens": identical,
        "max_abs_token_logprob_diff": worst,
        "seconds_batch_1": round(runs[1][1], 2),
        f"seconds_batch_{batch}": round(runs[batch][1], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio-dir", type=Path, required=True, help="folder of .wav clips (EmoDB)")
    ap.add_argument("--full", action="store_true", help="16 clips x 2 prompts, 24 new tokens (default 2 x 4, 8)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cache-dir", type=Path, default=None, help="converted weights and perception memo")
    ap.add_argument("--out", type=Path, default=Path("results/bench/batch_invariance.json"))
    args = ap.parse_args()
    n_clips, n_prompts, tokens = (16, 2, 24) if args.full else (2, 4, 8)
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="ambiemo-bi-"))
    model = load_model("cascade-smollm2", {"adapter": "cascade"}, cache_dir=cache)
    reqs = requests(args.audio_dir, n_clips, n_prompts)
    configs = {
        "sample": GenerationConfig(mode="sample", n=3, max_new_tokens=tokens, temperature=1.0, seed=4),
        "greedy": GenerationConfig(mode="greedy", n=1, max_new_tokens=tokens),
        "beam": GenerationConfig(mode="beam", n=3, max_new_tokens=tokens, num_beams=3),
    }
    report = {
        "model": "cascade-smollm2",
        "clips": n_clips,
        "requests": len(reqs),
        "max_new_tokens": tokens,
        "batch": [1, args.batch],
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "modes": {name: compare(model, reqs, cfg, args.batch) for name, cfg in configs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
