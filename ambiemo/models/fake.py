"""``fake``: a model whose answers you control, like lm-evaluation-harness's ``dummy``.

It runs the whole harness offline in tests and lets a test check a strategy's arithmetic against
candidates and scores it chose. Nothing is loaded; every answer is deterministic.

Spec (a ``params.yaml`` entry ``{adapter: fake, ...}``) or keyword arguments:

    answers         {utt_id or "*": [text, ...]}: candidate i of a request answers text i (cycled)
    logprobs        {utt_id or "*": [float, ...]}: candidate i's summed log-probability (cycled)
    ratings         {candidate text: reply}: what the model answers when asked to verify that text
    option_logprobs {option: float}: ``score_options`` values (options not named get -10)
    fail            [utt_id, ...]: requests for these raise ModelCallError (a model failure of that utterance)
    labels          label words for default answers (default: neutral, happy, angry, sad)
    logprobs_available, beam_search, option_scoring: capabilities (default true)
    wall_s          seconds reported per request (default 0.01), shared among its candidates
    sleep_s         seconds actually slept per generate/score_options call (default 0: crash tests kill mid-run)
    load_s          seconds actually slept when the model is built (default 0: "during model load")

``script`` (keyword only): ``script(request, config, index) -> str | (str, logprob) | (str, logprob,
n_tokens)`` overrides ``answers``/``logprobs`` for generation requests.

Without answers, candidate i of a request answers a JSON distribution drawn from a hash of the
request, the config and i, and a verifier request is answered with a rating drawn the same way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ambiemo.core.errors import ModelCallError
from ambiemo.models import base, register_model
from ambiemo.models.identity import COSMETIC_KEYS

DEFAULT_LABELS = ("neutral", "happy", "angry", "sad")


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _pick(table: dict[str, list[Any]] | None, utt_id: str, index: int) -> Any:
    if not table:
        return None
    values = table.get(utt_id, table.get("*"))
    if not values:
        return None
    return values[index % len(values)]


@register_model("fake")
class FakeModel(base.AudioLanguageModel):
    """A scripted model; see the module docstring for what can be set."""

    def __init__(
        self,
        key: str = "fake",
        *,
        answers: dict[str, list[str]] | None = None,
        logprobs: dict[str, list[float]] | None = None,
        ratings: dict[str, str] | None = None,
        option_logprobs: dict[str, float] | None = None,
        fail: Sequence[str] = (),
        labels: Sequence[str] = DEFAULT_LABELS,
        logprobs_available: bool = True,
        beam_search: bool = True,
        option_scoring: bool = True,
        wall_s: float = 0.01,
        script: Callable[[base.AudioRequest, base.GenerationConfig, int], Any] | None = None,
        model_id: str = "fake",
        revision: str | None = None,
        sleep_s: float = 0.0,
        load_s: float = 0.0,
    ) -> None:
        # Everything that shapes the answers is a setting: two differently scripted fakes never share a cache entry.
        settings = {
            "answers": answers,
            "logprobs": logprobs,
            "ratings": ratings,
            "option_logprobs": option_logprobs,
            "fail": sorted(fail),
            "labels": list(labels),
            "logprobs_available": logprobs_available,
            "beam_search": beam_search,
            "option_scoring": option_scoring,
            "wall_s": wall_s,
            "script": None if script is None else f"{script.__module__}.{script.__qualname__}",
        }
        super().__init__(key, model_id, revision, settings=settings)
        self.sleep_s = float(sleep_s)
        if load_s:
            time.sleep(float(load_s))
        self.answers, self.logprobs, self.ratings = answers, logprobs, ratings or {}
        self.option_logprobs = option_logprobs
        self.fail = set(fail)
        self.labels = tuple(labels)
        self.wall_s = float(wall_s)
        self.script = script
        self.capabilities = base.Capabilities(
            logprobs=logprobs_available,
            beam_search=beam_search,
            option_scoring=option_scoring,
            needs="nothing (a test double)",
        )
        self.requests_seen: list[tuple[str, str, base.GenerationConfig | None]] = []  # (kind, utt_id, config)

    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> FakeModel:
        # Keys every params.yaml model entry may carry, which say nothing about the fake's answers.
        generic = {"adapter", "id", "checkpoint", "revision", "dtype", "device_map", *COSMETIC_KEYS}
        options = {k: v for k, v in spec.items() if k not in generic}
        options.update({k: v for k, v in kwargs.items() if k not in ("cache_dir", "weights_dir")})  # nothing to store
        return cls(key, model_id=spec.get("id", "fake"), revision=spec.get("revision"), **options)

    @classmethod
    def spec_capabilities(cls, spec: dict[str, Any]) -> base.Capabilities:
        return base.Capabilities(
            logprobs=bool(spec.get("logprobs_available", True)),
            beam_search=bool(spec.get("beam_search", True)),
            option_scoring=bool(spec.get("option_scoring", True)),
            needs=str(spec.get("needs") or "nothing (a test double)"),
        )

    # -- generation -------------------------------------------------------------------------
    def _default_answer(self, request: base.AudioRequest, config: base.GenerationConfig, index: int) -> str:
        rng = _rng(request.audio_sha1(), request.conversation(), config.as_dict(), index)
        if any(m.role == "assistant" for m in request.messages):
            return str(int(rng.integers(0, 11)))
        p = np.round(rng.dirichlet(np.ones(len(self.labels))), 2)
        p[-1] = round(1.0 - p[:-1].sum(), 2)
        return json.dumps({label: float(abs(v)) for label, v in zip(self.labels, p, strict=True)})

    def _answer(
        self, request: base.AudioRequest, config: base.GenerationConfig, index: int
    ) -> tuple[str, float, int | None]:
        messages = request.messages
        if any(m.role == "assistant" for m in messages):  # a verifier request: rate the assistant's answer
            answer = [m.text for m in messages if m.role == "assistant"][-1]
            text = self.ratings.get(answer) or self._default_answer(request, config, index)
            return text, -1.0, None
        n_tokens = None
        if self.script is not None:
            out = self.script(request, config, index)
            text, logprob, *rest = out if isinstance(out, tuple) else (out, None)
            n_tokens = rest[0] if rest else None
        else:
            text, logprob = _pick(self.answers, request.utt_id, index), _pick(self.logprobs, request.utt_id, index)
            if text is None:
                text = self._default_answer(request, config, index)
        if logprob is None:
            logprob = -float(_rng(text, index).uniform(0.5, 5.0))
        return text, float(logprob), n_tokens

    def _generate(self, requests: list[base.AudioRequest], config: base.GenerationConfig) -> list[list[base.Candidate]]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        out = []
        for request in requests:
            self.requests_seen.append(("generate", request.utt_id, config))
            if request.utt_id in self.fail:
                raise ModelCallError(f"fake model {self.key!r}: scripted failure on {request.utt_id!r}", request.utt_id)
            prompt_tokens = sum(len(m.text.split()) for m in request.messages) + 25
            cands = []
            for i in range(config.n):
                text, logprob, n_tokens = self._answer(request, config, i)
                n_tokens = n_tokens or max(1, len(text) // 4)
                cands.append(
                    base.Candidate(
                        text=text,
                        logprob=logprob if self.capabilities.logprobs else None,
                        token_logprobs=[logprob / n_tokens] * n_tokens if self.capabilities.logprobs else None,
                        n_tokens=n_tokens,
                        meta={"prompt_tokens": prompt_tokens, "wall_s": self.wall_s / config.n},
                    )
                )
            out.append(cands)
        return out

    # -- option scoring ---------------------------------------------------------------------
    def _score_options(self, request: base.AudioRequest, options: list[str], prefix: str) -> base.OptionScores:
        self.requests_seen.append(("score_options", request.utt_id, None))
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if request.utt_id in self.fail:
            raise ModelCallError(f"fake model {self.key!r}: scripted failure on {request.utt_id!r}", request.utt_id)
        prompt_tokens = sum(len(m.text.split()) for m in request.messages) + 25
        if self.option_logprobs is not None:
            logprobs = np.array([float(self.option_logprobs.get(o, -10.0)) for o in options])
        else:
            rng = _rng(request.audio_sha1(), request.conversation(), list(options), prefix)
            logprobs = -rng.uniform(0.1, 6.0, size=len(options))
        return base.OptionScores(logprobs, prompt_tokens, self.wall_s)
