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


class ModelCallError(RuntimeError):
    """A model or API call failed for one request; the reason is safe to record (no secrets)."""

    def __init__(self, reason: str, utt_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.utt_id = utt_id
