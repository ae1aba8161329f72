"""The errors that decide whether an inference run records a failure and goes on, or stops.

An inference run answers thousands of utterances for hours. Two kinds of exception reach it:

* a failure that concerns one utterance only: its audio cannot be used (``AudioError``), or the
  model or API could not answer it (``ModelCallError``: a request that failed for good after its
  retries, a refusal, a CUDA out-of-memory at batch size 1). It is recorded with the utterance id
  and its reason, and the run goes on;
* anything else: a programming error (``TypeError``, ``AttributeError``, ``KeyError`` in a
  strategy, a schema violation) or a configuration error that would fail every utterance alike
  (a wrong API key). It stops the run at once with its traceback; a recorded "model failure"
  would hide it.

Adapters raise ``ModelCallError`` (or return candidates whose ``meta`` has ``"error"``, which
``ambiemo.inference.run`` turns into one) for the first kind; they let everything else propagate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ModelCallError(RuntimeError):
    """A model or API call failed for one request; the reason is safe to record (no secrets)."""

    def __init__(self, reason: str, utt_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.utt_id = utt_id


def check_candidates(who: str, utt_id: str, candidates: Iterable[Any]) -> None:
    """The one failed-candidate check: raise ``ModelCallError`` naming ``who`` (``"model 'x'"``,
    ``"verifier 'x'"``) and the utterance when a candidate records a failed request (its ``meta``
    has ``"error"``: an API request that failed after its retries, a request that did not fit)."""
    for c in candidates:
        if "error" in c.meta:
            raise ModelCallError(f"{who} failed on utterance {utt_id!r}: {c.meta['error']}", utt_id)
