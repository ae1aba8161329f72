"""Running one model x strategy over one manifest: the inference stage.

``run_inference`` is the one entry point; ``ambiemo infer`` and the DVC inference matrix call it.

    manifest --(audio, batches of utterances)--> strategy.run at every budget
             --> parse-failure policy --> predictions parquet (ambiemo.inference.predictions)
                                          + candidates parquet beside it (ambiemo.inference.candidates)

Resumable. The model is wrapped in the generation cache, whose every entry is one SQLite
transaction, so a run killed at any moment (``kill -9`` included) resumes where it stopped:
finished calls are answered from the cache, nothing is duplicated, and the predictions and
candidates files are byte-identical to an uninterrupted run's. Each file is written to a
temporary name and renamed, so a reader sees the old file or the new one, never half of one;
temporary files a killed writer left behind are removed by the next write. An unchanged rerun makes no model call.

Failures are classified (``ambiemo.core.errors``):

* broken audio (missing, empty, undecodable, no samples, NaN or infinite samples: ``AudioError``)
  and a model or API failure on one utterance (``ModelCallError``, or candidates whose ``meta``
  has ``"error"``, or NaN option scores) are recorded per utterance, with the reason, in the
  log and in the metadata's ``model_failures`` {utt_id: reason} (rows with ``parsed_ok`` False
  and ``n_candidates`` 0), and the run goes on. At the end, when more than params
  ``inference.max_failure_share`` (default 0.01) of the utterances failed, the predictions are
  still written (nothing computed is lost) and ``InferenceFailures`` names them;
* anything else (a ``TypeError`` or ``KeyError`` in a strategy, a schema violation, a wrong API
  key) stops the run at once with its traceback.

Valid but odd audio is predicted: silence, any sample rate (resampled), several channels
(averaged). A clip longer than the model's window (``Capabilities.max_audio_s``) is truncated to
it, with a warning naming the utterance; both are listed in the metadata's ``audio_notes``.

A model that gives the identical answer to every utterance (audio that never reaches it, say)
is warned about, naming the cell, and recorded in the metadata's ``identical_answers``.

Progress: a tqdm bar (rate, ETA, cache hits, model and parse failures, API spend) when stderr is
a terminal outside CI, and a log line every ``PROGRESS_LOG_EVERY_S`` seconds in any case, so that
``dvc repro`` shows where a long cell is.

A model that lacks what the strategy needs is refused before any work, and so are a bad ``limit``
and an output path that is not a writable ``.parquet`` file; the output is locked for the run, so a
second writer of it fails at once, naming the first (``outputs``).

Modules: ``single`` (``run_inference``), ``cells`` (``run_strategies``, ``write_skipped``),
``settings`` (params read by a run, the model behind the cache), ``loop`` (audio, batches,
per-utterance failures), ``rows`` (the tables written), ``progress``, ``guard`` (failed requests
as ``ModelCallError``), ``outputs`` (the output path, its lock, the failure report).
"""

from ambiemo.core.secrets import SecretFilter, install_secret_filter, redact_secrets
from ambiemo.inference.run.cells import run_strategies, write_skipped
from ambiemo.inference.run.outputs import InferenceFailures, OutputError, OutputLock, check_output
from ambiemo.inference.run.settings import (
    FAKE_SPEC,
    RUN_ONLY_SETTINGS,
    build_model,
    inference_settings,
    model_spec,
)
from ambiemo.inference.run.single import run_inference

# Seconds between progress log lines (the bar, where shown, updates continuously); read at each run.
PROGRESS_LOG_EVERY_S = 60.0

__all__ = [
    "FAKE_SPEC",
    "PROGRESS_LOG_EVERY_S",
    "RUN_ONLY_SETTINGS",
    "InferenceFailures",
    "OutputError",
    "OutputLock",
    "SecretFilter",
    "build_model",
    "check_output",
    "inference_settings",
    "install_secret_filter",
    "model_spec",
    "redact_secrets",
    "run_inference",
    "run_strategies",
    "write_skipped",
]
