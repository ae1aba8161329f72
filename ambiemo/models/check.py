"""``ambiemo models check KEY``: a live preflight of a served or API model before a paid run.

Real servers drop audio silently (vLLM #16240: beam search dropped the clip; #46250: Qwen2-Audio
under transformers 5.x answers only ``<|audio_bos|>``), ignore ``n`` or the seed, or answer under
another model's name (a retired id routed to its successor). The project's own tests cannot see
any of that; this check asks the live server, with the run's real prompt, about four clips of
clearly different sound: two speech clips of the demo corpus (different emotions), silence and a
440 Hz tone. It fails, naming the reason, when

- a request fails, or the model refuses the answer format (no answer parses as a distribution);
- the answers (and, with log-probabilities, their log-probabilities) are the same for every clip:
  the audio does not reach the model;
- log-probabilities are asked for and none come back;
- a sampled request for ``n`` answers gets fewer (``n`` ignored), or the same seeded request sent
  twice gets different answers (the seed ignored);
- beam search (where the entry uses it) fails or returns fewer beams;
- the response names another model than the one asked.

It reports the server's model list (vLLM's ``/v1/models``: id and root), the name each answer came
under, and each request's latency. Nothing is cached: every request goes to the server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
# Two answers whose total log-probabilities differ by less than this are the same answer.
LOGPROB_ATOL = 1e-4


@dataclass
class CheckReport:
    key: str
    model_id: str
    failures: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # kind, clip, latency_s, served_model, text
    server_models: list[dict[str, Any]] | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model_id": self.model_id,
            "ok": self.ok,
            "failures": self.failures,
            "requests": self.requests,
            "server_models": self.server_models,
        }


def probe_clips(seconds: float = 1.5) -> dict[str, np.ndarray]:
    """Two demo speech clips of different emotions (espeak-ng, as the demo corpus), silence, a tone."""
    from ambiemo.data import demo

    design = demo.design_corpus(4, seed=0)
    a, b = design[0], design[2]  # different dominant emotions (they cycle)
    rate, waves = demo.synthesise([(c.text, c.voice, c.prosody, i) for i, c in enumerate((a, b))])
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return {
        f"speech-{a.dominant}": demo._to_16k(waves[0], rate),
        f"speech-{b.dominant}": demo._to_16k(waves[1], rate),
        "silence": np.zeros_like(t, dtype=np.float32),
        "tone-440Hz": (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
    }


def _labels(params: dict[str, Any]) -> list[str]:
    run = params.get("run") or {}
    datasets = params.get("datasets") or {}
    for ds in run.get("datasets") or []:
        label_set = (datasets.get(ds) or {}).get("label_set")
        if label_set:
            return list(params["label_sets"][label_set]["labels"])
    return ["neutral", "happy", "angry", "sad"]


def server_models(model: Any) -> list[dict[str, Any]] | None:
    """What a served route's server lists at ``/v1/models`` (id, root), or None where it lists nothing."""
    if getattr(model, "route", "") != "openai-compatible":
        return None
    import httpx

    out = []
    for url in model.base_urls:
        base = (model._url(url) or "").rstrip("/")
        try:
            r = httpx.get(f"{base}/models", timeout=min(10.0, model.timeout_s), trust_env=False)
            data = r.json().get("data", []) if r.status_code == 200 else []
        except Exception as e:  # the check reports it; a server without /models is not a failure in itself
            out.append({"endpoint": base, "error": f"{type(e).__name__}: {e}"})
            continue
        out += [{"endpoint": base, "id": m.get("id"), "root": m.get("root")} for m in data]
    return out


def preflight(params: dict[str, Any], key: str, clips: dict[str, np.ndarray] | None = None) -> CheckReport:
    """Run the checks against model ``key``'s live server (see the module docstring)."""
    from ambiemo.inference.run import model_spec
    from ambiemo.models import load_model
    from ambiemo.models.api.client import ApiModel
    from ambiemo.models.api.faults import ConfigurationError
    from ambiemo.models.base import AudioRequest, GenerationConfig
    from ambiemo.strategies import strategy_settings
    from ambiemo.strategies.prompts import PromptBook

    spec = model_spec(params, key)
    # A preflight should answer in seconds: two attempts per request, no long waits.
    spec["retry"] = {**(spec.get("retry") or {}), "max_attempts": 2, "max_total_s": 30.0, "breaker_after": 0}
    model = load_model(key, spec)
    if not isinstance(model, ApiModel):
        raise ValueError(
            f"`ambiemo models check` asks a live server; models.{key} ({spec.get('adapter')}) runs in process: "
            "its tests run it on a tiny instance"
        )
    report = CheckReport(key, model.model_id)
    labels = _labels(params)
    settings = strategy_settings(params)
    book = PromptBook.from_params(params, labels)
    clips = clips if clips is not None else probe_clips()
    max_new = int(settings["max_new_tokens"]["base"]) + int(settings["max_new_tokens"]["per_label"]) * len(labels)
    seed = int(params.get("seed", 0))

    def ask(kind: str, name: str, config: GenerationConfig) -> list[Any] | None:
        request = AudioRequest(f"check-{name}", clips[name], SAMPLE_RATE, book.ask("distribution", "check").messages)
        t0 = time.perf_counter()
        try:
            cands = model.generate([request], config)[0]
        except ConfigurationError as e:
            report.failures.append(f"{kind} request ({name}): {e}")
            return None
        latency = round(time.perf_counter() - t0, 3)
        served = next((c.meta.get("served_model") for c in cands if c.meta.get("served_model")), None)
        report.requests.append(
            {"kind": kind, "clip": name, "latency_s": latency, "served_model": served, "texts": [c.text for c in cands]}
        )
        errors = [c.meta["error"] for c in cands if "error" in c.meta]
        if errors:
            reason = errors[0]
            if "choices" in reason and "returned" in reason:
                reason += ": the server ignores `n`"
            report.failures.append(f"{kind} request ({name}) failed: {reason}")
            return None
        return cands

    greedy = GenerationConfig(mode="greedy", n=1, max_new_tokens=max_new, seed=seed)
    answers = {name: ask("greedy", name, greedy) for name in clips}
    got = {k: v[0] for k, v in answers.items() if v}
    if len(got) == len(clips):
        _judge_greedy(report, list(got.values()), labels, bool(model.capabilities.logprobs))
    first = next(iter(clips))
    sample = GenerationConfig(
        mode="sample", n=3, max_new_tokens=max_new, temperature=float(settings["sampling"]["temperature"]), seed=seed
    )
    runs = [ask("sampled n=3", first, sample) for _ in range(2)]
    if all(runs) and [c.text for c in runs[0]] != [c.text for c in runs[1]]:
        report.failures.append(
            "the same seeded sampled request gave different answers twice: the server ignores the seed "
            "(answers would depend on the batch and the endpoint)"
        )
    if model.capabilities.beam_search:
        ask("beam n=2", first, GenerationConfig(mode="beam", n=2, num_beams=2, max_new_tokens=max_new, seed=seed))
    report.server_models = server_models(model)
    listed = [m.get("id") for m in report.server_models or [] if m.get("id")]
    if report.server_models is not None and listed and model.model_id not in listed:
        report.failures.append(f"the server lists {listed}, not {model.model_id!r}")
    return report


def _judge_greedy(report: CheckReport, got: list[Any], labels: list[str], logprobs: bool) -> None:
    """The greedy answers to the four clips: format refused, log-probabilities ignored, audio ignored."""
    from ambiemo.strategies.parsing import parse_distribution

    texts = {c.text for c in got}
    lps = [c.logprob for c in got]
    parsed = [parse_distribution(c.text, labels) for c in got]
    refusals = [c.meta.get("refusal") for c in got if c.meta.get("refusal")]
    if refusals or all(p is None for p in parsed):
        why = f" (refusal: {refusals[0]!r})" if refusals else f" (first answer: {next(iter(texts))[:120]!r})"
        report.failures.append(f"the model refuses the answer format: no answer parses as a distribution{why}")
    if logprobs and any(c.token_logprobs is None for c in got):
        report.failures.append("log-probabilities were asked for and the server returned none (logprobs ignored)")
    same_lp = all(x is not None for x in lps) and float(np.ptp(lps)) < LOGPROB_ATOL
    if len(texts) == 1 and (same_lp or any(x is None for x in lps)):
        report.failures.append(
            "the answers do not depend on the audio: speech, silence and a tone got the identical answer "
            f"{next(iter(texts))[:120]!r}"
            + (" with identical log-probabilities" if same_lp else " (no log-probabilities to tell them apart)")
            + "; the server may drop the clip (see docs/serving.md, known issues)"
        )


def format_report(report: CheckReport) -> str:
    lines = [f"models check {report.key} ({report.model_id}): {'PASS' if report.ok else 'FAIL'}"]
    for r in report.requests:
        lines.append(
            f"  {r['kind']:<12} {r['clip']:<16} {r['latency_s']:>7.3f} s  served as {r['served_model'] or '?'}: "
            f"{(r['texts'][0] if r['texts'] else '')[:60]!r}"
        )
    for m in report.server_models or []:
        listed = m.get("error") or f"model {m.get('id')} (root {m.get('root')})"
        lines.append(f"  server {m.get('endpoint')}: {listed}")
    lines += [f"  FAIL: {f}" for f in report.failures]
    return "\n".join(lines)
