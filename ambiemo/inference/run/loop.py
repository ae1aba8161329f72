"""The run loop: audio per utterance, batches to the strategy, per-utterance failures recorded."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ambiemo.core.errors import ModelCallError
from ambiemo.core.secrets import redact_secrets
from ambiemo.data.audio import AudioError
from ambiemo.inference.cache.errors import CacheError
from ambiemo.inference.run.progress import Progress
from ambiemo.models.base import CapabilityError
from ambiemo.strategies import Row, Strategy, Utterance

log = logging.getLogger(__name__)


def _prepare_audio(
    path: str, sample_rate: int, max_audio_s: float | None, utt_id: str, name: str, notes: dict[str, str]
) -> np.ndarray:
    """The clip as the model gets it; broken audio raises ``AudioError``, odd audio is noted."""
    from ambiemo.data.audio import load_audio

    if not path:
        raise AudioError("the manifest has no audio for it (a labels-only manifest); rebuild it with audio")
    wav = load_audio(path, sample_rate)
    if max_audio_s is not None and len(wav) > max_audio_s * sample_rate:
        keep = int(round(max_audio_s * sample_rate))
        notes[utt_id] = f"truncated from {len(wav) / sample_rate:.2f} s to the model's {max_audio_s:g} s window"
        log.warning("%s: utterance %s: audio %s", name, utt_id, notes[utt_id])
        wav = wav[:keep]
    elif not wav.any():
        notes[utt_id] = "silent (every sample is zero)"
        log.info("%s: utterance %s: audio is %s; predicted all the same", name, utt_id, notes[utt_id])
    return wav


def run_batches(
    strat: Strategy,
    df: pd.DataFrame,
    budgets: list[int],
    sample_rate: int,
    batch_size: int,
    name: str,
    max_audio_s: float | None,
    progress: Progress,
) -> tuple[dict[int, list[Row]], dict[str, str], dict[str, str]]:
    """Rows per manifest position, the failures {utt_id: reason}, and audio notes {utt_id: note}.

    Utterances go to the strategy in batches (one model call serves a batch). When a batch
    fails with a ``ModelCallError`` naming an utterance, that utterance is recorded (its request
    is not sent again) and the others run again, answered from the cache where the batch call
    got that far; an error that names none makes each utterance run alone. Any other exception
    stops the run, with a note naming the cell and utterances.
    """
    results: dict[int, list[Row]] = {}
    failures: dict[str, str] = {}
    notes: dict[str, str] = {}
    unparsed = 0
    for start in range(0, len(df), batch_size):
        stop = min(start + batch_size, len(df))
        utts: list[tuple[int, Utterance]] = []
        for i in range(start, stop):
            utt_id, path = str(df.at[i, "utt_id"]), str(df.at[i, "audio_path"])
            try:
                wav = _prepare_audio(path, sample_rate, max_audio_s, utt_id, name, notes)
            except AudioError as e:
                failures[utt_id] = redact_secrets(f"audio: {e}")
                log.warning("%s: utterance %s failed: %s", name, utt_id, failures[utt_id])
                continue
            utts.append((i, Utterance(utt_id, wav, sample_rate)))
        pending = list(utts)
        while pending:
            try:
                batch = _attempt(strat, [u for _, u in pending], budgets, name)
            except ModelCallError as e:
                at = [k for k, (_, u) in enumerate(pending) if u.utt_id == e.utt_id]
                if not at:  # the error does not say which utterance: find it by running each alone
                    for i, u in pending:
                        _run_alone(strat, i, u, budgets, name, results, failures)
                    break
                _, u = pending.pop(at[0])  # record it, and run the others again (what they finished is cached)
                failures[u.utt_id] = redact_secrets(str(e))
                log.warning("%s: utterance %s failed: %s", name, u.utt_id, failures[u.utt_id])
                continue
            for (i, _), rows in zip(pending, batch, strict=True):
                results[i] = rows
            break
        unparsed += sum(1 for i, _ in utts if i in results for row in results[i] if row.p is None)
        progress.update(stop - start, len(failures), unparsed)
    return results, failures, notes


def _run_alone(
    strat: Strategy,
    i: int,
    u: Utterance,
    budgets: list[int],
    name: str,
    results: dict[int, list[Row]],
    failures: dict[str, str],
) -> None:
    try:
        results[i] = _attempt(strat, [u], budgets, name)[0]
    except ModelCallError as e:
        failures[u.utt_id] = redact_secrets(str(e))
        log.warning("%s: utterance %s failed: %s", name, u.utt_id, failures[u.utt_id])


def _attempt(strat: Strategy, utts: list[Utterance], budgets: list[int], name: str) -> list[list[Row]]:
    """``strat.run``; an error that is not a per-utterance failure gets a note and goes up."""
    if not utts:
        return []
    try:
        rows = strat.run(utts, budgets)
    except (ModelCallError, CapabilityError, CacheError):
        raise
    except Exception as e:
        ids = ", ".join(u.utt_id for u in utts[:5]) + (" ..." if len(utts) > 5 else "")
        e.add_note(
            f"ambiemo: {type(e).__name__} in {name} on utterances {ids}. This is a programming or configuration "
            "error, not a failure of one utterance, so the run stops (finished calls are kept in the cache)."
        )
        raise
    if len(rows) != len(utts):
        raise RuntimeError(f"{name}: strategy {strat.name!r} returned {len(rows)} results for {len(utts)} utterances")
    return rows
