"""``CachedModel``: any model behind the generation cache, with the same contract."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ambiemo.inference.cache.keys import (
    candidate_from_json,
    candidate_to_json,
    generation_keys,
    identity_sha,
    scores_from_json,
    scores_to_json,
    scoring_key,
)
from ambiemo.inference.cache.store import GenerationCache
from ambiemo.inference.wrapper import ModelWrapper
from ambiemo.models.base import AudioLanguageModel, AudioRequest, Candidate, GenerationConfig, OptionScores


class CachedModel(ModelWrapper):
    """Wraps any ``AudioLanguageModel`` with the same contract, answering from the cache first.

    Only requests with at least one missing candidate reach the wrapped model, batched together
    in one ``generate`` call; when everything hits, the wrapped model is not touched at all (an
    adapter that loads its weights lazily never loads them). Results come back JSON-decoded
    from what was stored, also on a miss, so a first run and its rerun return identical
    candidates. ``usage`` is the wrapped model's: ``calls`` counts real calls only, and
    ``cache_hits`` counts requests (or ``score_options`` calls) answered entirely from the cache.
    On a read-only cache a miss raises ``CacheError`` (naming the file and its permission)
    before the wrapped model is called.
    """

    OWN = frozenset({"model", "cache", "_registered"})

    def __init__(self, model: AudioLanguageModel, cache: GenerationCache) -> None:
        super().__init__(model)
        self.cache = cache
        self._registered: str | None = None

    def _identity_sha(self) -> str:
        """The identity's name in the cache file, recorded there once per wrapper (with the params key)."""
        sha = identity_sha(self.identity)
        if sha != self._registered:
            self._registered = self.cache.register(self.identity, self.key)
        return sha

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        identity, ident = self.identity, self._identity_sha()
        keys = [generation_keys(identity, r, config) for r in requests]
        stored = self.cache.get_many([k for ks in keys for k in ks])
        results: list[list[Candidate] | None] = [None] * len(requests)
        todo = []
        for j, ks in enumerate(keys):
            if all(k in stored for k in ks):
                results[j] = [candidate_from_json(stored[k]) for k in ks]
            else:
                todo.append(j)
        n_hits = len(requests) - len(todo)
        self.usage.cache_hits += n_hits
        self.cache.count(ident, n_hits, len(todo))
        if todo:
            self.cache.require_writable(len(todo), f"model {self.key!r} (generate)")
            fresh = self.model.generate([requests[j] for j in todo], config)
            if len(fresh) != len(todo):
                raise RuntimeError(f"model {self.key!r} returned {len(fresh)} results for {len(todo)} requests")
            items = []
            for j, cands in zip(todo, fresh, strict=True):
                if len(cands) != config.n:
                    raise RuntimeError(
                        f"model {self.key!r} returned {len(cands)} candidates for utterance "
                        f"{requests[j].utt_id!r}, expected n={config.n}"
                    )
                if any("error" in c.meta for c in cands):
                    results[j] = list(cands)  # a failed request: returned as is, tried again next run
                    continue
                encoded = [candidate_to_json(c) for c in cands]
                items += zip(keys[j], encoded, strict=True)
                results[j] = [candidate_from_json(s) for s in encoded]
            self.cache.put_many(ident, self.key, "generate", items)
        return results  # type: ignore[return-value]

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        return self.score_options_many([request], options, prefix)[0].logprobs

    def score_options_many(
        self, requests: Sequence[AudioRequest], options: Sequence[str], prefix: str = ""
    ) -> list[OptionScores]:
        """Each request from the cache where it is there; the others in one call to the model. An
        entry holds the log-probabilities with the call's prompt tokens and seconds (``scores_to_json``),
        so a rerun reports the usage of the call that made them; an entry without them (written
        before they were stored) is not used: it counts as stale and is recomputed."""
        ident = self._identity_sha()
        requests, options = list(requests), list(options)
        keys = [scoring_key(self.identity, r, options, prefix) for r in requests]
        stored = self.cache.get_many(keys)
        out: list[OptionScores | None] = [None] * len(requests)
        todo = []
        for j, key in enumerate(keys):
            value = stored.get(key)
            scores = None if value is None else scores_from_json(value)
            if value is not None and scores is None:
                self.cache.report("stale", key, self.key, ident)
            if scores is None:
                todo.append(j)
            else:
                out[j] = scores
        hits = len(requests) - len(todo)
        self.usage.cache_hits += hits
        self.cache.count(ident, hits, len(todo))
        if todo:
            self.cache.require_writable(len(todo), f"model {self.key!r} (score_options)")
            fresh = self.model.score_options_many([requests[j] for j in todo], options, prefix)
            items = []
            for j, scores in zip(todo, fresh, strict=True):
                logprobs = np.asarray(scores.logprobs, dtype=np.float64)
                if logprobs.shape != (len(options),):
                    raise RuntimeError(f"model {self.key!r} scored {logprobs.shape} for {len(options)} options")
                if np.isnan(logprobs).any():  # a failed request: not cached
                    out[j] = scores
                    continue
                encoded = scores_to_json(scores)
                items.append((keys[j], encoded))
                out[j] = scores_from_json(encoded)
            if items:
                self.cache.put_many(ident, self.key, "score_options", items)
        return [x for x in out if x is not None]  # every position is filled above
