"""Throughput of a 7B audio-language model on one GPU, through ambiemo's own adapter.

A Qwen2-Audio with the real Qwen2-Audio-7B configuration (Whisper-large-v3 encoder, 32 layers of
4096-wide Qwen LM, 156,032-token vocabulary) is built directly on the GPU with random bf16 weights:
throughput does not depend on the weights' values, and nothing is downloaded. The processor is
the tiny one ambiemo builds offline (its tokenizer is small, so prompts are somewhat longer in
tokens than with Qwen's own; the audio part, which dominates, is the same). Every answer is
forced to ``--tokens`` new tokens, so greedy, beam and sampled runs decode the same number of
steps. Audio is synthesised in memory (no soundfile or librosa needed).

Measured: greedy vs 5 beams vs 5 samples, at batch sizes 1 / 8 / 32, with the shared prefill on
and off; tokens/s, utterances/s and peak GPU memory.

    python benchmarks/gpu.py --out gpu.json          # on the GPU machine, well under 8 minutes
    python benchmarks/gpu.py --smoke --out smoke.json  # a 2-layer instance on the CPU: checks the script
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Qwen2-Audio-7B(-Instruct) config.json, the fields that set the compute (the rest are
# transformers' defaults for qwen2 / qwen2_audio_encoder, which the checkpoint also uses).
TEXT_7B = {
    "vocab_size": 156032,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 8192,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
}
AUDIO_7B = {
    "num_mel_bins": 128,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "d_model": 1280,
    "max_source_positions": 1500,
}


def synth_clips(n: int, seconds: float, sample_rate: int = 16000, seed: int = 0) -> list[np.ndarray]:
    """Speech-like test signals: a gliding harmonic tone with noise, different per clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    clips = []
    for _ in range(n):
        f0 = rng.uniform(90, 260) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.05 * rng.standard_normal(t.size)
        clips.append((0.3 * x / np.abs(x).max()).astype(np.float32))
    return clips


def build_adapter(smoke: bool, work: Path) -> Any:
    """ambiemo's Qwen2-Audio adapter over the tiny processor and a random model of the real size."""
    import torch
    import transformers

    from ambiemo.models.hf.qwen2_audio import Qwen2AudioALM
    from ambiemo.models.hf.tiny import build_tiny

    folder = build_tiny("qwen2-audio", work / "processor")
    device = "cpu" if smoke else "cuda"

    class RandomQwen2Audio(Qwen2AudioALM):
        def _load_model(self, source: str, rev: dict[str, Any]):
            config = transformers.Qwen2AudioConfig.from_pretrained(source)
            if not smoke:  # the real sizes; token ids stay those of the tiny tokenizer
                for k, v in TEXT_7B.items():
                    setattr(config.text_config, k, v)
                for k, v in AUDIO_7B.items():
                    setattr(config.audio_config, k, v)
            dtype = torch.float32 if smoke else torch.bfloat16
            with torch.device(device):
                model = transformers.Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype)
            model.generation_config = transformers.GenerationConfig.from_pretrained(source)
            return model.eval()

    adapter = RandomQwen2Audio("qwen2-audio-7b-random", "random", None, local_path=folder, dtype="bfloat16")
    adapter._ensure_loaded()
    return adapter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu.json"))
    ap.add_argument("--smoke", action="store_true", help="a tiny instance on the CPU, to check the script")
    ap.add_argument("--utterances", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=6.0, help="clip length (IEMOCAP's mean turn is ~4.5 s)")
    ap.add_argument("--tokens", type=int, default=48, help="new tokens per candidate (the JSON answer's budget)")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 8, 32])
    args = ap.parse_args(argv)

    import torch
    from run import fixed_length

    from ambiemo.models.base import AudioRequest, GenerationConfig, Message
    from ambiemo.strategies.prompts import PromptBook

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke on a CPU")
    cuda = torch.cuda.is_available() and not args.smoke
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ambiemo-gpu-") as tmp:
        adapter = build_adapter(args.smoke, Path(tmp))
        build_s = time.perf_counter() - t0
        n_params = sum(p.numel() for p in adapter.model.parameters())
        book = PromptBook(["neutral", "happy", "angry", "sad"], seed=0)
        clips = synth_clips(args.utterances, args.seconds)
        requests = [
            AudioRequest(f"u{i}", wav, 16000, list(book.ask("distribution", f"u{i}").messages))
            for i, wav in enumerate(clips)
        ]
        assert all(isinstance(m, Message) for m in requests[0].messages)
        configs = {
            "greedy": GenerationConfig(mode="greedy", n=1, max_new_tokens=args.tokens),
            "beam5": GenerationConfig(mode="beam", n=5, num_beams=5, max_new_tokens=args.tokens),
            "sample5": GenerationConfig(mode="sample", n=5, max_new_tokens=args.tokens, temperature=0.7, seed=1),
        }
        runs = []
        with fixed_length(adapter, args.tokens):
            adapter.batch_size = min(args.batch_sizes)
            adapter.generate(requests[:1], configs["greedy"])  # warm-up: kernels, allocator
            for bs in args.batch_sizes:
                for name, cfg in configs.items():
                    for shared in (True, False) if name != "greedy" else (True,):
                        adapter.batch_size = bs
                        adapter.shared_prefill = shared
                        if cuda:
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                        t = time.perf_counter()
                        try:
                            out = adapter.generate(requests, cfg)
                            error = None
                        except torch.cuda.OutOfMemoryError as e:  # recorded, the other settings still run
                            out, error = [], f"out of memory: {str(e).splitlines()[0]}"
                            torch.cuda.empty_cache()
                        if cuda:
                            torch.cuda.synchronize()
                        wall = time.perf_counter() - t
                        gen = sum(c.n_tokens for cands in out for c in cands)
                        runs.append(
                            {
                                "decoding": name,
                                "batch_size": bs,
                                "shared_prefill": shared,
                                "seconds": round(wall, 3),
                                "utterances_per_s": round(len(out) / wall, 2) if out else None,
                                "generated_tokens_per_s": round(gen / wall, 1) if out else None,
                                "generated_tokens": gen,
                                "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                                "error": error,
                            }
                        )
                        print(json.dumps(runs[-1]), flush=True)
    greedy = {r["batch_size"]: r["seconds"] for r in runs if r["decoding"] == "greedy" and r["seconds"]}
    for r in runs:  # the ratio the CPU benchmark also reports: B candidates against one greedy answer
        r["vs_greedy_same_batch"] = (
            round(r["seconds"] / greedy[r["batch_size"]], 2) if r["batch_size"] in greedy else None
        )
    report = {
        "model": "Qwen2-Audio-7B configuration, random bf16 weights" if not args.smoke else "tiny (smoke test)",
        "parameters": n_params,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "utterances": args.utterances,
        "clip_seconds": args.seconds,
        "new_tokens_per_candidate": args.tokens,
        "build_seconds": round(build_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
