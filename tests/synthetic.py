"""Small synthetic manifests, predictions and scores for the scoring, stats and plot tests.

Built here rather than with ``ambiemo.data.manifest``/``ambiemo.inference.predictions`` so that these tests
check scoring against frames whose every number the test controls. At the end, a tiny corpus with audio
for the inference tests, written with the manifest helpers (inference reads it through the package).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import build_manifest, write_manifest

LABELS = ("neutral", "happy", "angry", "sad")
BIN_ORDER = ("clear", "low", "medium", "high")


def entropy_bits(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0).sum(axis=1)


def ambiguity_bin(h: float) -> str:
    if h <= 1e-9:
        return "clear"
    return "low" if h <= 1.0 else "medium" if h <= 1.5 else "high"


def manifest_df(
    n: int = 32, n_speakers: int = 8, seed: int = 0, labels=LABELS, dataset: str = "demo", speakers: bool = True
) -> pd.DataFrame:
    """A manifest-shaped frame: 3–7 raters per utterance, votes concentrated on one label."""
    rng = np.random.default_rng(seed)
    k = len(labels)
    votes = np.zeros((n, k))
    for i in range(n):
        raters = rng.integers(3, 8)
        main = rng.integers(k)
        conc = rng.uniform(0.2, 1.0)  # how much raters agree on `main`
        probs = np.full(k, (1 - conc) / k)
        probs[main] += conc
        votes[i] = rng.multinomial(raters, probs / probs.sum())
    p = votes / votes.sum(axis=1, keepdims=True)
    top = np.isclose(p, p.max(axis=1, keepdims=True))
    tie = top.sum(axis=1) > 1
    majority = np.where(tie, "", np.asarray(labels)[p.argmax(axis=1)])
    h = entropy_bits(p)
    df = pd.DataFrame(
        {
            "utt_id": [f"u{i:03d}" for i in range(n)],
            "dataset": dataset,
            "audio_path": "",
            "duration_s": 2.0,
            "speaker": [f"s{i % n_speakers}" if speakers else "" for i in range(n)],
            "gender": "",
            "split": "",
            "transcript": "",
            "intended": "",
        }
    )
    for j, x in enumerate(labels):
        df[f"votes_{x}"] = votes[:, j]
    for j, x in enumerate(labels):
        df[f"p_{x}"] = p[:, j]
    df["n_raters"] = votes.sum(axis=1).astype(int)
    df["majority"] = majority
    df["majority_tie"] = tie
    df["entropy_bits"] = h
    df["max_share"] = p.max(axis=1)
    df["n_distinct"] = (votes > 0).sum(axis=1)
    df["ambiguity"] = [ambiguity_bin(x) for x in h]
    return df


def predictions_df(
    manifest: pd.DataFrame,
    model: str,
    strategy: str,
    budget: int = 1,
    seed: int = 0,
    quality: float = 0.5,
    fail_rate: float = 0.1,
    n_candidates: int = 3,
    labels=LABELS,
    on_failure: str = "uniform",
) -> pd.DataFrame:
    """One prediction cell in the schema of ``ambiemo.inference.predictions``: each candidate mixes the human
    distribution (weight ``quality``) with noise; the first candidate is the prediction. The
    candidates are kept as strategies record them in ``candidate_records`` (not a schema column;
    ``candidates_table`` makes the candidates table of ``ambiemo.inference.candidates`` from it)."""
    rng = np.random.default_rng(seed)
    p = manifest[[f"p_{x}" for x in labels]].to_numpy()
    n, k = p.shape
    rows = []
    for i in range(n):
        cands = []
        for c in range(n_candidates):
            noise = rng.dirichlet(np.ones(k))
            d = quality * p[i] + (1 - quality) * noise
            parsed = rng.random() > fail_rate
            cands.append(
                {
                    "text": f"cand {c}",
                    "logprob": float(-rng.random() * 5),
                    "n_tokens": 12,
                    "p": [float(v) for v in d] if parsed else None,
                    "verifier_score": None,
                    "weight": None,
                    "selected": c == 0,
                    "prompt": "distribution@1",
                    "label_order": list(labels),
                }
            )
        first = cands[0]["p"]
        ok = first is not None
        q = np.array(first) if ok else np.full(k, 1 / k if on_failure == "uniform" else np.nan)
        q = q / q.sum()
        row = {
            "utt_id": manifest["utt_id"].iloc[i],
            "dataset": manifest["dataset"].iloc[i],
            "model": model,
            "strategy": strategy,
            "budget": budget,
        }
        row.update({f"p_{x}": q[j] for j, x in enumerate(labels)})
        row.update(
            pred_label=labels[int(np.argmax(q))] if ok else "",
            parsed_ok=ok,
            n_candidates=n_candidates,
            model_calls=budget,
            verifier_calls=0,
            prompt_tokens=100 * budget,
            gen_tokens=12 * n_candidates,
            wall_s=0.1 * budget,
            verifier_prompt_tokens=0,
            verifier_gen_tokens=0,
            verifier_wall_s=0.0,
            candidate_records=cands,
        )
        rows.append(row)
    return pd.DataFrame(rows)


PARAMS = {
    "models": {"small": {"params_b": 0.5}, "large": {"params_b": 7.0}},
    "scoring": {
        "js_base": "e",
        "kl_epsilon": 1e-6,
        "ece_bins": 5,
        "tie_policy": "exclude",
        "ambiguity_from": "manifest",
        "bootstrap_resamples": 200,
        "ci_level": 0.95,
    },
    "stats": {
        "baseline": "baseline",
        "permutation_resamples": 500,
        "alpha": 0.05,
        "holm_family": ["dataset", "model"],
        "mixed_model_metric": "js",
    },
}


def candidates_table(frames, labels=LABELS) -> pd.DataFrame:
    """The candidates table (``ambiemo.inference.candidates``) of prediction frames made here."""
    from ambiemo.inference.candidates import KEY_COLUMNS, candidates_frame

    frames = [frames] if isinstance(frames, pd.DataFrame) else frames
    rows = [
        (row, row["candidate_records"])
        for df in frames
        for row in df[[*KEY_COLUMNS, "candidate_records"]].to_dict("records")
    ]
    return candidates_frame(rows, labels)


def cells(
    manifest: pd.DataFrame, strategies=("baseline", "bon", "w-bon"), models=("small", "large"), budgets=None
) -> list[pd.DataFrame]:
    """Prediction cells for every model × strategy; the large model and weighted strategies are better."""
    budgets = budgets or {}
    out = []
    for mi, model in enumerate(models):
        for si, strategy in enumerate(strategies):
            for budget in budgets.get(strategy, [1]):
                quality = 0.2 + 0.3 * mi + 0.2 * si
                out.append(
                    predictions_df(
                        manifest, model, strategy, budget, seed=100 * mi + 10 * si + budget, quality=min(quality, 0.95)
                    )
                )
    return out


# -- a tiny corpus on disk, with audio, for the inference tests (the fake model answers it) ----------
TINY_N = 5


def write_tiny_manifest(folder: Path) -> Path:
    """Five utterances of half a second of noise, with votes; written with the manifest helpers
    (the ``manifest`` fixture of tests/inference/conftest.py)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(TINY_N):
        path = folder / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(8000)).astype("float32"), 16000)
        paths.append(str(path))
    info = pd.DataFrame(
        {
            "utt_id": [f"u{i}" for i in range(TINY_N)],
            "dataset": "tiny",
            "audio_path": paths,
            "duration_s": 0.5,
            "speaker": [f"s{i % 2}" for i in range(TINY_N)],
        }
    )
    votes = np.array([[3, 0, 0, 0], [1, 2, 0, 0], [0, 0, 2, 1], [1, 1, 1, 0], [0, 0, 0, 3]], dtype=float)
    label_set = LabelSet("four", LABELS)
    df, ambiguity = build_manifest(info, votes, votes.sum(axis=1).astype(int), label_set, AmbiguityBins())
    return write_manifest(df, folder / "manifest.parquet", label_set=label_set, ambiguity=ambiguity, exclusions={})


def tiny_params(tmp_path: Path, **fake_spec) -> dict:
    """Params for the fake model over the tiny corpus: every strategy, small budgets, a cache under ``tmp_path``."""
    return {
        "seed": 11,
        "paths": {"cache_dir": str(tmp_path / "cache")},
        "prompts": {"label_order": "canonical"},
        "parsing": {"on_failure": "uniform"},
        "models": {"fake": {"adapter": "fake", **fake_spec}},
        "strategies": {
            "verifier": {"model": "fake"},
            "bon": {"budgets": [2, 3]},
            "w-bon": {"budgets": [2, 3]},
            "self-consistency": {"budgets": [1, 2, 4]},
            "prompt-ensemble": {"budgets": [1, 3]},
            "alm-v": {"budgets": [3]},
            "w-alm-v": {"budgets": [3]},
        },
    }
