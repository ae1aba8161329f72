"""The contract every audio-language model adapter implements.

A strategy needs three things from a model: several candidate answers for one request,
each with its log-likelihood; the log-probability of each of a few short options (label
words) as the answer; and an account of what that cost. Everything model-specific (chat
template, audio placeholder tokens, feature extraction, provider API) stays behind this
contract.

What the pipeline calls on an adapter is all declared on ``AudioLanguageModel``:

- ``from_spec(key, spec, **kwargs)`` builds it from its ``params.yaml`` entry and
  ``spec_capabilities(spec)`` says what that entry can do without building it;
- ``generate`` and ``score_options`` / ``score_options_many`` are template methods: they check the
  request, call the adapter's ``_generate`` / ``_score_options`` and count ``usage`` once, here,
  from what the adapter returns (no adapter touches ``usage``); ``score_options_many`` returns
  each request's ``OptionScores`` (log-probabilities, prompt tokens, seconds), so option scoring
  is counted in a row's compute like generation;
- ``identity`` names the outputs in caches and provenance: the route, the adapter's ``version``,
  the checkpoint and revision, and ``settings_sha256``, a canonical hash of every
  output-affecting key of the params entry. The params key itself is not part of it (renaming a
  key reuses the cache), nor are the cosmetic keys in ``COSMETIC_KEYS``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np

from ambiemo.models.identity import (
    output_settings,
    settings_sha256,
)

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn of a conversation. ``audio=True`` marks the user turn that carries the clip."""

    role: Role
    text: str
    audio: bool = False


@dataclass
class AudioRequest:
    """One utterance's audio plus the conversation to run on it.

    ``waveform`` is mono float32 at ``sample_rate``; adapters resample to their own rate.
    Earlier assistant turns are allowed (the verifier needs them).
    """

    utt_id: str
    waveform: np.ndarray
    sample_rate: int
    messages: list[Message]

    def audio_sha1(self) -> str:
        """Content hash of the audio, part of every cache key."""
        h = hashlib.sha1()
        h.update(str(self.sample_rate).encode())
        h.update(np.ascontiguousarray(self.waveform, dtype=np.float32).tobytes())
        return h.hexdigest()

    def waveform_at(self, sample_rate: int) -> np.ndarray:
        """The clip as float32 mono at ``sample_rate``, resampled by ``ambiemo.data.audio.resample``
        (the one resampler of the project). A clip that is not mono is refused, not mixed down
        here: ``ambiemo.data.audio.load_audio`` makes every clip mono when it reads it."""
        wav = np.asarray(self.waveform, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"utterance {self.utt_id!r}: waveform must be mono (1-D), got shape {wav.shape}")
        if self.sample_rate != sample_rate:
            from ambiemo.data.audio import resample

            wav = resample(wav, self.sample_rate, sample_rate)
        return np.ascontiguousarray(wav, dtype=np.float32)

    def conversation(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.messages]

    def audio_turn(self) -> int:
        """Index of the turn that carries the clip: the one user turn marked ``audio=True``.

        The one rule for every route, local and API. A conversation with no marked turn raises
        rather than falling back to a guess (say, the first user turn): the study's prompts
        (``ambiemo.strategies.prompts``) always mark it, so an unmarked conversation comes from code that
        forgot to, and where the clip sits (before or after an earlier exchange) changes the
        answer. Failing on the first request, naming the utterance, costs nothing; numbers made
        under a silent assumption would. Two marked turns, or a marked turn that is not a user
        turn, raise too (one clip per request; no chat template takes audio from the system or
        the assistant).
        """
        marked = [i for i, m in enumerate(self.messages) if m.audio]
        if len(marked) > 1:
            raise ValueError(
                f"utterance {self.utt_id!r}: {len(marked)} turns are marked audio=True; one clip per request"
            )
        if not marked:
            raise ValueError(
                f"utterance {self.utt_id!r}: no message has audio=True, so the model would not know where the "
                "clip goes; mark the user turn that carries it (Message('user', text, audio=True))"
            )
        turn = self.messages[marked[0]]
        if turn.role != "user":
            raise ValueError(f"utterance {self.utt_id!r}: only a user turn can carry the audio, not {turn.role!r}")
        return marked[0]


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. ``mode`` is greedy (n must be 1), sample, or beam (n <= num_beams)."""

    mode: Literal["greedy", "sample", "beam"] = "greedy"
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.mode == "greedy" and self.n != 1:
            raise ValueError("greedy decoding gives one candidate; use mode='sample' or 'beam' for n > 1")
        if self.mode == "beam" and self.num_beams < self.n:
            raise ValueError(f"beam search with num_beams={self.num_beams} cannot return n={self.n} candidates")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    """One generated answer.

    ``logprob`` is the summed log-probability of the generated tokens (None where the
    route gives none); ``token_logprobs`` the per-token values.
    """

    text: str
    logprob: float | None
    token_logprobs: list[float] | None
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    def mean_logprob(self) -> float | None:
        if self.logprob is None:
            return None
        return self.logprob / max(self.n_tokens, 1)

    @classmethod
    def failed(
        cls, n: int, reason: str, *, prompt_tokens: int = 0, wall_s: float = 0.0, **meta: Any
    ) -> list[Candidate]:
        """``n`` candidates recording a failed request (no text, no log-probabilities): ``meta["error"]``
        is the reason, the request's seconds are shared among them; every route records a failure so."""
        info = {"error": reason, **meta, "prompt_tokens": prompt_tokens, "wall_s": wall_s / max(n, 1)}
        return [cls("", None, None, 0, meta=dict(info)) for _ in range(n)]


@dataclass
class Usage:
    """What a model has cost so far. Cache hits count in ``cache_hits``, not in ``calls``."""

    calls: int = 0
    prompt_tokens: int = 0
    gen_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    failures: int = 0

    def add(self, other: Usage) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Capabilities:
    """What a route can do; strategies refuse models that lack what they need."""

    logprobs: bool = True  # summed log-likelihood of generated text
    beam_search: bool = True
    option_scoring: bool = True  # log p(option | request) without generation
    needs: str = ""  # human-readable: "GPU 16 GB", "OPENAI_API_KEY", "extra: api"
    max_audio_s: float | None = None  # the audio window the model hears (30.0 for Whisper encoders); None: no limit


@dataclass
class OptionScores:
    """What an adapter's ``_score_options`` returns, and ``score_options_many`` gives back:
    ``log p(prefix + option | request)`` per option (NaN throughout for a failed request), the
    prompt's tokens (None where the route reports none) and the seconds the call took (NaN where
    unknown). The generation cache stores all three, so a rerun reports the first run's usage."""

    logprobs: np.ndarray
    prompt_tokens: int | None = None
    wall_s: float = math.nan
    cost_usd: float = 0.0  # what the call cost (API routes)


class CapabilityError(RuntimeError):
    """A strategy asked a model for something its route cannot do."""


class AudioLanguageModel:
    """Base class of all adapters.

    An adapter implements ``_generate`` (and ``_score_options`` if its route can), declares its
    ``capabilities`` and ``version``, and builds itself in ``from_spec``; register it with
    ``@register_model("<route>")`` from ``ambiemo.models``. The public ``generate`` and
    ``score_options`` are not overridden by adapters (only by wrappers such as the cache, which
    delegate to a model's own).
    """

    capabilities: Capabilities = Capabilities()
    sample_rate: int = 16_000
    # Bump when the adapter's output logic changes (prompt building, decoding, feature
    # extraction): it is part of ``identity``, so cached outputs of the old logic are not reused.
    version: ClassVar[int] = 1
    # Output-affecting settings the adapter reads, with the defaults it applies when a params entry
    # leaves them out: part of ``settings``, so writing a default out does not change the identity.
    setting_defaults: ClassVar[dict[str, Any]] = {}
    default_route: ClassVar[str] = ""  # set by @register_model (the first name a class is registered under)

    def __init__(
        self,
        key: str,
        model_id: str,
        revision: str | None = None,
        *,
        route: str | None = None,
        settings: dict[str, Any] | None = None,
        needs: str = "",
    ) -> None:
        self.key = key
        self.model_id = model_id
        self.revision = revision
        self.route = route or self.default_route or type(self).__name__
        self.settings = output_settings(settings or {}, self.setting_defaults)
        self.usage = Usage()
        if needs:  # the params entry's own word on what it needs overrides the class's
            self.capabilities = replace(type(self).capabilities, needs=needs)

    # ----------------------------------------------------------------------------- building
    @classmethod
    def from_spec(cls, key: str, spec: dict[str, Any], **kwargs: Any) -> AudioLanguageModel:
        """Build the model ``key`` from its ``params.yaml`` entry; ``kwargs`` carry ``cache_dir``
        (where local weights may be built or converted). Loads nothing: weights load on the
        first real call, so a fully cached rerun never loads them."""
        raise NotImplementedError(f"{cls.__name__} does not build from a params entry: implement from_spec")

    @classmethod
    def spec_capabilities(cls, spec: dict[str, Any]) -> Capabilities:
        """What the params entry ``spec`` can do, without building anything (``ambiemo models list``)."""
        return replace(cls.capabilities, needs=str(spec.get("needs") or cls.capabilities.needs))

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies this model's outputs in caches and provenance (not the params key)."""
        return {
            "route": self.route,
            "version": type(self).version,
            "model_id": self.model_id,
            "revision": self.revision,
            "settings_sha256": settings_sha256(self.settings),
        }

    # ----------------------------------------------------------------------------- the two calls
    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        """Return ``config.n`` candidates for each request, in request order, and count their usage."""
        requests = list(requests)
        if not requests:
            return []
        if config.mode == "beam" and not self.capabilities.beam_search:
            raise CapabilityError(
                f"model {self.key!r} ({self.route}) has no beam search; use mode='sample' or a strategy that samples"
            )
        for r in requests:
            r.audio_turn()  # one rule on every route, checked before any work
        results = self._generate(requests, config)
        if len(results) != len(requests):
            raise RuntimeError(f"model {self.key!r} returned {len(results)} results for {len(requests)} requests")
        for request, cands in zip(requests, results, strict=True):
            if len(cands) != config.n:
                raise RuntimeError(
                    f"model {self.key!r} returned {len(cands)} candidates for utterance {request.utt_id!r}, "
                    f"expected n={config.n}"
                )
            self._count(cands)
        return results

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        """Return ``log p(prefix + option | request)`` for each option (summed over its tokens)."""
        if not self.capabilities.option_scoring:
            raise CapabilityError(f"model {self.key!r} ({self.route}) cannot score options")
        options = list(options)
        if not options:
            raise ValueError(f"utterance {request.utt_id!r}: score_options needs at least one option")
        request.audio_turn()
        return self._count_scores(self._score_options(request, options, prefix), len(options)).logprobs

    def score_options_many(
        self, requests: Sequence[AudioRequest], options: Sequence[str], prefix: str = ""
    ) -> list[OptionScores]:
        """``score_options`` for several requests in one call (a verifier rating B candidates of a
        batch of utterances, label scoring a batch), each with what it cost (``OptionScores``: the
        log-probabilities, the prompt's tokens, the call's seconds): routes that can run them together
        (an API's concurrent requests) override ``_score_options_many``; usage is counted per request.
        Strategies call this one, so that a row's compute includes its option scoring."""
        requests, options = list(requests), list(options)
        if not requests:
            return []
        if not self.capabilities.option_scoring:
            raise CapabilityError(f"model {self.key!r} ({self.route}) cannot score options")
        if not options:
            raise ValueError("score_options_many needs at least one option")
        for r in requests:
            r.audio_turn()
        outs = self._score_options_many(requests, options, prefix)
        if len(outs) != len(requests):
            raise RuntimeError(f"model {self.key!r} scored {len(outs)} requests for {len(requests)}")
        return [self._count_scores(out, len(options)) for out in outs]

    def _count_scores(self, out: OptionScores, n_options: int) -> OptionScores:
        if not isinstance(out, OptionScores):
            raise TypeError(f"model {self.key!r}: _score_options must return OptionScores, got {type(out).__name__}")
        logprobs = np.asarray(out.logprobs, dtype=np.float64)
        if logprobs.shape != (n_options,):
            raise RuntimeError(f"model {self.key!r} scored {logprobs.shape} for {n_options} options")
        self.usage.cost_usd += float(out.cost_usd or 0.0)
        if np.isnan(logprobs).any():
            self.usage.failures += 1
        else:
            self.usage.calls += 1
            self.usage.prompt_tokens += int(out.prompt_tokens or 0)
        tokens = None if out.prompt_tokens is None else int(out.prompt_tokens)
        return replace(out, logprobs=logprobs, prompt_tokens=tokens, wall_s=float(out.wall_s))

    def _score_options_many(self, requests: list[AudioRequest], options: list[str], prefix: str) -> list[OptionScores]:
        """One ``_score_options`` per request, in order; override where the route can do better."""
        return [self._score_options(r, options, prefix) for r in requests]

    def _generate(self, requests: list[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        """``config.n`` candidates per request. Each candidate's ``meta`` carries ``prompt_tokens``
        and ``wall_s``, and may carry ``cost_usd`` (its share of the call's price), ``call`` (which
        of several calls for one request made it; candidates of one call share its prompt) and
        ``error`` (the request failed: the reason; nothing else of it is used)."""
        raise NotImplementedError(f"{type(self).__name__} implements no _generate")

    def _score_options(self, request: AudioRequest, options: list[str], prefix: str) -> OptionScores:
        raise CapabilityError(f"model {self.key!r} ({self.route}) cannot score options")

    def _count(self, cands: Sequence[Candidate]) -> None:
        """Usage of one request's candidates: per call, one call and its prompt (or one failure)."""
        calls: dict[Any, list[Candidate]] = {}
        for c in cands:
            calls.setdefault(c.meta.get("call", 0), []).append(c)
            self.usage.cost_usd += float(c.meta.get("cost_usd") or 0.0)
        for group in calls.values():
            if any("error" in c.meta for c in group):
                self.usage.failures += 1
                continue
            self.usage.calls += 1
            self.usage.prompt_tokens += int(group[0].meta.get("prompt_tokens") or 0)
            self.usage.gen_tokens += sum(int(c.n_tokens) for c in group)

    def require(self, capability: str, strategy: str) -> None:
        if not getattr(self.capabilities, capability):
            raise CapabilityError(
                f"strategy {strategy!r} needs {capability.replace('_', ' ')}, which model {self.key!r} "
                f"({self.route}) does not provide; choose another strategy or model"
            )
