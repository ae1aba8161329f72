"""Batch-invariant, resume-exact sampling; CUDA out-of-memory handling; audio that reaches the model.

Sampled candidates must depend only on (seed, model identity, conversation, audio, generation
settings, sample index): never on batch size, batch composition, manifest order or what a cache
already held. The tiny Qwen2-Audio (and, marked slow, the cascade) is run every way a real run
can split the same work, and the candidates compared token for token.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ambiemo.models import load_model
from ambiemo.models.base import AudioRequest, GenerationConfig, Message
from ambiemo.models.hf.sampling import GumbelMaxSampler, sample_seed

SR = 16_000
SAMPLE = GenerationConfig(mode="sample", n=4, max_new_tokens=8, temperature=1.0, top_p=0.95, seed=5)
# Log-probabilities of one candidate may differ in the last bits between batch sizes: padding
# changes the shapes of the matrix products. Measured on CPU: at most 5e-7 per token.
LOGPROB_BOUND = 1e-5


def _clip(seconds: float, seed: int, pitch: float = 150.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (pitch + 40 * t) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _request(utt: str, wav: np.ndarray, text: str = "Which emotion is this? Answer with one word.") -> AudioRequest:
    return AudioRequest(utt, wav, SR, [Message("system", "You rate emotions."), Message("user", text, audio=True)])


REQUESTS = [_request(f"u{i}", _clip(0.4 + 0.23 * i, seed=i)) for i in range(9)]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("sampling-cache")


@pytest.fixture(scope="module")
def tiny(cache_root):
    return load_model(
        "tiny-qwen2-audio", {"adapter": "hf-qwen2-audio", "checkpoint": "tiny:qwen2-audio"}, cache_dir=cache_root
    )


def _run(model, requests, batch_size, config=SAMPLE):
    model.batch_size = batch_size
    return {r.utt_id: cands for r, cands in zip(requests, model.generate(requests, config), strict=True)}


def _compare(reference, other) -> tuple[int, int]:
    """(candidates compared, identical token ids); asserts the log-prob bound on identical ones."""
    compared = identical = 0
    for utt, cands in other.items():
        for a, b in zip(reference[utt], cands, strict=True):
            compared += 1
            if a.meta["token_ids"] == b.meta["token_ids"] and a.text == b.text:
                identical += 1
                np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=LOGPROB_BOUND, rtol=0)
    return compared, identical


def test_samples_do_not_depend_on_batch_size_order_or_resume(tiny):
    reference = _run(tiny, REQUESTS, 1)
    runs = {
        "batch 3": _run(tiny, REQUESTS, 3),
        "batch 8": _run(tiny, REQUESTS, 8),
        "reversed order, batch 3": _run(tiny, REQUESTS[::-1], 3),
        "resumed: the missing subset, batch 8": _run(tiny, [REQUESTS[i] for i in (7, 1, 4, 0, 8)], 8),
    }
    total = [0, 0]
    for name, out in runs.items():
        compared, identical = _compare(reference, out)
        assert identical == compared, f"{name}: {compared - identical} of {compared} candidates differ"
        total[0] += compared
        total[1] += identical
    assert total == [3 * 9 * 4 + 5 * 4] * 2  # 128 candidates compared, 128 identical
    # Not four copies: the streams differ between candidates and between utterances.
    texts = [c.meta["token_ids"] for cands in reference.values() for c in cands]
    assert len({tuple(t) for t in texts}) > len(texts) // 2


def test_candidate_i_is_the_same_whatever_n_and_the_seed_changes_it(tiny):
    four = _run(tiny, REQUESTS[:3], 3)
    two = _run(tiny, REQUESTS[:3], 2, GenerationConfig(**{**SAMPLE.as_dict(), "n": 2}))
    for utt in two:
        assert [c.meta["token_ids"] for c in two[utt]] == [c.meta["token_ids"] for c in four[utt][:2]]
    reseeded = _run(tiny, REQUESTS[:3], 3, GenerationConfig(**{**SAMPLE.as_dict(), "seed": 6}))
    assert any([c.meta["token_ids"] for c in reseeded[u]] != [c.meta["token_ids"] for c in four[u]] for u in four)


def test_sample_seed_covers_its_inputs_and_nothing_else(tiny):
    r = REQUESTS[0]
    base = sample_seed(tiny.identity, r, SAMPLE, 0)
    assert base == sample_seed(tiny.identity, r, GenerationConfig(**{**SAMPLE.as_dict(), "n": 8}), 0)
    assert base == sample_seed(tiny.identity, _request("renamed", r.waveform), SAMPLE, 0)  # the id is no input
    different = [
        sample_seed(tiny.identity, r, SAMPLE, 1),
        sample_seed(tiny.identity, r, GenerationConfig(**{**SAMPLE.as_dict(), "seed": 6}), 0),
        sample_seed(tiny.identity, r, GenerationConfig(**{**SAMPLE.as_dict(), "temperature": 0.7}), 0),
        sample_seed(tiny.identity, r, GenerationConfig(**{**SAMPLE.as_dict(), "top_p": 0.9}), 0),
        sample_seed(tiny.identity, _request("u0", r.waveform * 0.5), SAMPLE, 0),
        sample_seed(tiny.identity, _request("u0", r.waveform, text="Other?"), SAMPLE, 0),
        sample_seed({**tiny.identity, "revision": "v2"}, r, SAMPLE, 0),
    ]
    assert base not in different and len(set(different)) == len(different)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (1.3, 0.8)])
def test_gumbel_max_draws_from_the_tempered_truncated_softmax(temperature, top_p):
    # Reference: the distribution computed by hand (numpy), compared by a chi-square test.
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    draws = 20_000
    sampler = GumbelMaxSampler(range(draws), temperature, top_p, "cpu")
    picks = sampler(None, logits.expand(draws, -1)).argmax(-1).numpy()
    p = np.exp(logits[0].numpy().astype(np.float64) / temperature)
    p /= p.sum()
    order = np.argsort(-p)
    keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]  # smallest set reaching top_p
    q = np.zeros_like(p)
    q[keep] = p[keep] / p[keep].sum()
    counts = np.bincount(picks, minlength=len(p))
    assert counts[q == 0].sum() == 0  # truncated tokens are never drawn
    _, pvalue = stats.chisquare(counts[q > 0], draws * q[q > 0])
    assert pvalue > 1e-3


# ------------------------------------------------------------------------------ CUDA out of memory
def test_cuda_oom_halves_the_batch_down_to_one_then_records_the_utterance(tiny, monkeypatch):
    requests = REQUESTS[:6]
    reference = _run(tiny, requests, 6)
    original = type(tiny)._run_batch
    tried: list[int] = []

    def run_batch(self, rows, config, seeds):
        tried.append(len(rows))
        if len(rows) > 2 or any(len(r.input_ids) == len(self._encode(requests[4]).input_ids) for r in rows):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, rows, config, seeds)

    monkeypatch.setattr(type(tiny), "_run_batch", run_batch)
    before = tiny.usage.failures
    out = _run(tiny, requests, 6)
    assert tried[:2] == [6, 3] and max(tried[2:]) <= 2 and 1 in tried
    failed = out["u4"]
    assert [("error" in c.meta) for c in failed] == [True] * SAMPLE.n
    assert "CUDA out of memory with the utterance alone" in failed[0].meta["error"]
    assert tiny.usage.failures == before + 1
    for utt, cands in out.items():  # the others are exactly what an uninterrupted run gave
        if utt != "u4":
            assert [c.meta["token_ids"] for c in cands] == [c.meta["token_ids"] for c in reference[utt]]


# ------------------------------------------------------------------------------ audio reaches the model
FIRST_TOKENS = ["neutral", "happy", "angry", "sad", "a", "7", "The", "{"]


def _first_token_logprobs(model, request) -> np.ndarray:
    """log p(first answer token) for several single tokens, through the public contract."""
    options = [o for o in FIRST_TOKENS if len(model.tokenizer(o, add_special_tokens=False)["input_ids"]) == 1]
    assert len(options) >= 3
    return model.score_options(request, options)


@pytest.mark.parametrize(
    ("arch", "adapter"),
    [
        ("qwen2-audio", "hf-qwen2-audio"),
        ("qwen2.5-omni", "hf-qwen2.5-omni"),
        ("audio-flamingo-3", "hf-audio-flamingo-3"),
    ],
)
def test_the_first_answer_token_depends_on_the_audio(arch, adapter, cache_root):
    model = load_model(f"tiny-{arch}", {"adapter": adapter, "checkpoint": f"tiny:{arch}"}, cache_dir=cache_root)
    model._ensure_loaded()
    a = _request("same", _clip(1.2, seed=1, pitch=140.0))
    b = _request("same", _clip(1.2, seed=2, pitch=320.0))  # same length and prompt: only the samples differ
    assert model._encode(a).input_ids == model._encode(b).input_ids
    la, lb = _first_token_logprobs(model, a), _first_token_logprobs(model, b)
    assert np.max(np.abs(la - lb)) > 1e-4, f"{arch}: the answer does not depend on the audio"
    np.testing.assert_array_equal(la, _first_token_logprobs(model, a))  # and only on it
