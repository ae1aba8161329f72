"""Time the cascade ALM per utterance on this machine: perception (ASR + eGeMAPS, once per clip)
and generation of 1 greedy and N sampled candidates.

    python benchmarks/bench_cascade.py --audio-dir ../shared/data/emodb --limit 8

Writes one JSON object to stdout; nothing is cached between runs unless --cache-dir is reused
(the GGUF conversion, ~15 s, is done before timing starts either way).
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

PROMPT = (
    "Which emotions does the speaker express? Give a probability for each of neutral, happy, angry and sad "
    'as a JSON object, e.g. {"neutral": 0.4, "happy": 0.1, "angry": 0.3, "sad": 0.2}.'
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audio-dir", type=Path, required=True, help="folder of .wav clips")
    ap.add_argument("--limit", type=int, default=8, help="clips to time")
    ap.add_argument("--n", type=int, default=5, help="sampled candidates per clip")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cache-dir", type=Path, default=None, help="converted weights and perception memo")
    args = ap.parse_args()

    import soundfile as sf
    import torch

    clips = sorted(args.audio_dir.glob("*.wav"))[: args.limit]
    if not clips:
        raise SystemExit(f"{args.audio_dir}: no .wav files")
    requests = []
    for path in clips:
        wav, sr = sf.read(path, dtype="float32")
        messages = [
            Message("system", "You are an expert in speech emotion recognition."),
            Message("user", PROMPT, audio=True),
        ]
        requests.append(AudioRequest(path.stem, wav, sr, messages))
    audio_s = sum(len(r.waveform) / r.sample_rate for r in requests)

    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-cascade-"))
    t = time.perf_counter()
    model = load_model("cascade-smollm2", {"adapter": "cascade", "batch_size": args.batch_size}, cache_dir=cache_dir)
    model._ensure_loaded()
    load_s = time.perf_counter() - t

    t = time.perf_counter()
    for r in requests:
        model.perceive(r)
    perceive_s = (time.perf_counter() - t) / len(requests)

    timings = {}
    for name, cfg in {
        "greedy_n1": GenerationConfig(mode="greedy", n=1, max_new_tokens=args.max_new_tokens),
        f"sample_n{args.n}": GenerationConfig(
            mode="sample", n=args.n, max_new_tokens=args.max_new_tokens, temperature=0.8
        ),
    }.items():
        t = time.perf_counter()
        out = model.generate(requests, cfg)
        wall = time.perf_counter() - t
        tokens = [c.n_tokens for cands in out for c in cands]
        timings[name] = {
            "s_per_utterance": round(wall / len(requests), 3),
            "s_per_utterance_incl_perception": round(wall / len(requests) + perceive_s, 3),
            "mean_gen_tokens": round(float(np.mean(tokens)), 1),
        }
    print(
        json.dumps(
            {
                "clips": len(requests),
                "mean_clip_s": round(audio_s / len(requests), 2),
                "load_s": round(load_s, 2),
                "perception_s_per_utterance": round(perceive_s, 3),
                "generation": timings,
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.batch_size,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
