"""Audio Flamingo 2 (3B) through its upstream inference code.

Audio Flamingo 2 is not in transformers (Audio Flamingo 3 is: ``hf-audio-flamingo-3``). Its
inference code lives in NVIDIA's repository, which is not a package, so it is imported lazily
from a folder that the spec names:

    git clone -b audio_flamingo_2 https://github.com/NVIDIA/audio-flamingo
    pip install -r audio-flamingo/inference_HF_pretrained/requirements.txt
    # params.yaml: models.audio-flamingo-2.code_dir: <that clone>/inference_HF_pretrained

Weights come from ``checkpoint`` (``nvidia/audio-flamingo-2``, its ``safe_ckpt/`` and
``clap_ckpt/``) at ``revision``, or from a local ``weights_dir``. The model is built as the
upstream ``inference.py`` builds it (``src.factory.create_model_and_transforms`` with
``configs/inference.yaml``), and the audio is cut into the same CLAP windows (10 s, up to 12).

The prompt is the upstream one: ``<audio>{instruction, lower-cased}{sep}``, single turn (the
system text, if any, precedes the instruction). Upstream ``generate`` returns token ids only, so
each candidate's log-probability comes from one teacher-forced forward pass over all candidates;
``score_options`` uses the same forward pass over the options.

Sampling is the shared batch-invariant path (``ambiemo.models.hf.sampling.GumbelMaxSampler``): greedy decoding
over one row per candidate, each with its own random stream, the processor handed to upstream
``generate``, which passes its keyword arguments on to the language model's ``generate`` as
OpenFlamingo's does.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ambiemo.models import base, register_model
from ambiemo.models.hf.sampling import GumbelMaxSampler, sample_seed

UPSTREAM = "https://github.com/NVIDIA/audio-flamingo (branch audio_flamingo_2)"
SAMPLE_RATE = 16_000


class UpstreamCodeMissing(ImportError):
    """The Audio Flamingo 2 inference code (or its requirements) is not installed."""


def import_upstream(code_dir: str | Path | None, key: str = "audio-flamingo-2") -> Any:
    """Import ``src.factory`` from the upstream ``inference_HF_pretrained`` folder, or explain how to get it."""
    how = (
        f"Audio Flamingo 2 needs its upstream inference code: git clone -b audio_flamingo_2 "
        f"https://github.com/NVIDIA/audio-flamingo, pip install -r audio-flamingo/inference_HF_pretrained/"
        f"requirements.txt, and set params.yaml models.{key}.code_dir to that inference_HF_pretrained folder"
    )
    if not code_dir:
        raise UpstreamCodeMissing(f"models.{key}.code_dir is not set. {how}")
    folder = Path(code_dir).expanduser()
    if not (folder / "src" / "factory.py").is_file():
        raise UpstreamCodeMissing(f"models.{key}.code_dir={str(folder)!r} has no src/factory.py. {how}")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # upstream imports `src.*` and `utils` relative to this folder
    # `src` is a common name: drop any `src` package imported from elsewhere so this folder's is used.
    loaded = sys.modules.get("src")
    if loaded is not None and str(folder / "src") not in list(getattr(loaded, "__path__", [])):
        for name in [n for n in sys.modules if n == "src" or n.startswith("src.")]:
            del sys.modules[name]
        importlib.invalidate_caches()
    try:
        return importlib.import_module("src.factory")
    except ImportError as e:
        raise UpstreamCodeMissing(
            f"importing the Audio Flamingo 2 code in {folder} failed ({e}); "
            f"install its requirements: pip install -r {folder / 'requirements.txt'}"
        ) from e


def clap_windows(wav: np.ndarray, window_s: float, overlap_s: float, max_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a clip into the CLAP windows upstream ``load_audio`` makes: peak-normalised, int16-rounded,
    zero-padded to whole windows, at most ``max_windows``. Returns ``(windows, mask)``."""
    length, hop = int(window_s * SAMPLE_RATE), int((window_s - overlap_s) * SAMPLE_RATE)
    longest = max_windows * length - (max_windows - 1) * int(overlap_s * SAMPLE_RATE)
    wav = np.asarray(wav, dtype=np.float64)[:longest]
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > 0:
        wav = wav / peak
    n = 1 if len(wav) <= length else 1 + int(np.ceil((len(wav) - length) / hop))
    n = min(n, max_windows)
    full = n * length - (n - 1) * int(overlap_s * SAMPLE_RATE)
    wav = np.pad(wav, (0, max(full - len(wav), 0)))
    wav = (np.clip(wav, -1, 1) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
    windows = np.stack([wav[i * hop : i * hop + length] for i in range(n)])
    return windows, np.ones(n, dtype=np.float32)


@register_model("audio-flamingo-2")
class AudioFlamingo2ALM(base.AudioLanguageModel):
    """Audio Flamingo 2 via its upstream code (see the module docstring)."""

    capabilities = base.Capabilities(needs="GPU; upstream code", max_audio_s=120.0)  # 12 CLAP windows of 10 s
    version = 2  # 2: per-candidate random streams
    setting_defaults = {"dtype": "float16", "code_dir": None, "weights_dir": None}

    def __init__(
        self,
        key: str,
        model_id: str,
        revision: str | None,
        *,
        code_dir: str | None,
        weights_dir: str | None = None,
        dtype: str = "float16",
        needs: str = "",
        settings: dict[str, Any] | None = None,
    ) -> None:
        settings = {**(settings or {}), "dtype": dtype, "code_dir": code_dir, "weights_dir": weights_dir}
        super().__init__(key, model_id, revision, settings=settings, needs=needs)
        self.code_dir = code_dir
        self.weights_dir = weights_dir
        self.dtype = dtype
        self.model: Any = None
        self.tokenizer: Any = None
        self.clap_config: dict[str, Any] = {}

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> AudioFlamingo2ALM:
        return cls(
            key,
            str(spec.get("checkpoint", "nvidia/audio-flamingo-2")),
            None if spec.get("revision") is None else str(spec["revision"]),
            code_dir=spec.get("code_dir"),
            weights_dir=spec.get("weights_dir"),
            dtype=spec.get("dtype", "float16"),
            needs=spec.get("needs", ""),
            settings=spec,
        )

    # ----------------------------------------------------------------------------- loading
    def _load(self) -> None:
        import json

        import torch
        import yaml

        factory = import_upstream(self.code_dir, self.key)
        code = Path(self.code_dir)  # type: ignore[arg-type]
        config = yaml.safe_load((code / "configs" / "inference.yaml").read_text())
        if self.weights_dir:
            weights = Path(self.weights_dir)
        else:
            from huggingface_hub import snapshot_download

            weights = Path(snapshot_download(self.model_id, revision=self.revision))
        clap = dict(config["clap_config"])
        clap["checkpoint"] = str(weights / clap["checkpoint"])  # relative to the checkpoint upstream
        train = config.get("train_config", {})
        model, tokenizer = factory.create_model_and_transforms(
            **config["model_config"],
            clap_config=clap,
            use_local_files=bool(train.get("offline", False)),
            gradient_checkpointing=False,
            freeze_lm_embeddings=bool(train.get("freeze_lm_embeddings", False)),
        )
        from safetensors.torch import load_file

        state: dict[str, Any] = {}
        for chunk in json.loads((weights / "safe_ckpt" / "metadata.json").read_text()):
            state.update(load_file(str(weights / "safe_ckpt" / f"{chunk}.safetensors")))
        model.load_state_dict(state, strict=False)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = getattr(torch, self.dtype) if device == "cuda" else torch.float32
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.clap_config = clap

    def _ensure_loaded(self) -> None:
        if self.model is None:
            self._load()

    # ----------------------------------------------------------------------------- inputs
    def prompt_text(self, request: base.AudioRequest) -> str:
        if any(m.role == "assistant" for m in request.messages):
            raise ValueError(
                f"utterance {request.utt_id!r}: Audio Flamingo 2 is single-turn; it cannot continue a "
                "conversation with assistant turns (use it as the generator, not the verifier)"
            )
        instruction = "\n".join(m.text.strip() for m in request.messages if m.text.strip())
        return f"<audio>{instruction.lower()}{self.tokenizer.sep_token}"

    def _audio(self, request: base.AudioRequest):
        import torch

        wav = request.waveform_at(SAMPLE_RATE)
        c = self.clap_config
        windows, mask = clap_windows(
            wav, float(c["window_length"]), float(c["window_overlap"]), int(c["max_num_window"])
        )
        p = next(self.model.parameters())
        return (
            torch.from_numpy(windows).to(p.device, p.dtype).unsqueeze(0),
            torch.from_numpy(mask).to(p.device, p.dtype).unsqueeze(0),
        )

    def _stop_ids(self) -> list[int]:
        ids = [self.tokenizer.eos_token_id]
        chunk = self.tokenizer.convert_tokens_to_ids("<|endofchunk|>")
        if isinstance(chunk, int) and chunk != self.tokenizer.unk_token_id:
            ids.append(chunk)
        return ids

    def _continuation_logprobs(self, audio, prompt_ids: list[int], conts: list[list[int]]) -> list[list[float]]:
        """Teacher-forced log p of each continuation after the prompt, in one batched forward pass."""
        import torch

        p = next(self.model.parameters())
        width = max(len(c) for c in conts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self._stop_ids()[0]
        ids = torch.full((len(conts), len(prompt_ids) + width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(conts):
            row = prompt_ids + c
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        audio_x, audio_mask = (a.expand(len(conts), *a.shape[1:]) for a in audio)
        with torch.inference_mode():
            logits = self.model(
                audio_x=audio_x, audio_x_mask=audio_mask, lang_x=ids.to(p.device), attention_mask=mask.to(p.device)
            ).logits
            logp = torch.log_softmax(logits[:, len(prompt_ids) - 1 : -1].float(), dim=-1)
        return [[float(logp[i, t, tok]) for t, tok in enumerate(c)] for i, c in enumerate(conts)]

    # ----------------------------------------------------------------------------- the contract
    def _generate(self, requests: list[base.AudioRequest], config: base.GenerationConfig) -> list[list[base.Candidate]]:
        import torch
        from transformers import LogitsProcessorList

        self._ensure_loaded()
        kw: dict[str, Any] = {"max_new_tokens": config.max_new_tokens}
        rows = config.n  # sampling: one row per candidate, each with its own stream
        if config.mode == "beam":
            kw.update(do_sample=False, num_beams=config.num_beams, num_return_sequences=config.n)
            rows = 1
        else:
            kw.update(do_sample=False, num_beams=1)
        identity = self.identity
        stops = set(self._stop_ids())
        results = []
        for request in requests:  # one clip per call: upstream batches windows per clip
            t0 = time.perf_counter()
            prompt = self.tokenizer(self.prompt_text(request), add_special_tokens=False)["input_ids"]
            audio = self._audio(request)
            device = audio[0].device
            if config.mode == "sample":
                seeds = [sample_seed(identity, request, config, k) for k in range(config.n)]
                kw["logits_processor"] = LogitsProcessorList(
                    [GumbelMaxSampler(seeds, config.temperature, config.top_p, device)]
                )
            with torch.inference_mode():
                out = self.model.generate(
                    audio_x=audio[0].repeat_interleave(rows, dim=0),
                    audio_x_mask=audio[1].repeat_interleave(rows, dim=0),
                    lang_x=torch.tensor([prompt] * rows, device=device),
                    eos_token_id=self.tokenizer.eos_token_id,
                    **kw,
                )
            conts = []
            for seq in out.tolist():
                gen = seq[len(prompt) :]
                stop = next((t for t, tok in enumerate(gen) if tok in stops), None)
                conts.append(gen[: stop + 1] if stop is not None else gen)
            conts = [c if c else [self._stop_ids()[0]] for c in conts]
            lps = self._continuation_logprobs(audio, prompt, conts)
            wall = (time.perf_counter() - t0) / len(conts)
            cands = []
            for c, lp in zip(conts, lps, strict=True):
                body = c[:-1] if c[-1] in stops else c
                cands.append(
                    base.Candidate(
                        text=self.tokenizer.decode(body, skip_special_tokens=True).strip(),
                        logprob=float(np.sum(lp)),
                        token_logprobs=lp,
                        n_tokens=len(c),
                        meta={
                            "finished": c[-1] in stops,
                            "token_ids": list(c),
                            "prompt_tokens": len(prompt),
                            "wall_s": wall,
                        },
                    )
                )
            results.append(cands)
        return results

    def _score_options(self, request: base.AudioRequest, options: list[str], prefix: str) -> base.OptionScores:
        self._ensure_loaded()
        t0 = time.perf_counter()
        prompt = self.tokenizer(self.prompt_text(request), add_special_tokens=False)["input_ids"]
        conts = [self.tokenizer(prefix + o, add_special_tokens=False)["input_ids"] for o in options]
        lps = self._continuation_logprobs(self._audio(request), prompt, conts)
        return base.OptionScores(np.array([sum(lp) for lp in lps]), len(prompt), time.perf_counter() - t0)
