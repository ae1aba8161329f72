"""``run_inference``: one model x strategy over one manifest, from checked arguments to the written tables."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.core.failures import apply_failure_policy
from ambiemo.inference.cache.errors import CacheError
from ambiemo.inference.cache.store import GenerationCache
from ambiemo.inference.candidates import candidates_path
from ambiemo.inference.predictions import read_predictions, write_predictions
from ambiemo.inference.run.guard import Guarded
from ambiemo.inference.run.loop import run_batches
from ambiemo.inference.run.outputs import OutputLock, check_failures, check_output, remove_stale_temporaries
from ambiemo.inference.run.progress import Progress
from ambiemo.inference.run.rows import delta, identical_answers, tables
from ambiemo.inference.run.settings import build_model, cell_provenance, inference_settings
from ambiemo.models.base import AudioLanguageModel, CapabilityError
from ambiemo.strategies import STRATEGIES, Context, Strategy, strategy_settings
from ambiemo.strategies.prompts import PromptBook

log = logging.getLogger(__name__)

# Rounds of a served route's capacity per batch. A batch waits for its slowest request before the next
# one starts, and each batch's first requests queue for the client's CPU while its slots stand idle; in
# batches of one round that cost 0.5 s of 4.3 s (120 requests at 400 ms, concurrency 16,
# benchmarks/serving.py), paid once per four rounds here. More rounds hold more clips in memory at once.
ROUNDS_PER_BATCH = 4


def run_inference(
    params: dict[str, Any],
    model_key: str,
    strategy: str,
    manifest_path: str | os.PathLike,
    out_path: str | os.PathLike,
    limit: int | None = None,
    *,
    budgets: Sequence[int] | None = None,
    model: AudioLanguageModel | None = None,
    verifier: AudioLanguageModel | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run ``strategy`` with model ``model_key`` over the manifest, write the predictions parquet, return its rows.

    The returned frame is the table as written (schema: ``ambiemo.inference.predictions``); ``df.attrs``
    holds its metadata (``meta``) and this run's live usage (``usage``, ``verifier_usage``:
    real calls and cache hits, which unlike the table differ between a first run and a rerun).

    ``out_path``: a ``.parquet`` file path whose folder can be written, checked before any work and
    locked for the run (``ambiemo.inference.run.outputs``): a second writer fails at once.
    ``limit``: only the first ``limit`` utterances in manifest order (None or 0: all; an integer >= 0).
    ``budgets``: these budgets instead of params ``strategies.<name>.budgets``.
    ``model`` / ``verifier``: already built models to use instead of building them from params
    (tests, notebooks that run several strategies with one loaded model); wrap them in
    ``ambiemo.inference.cache.CachedModel`` yourself if they should be cached.
    ``progress``: show the progress bar (None: when stderr is a terminal outside CI).

    Raises ``InferenceFailures`` (after writing the table) when more than params
    ``inference.max_failure_share`` of the utterances failed; any other exception that a
    strategy or model raises, except a per-utterance ``AudioError`` or ``ModelCallError``,
    stops the run at once. ``OutputError`` (a ``ValueError``) for a bad or busy ``out_path``;
    ``CacheError`` for a cache that is damaged, read-only where this run must write, or was
    deleted during the run (raised after the predictions are written).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a whole number >= 0 (0: every utterance), got {limit!r}")
    out = check_output(out_path)
    with OutputLock(out, model=model_key, strategy=strategy):
        return _infer(params, model_key, strategy, manifest_path, out, limit, budgets, model, verifier, progress)


def _infer(
    params: dict[str, Any],
    model_key: str,
    strategy: str,
    manifest_path: str | os.PathLike,
    out_path: Path,
    limit: int | None,
    budgets: Sequence[int] | None,
    model: AudioLanguageModel | None,
    verifier: AudioLanguageModel | None,
    progress: bool | None,
) -> pd.DataFrame:
    from ambiemo.data.manifest import read_manifest
    from ambiemo.inference import run as package

    manifest = read_manifest(manifest_path)
    labels = manifest.labels
    df = manifest.df.iloc[: limit or None].reset_index(drop=True)
    manifest.require_audio(limit or None)  # none there: stop now; some missing: named now, recorded per utterance
    settings = strategy_settings(params)
    inference = inference_settings(params)
    max_share = inference["max_failure_share"]
    cls = STRATEGIES.get(strategy)
    name = f"{manifest.dataset}/{model_key}/{strategy}"

    model = model if model is not None else build_model(params, model_key)
    if cls.uses_verifier and verifier is None:
        verifier_key = settings["verifier"]["model"]
        if not verifier_key:
            raise CapabilityError(f"strategy {strategy!r} needs a verifier: set params strategies.verifier.model")
        verifier = (
            model
            if verifier_key == model_key
            else build_model(params, verifier_key, cache=getattr(model, "cache", None))
        )
    before = {"usage": model.usage.as_dict(), "verifier_usage": verifier.usage.as_dict() if verifier else None}
    prompts = PromptBook.from_params(params, labels)
    guarded = Guarded(model)
    guarded_verifier = None if verifier is None else guarded if verifier is model else Guarded(verifier)
    strat: Strategy = cls(Context(guarded, labels, prompts, settings, guarded_verifier))
    strat.check()
    budgets = sorted({int(b) for b in budgets}) if budgets else strat.default_budgets()
    strat.check_budgets(budgets)
    policy = (params.get("parsing") or {}).get("on_failure", "uniform")
    apply_failure_policy(None, len(labels), policy, labels)  # an unknown policy fails now, not after the run

    usages = [model.usage] + ([verifier.usage] if verifier is not None and verifier is not model else [])
    bar = Progress(name, len(df), usages, progress, package.PROGRESS_LOG_EVERY_S)
    try:
        results, failures, notes = run_batches(
            strat,
            df,
            budgets,
            model.sample_rate,
            # A served or API route gets several rounds of its capacity (concurrency x endpoints) per batch,
            # so that every slot is busy; the answers do not depend on the batch.
            max(int(settings["batch_size"]), ROUNDS_PER_BATCH * int(getattr(model, "preferred_batch", 0) or 0)),
            name,
            getattr(model.capabilities, "max_audio_s", None),
            bar,
        )
    finally:
        bar.close()
    out, cands, parse_failures = tables(
        strat, df, budgets, results, failures, labels, model_key, policy, inference["record_wall_s"]
    )
    identical = identical_answers(strat, results, budgets)
    if identical is not None:
        log.warning(
            "%s: the model gave the identical answer to all %d utterances (%s@%d: %.120r); is the audio "
            "reaching the model?",
            name,
            identical["n_utterances"],
            identical["readout"],
            identical["budget"],
            identical["answer"],
        )

    meta_prov = cell_provenance(
        params,
        manifest.dataset,
        model=model.identity,
        verifier=verifier.identity if verifier is not None else None,
        strategy={**strat.provenance(), "budgets": budgets},
        prompts=prompts.describe(),
        manifest=Path(manifest_path).name,
        limit=limit or 0,
        parse_failure_policy=policy,
    )
    n_audio = sum(1 for reason in failures.values() if reason.startswith("audio: "))
    meta = {
        "parse_failures": int(sum(parse_failures.values())),
        "parse_failures_by": dict(sorted(parse_failures.items())),
        "model_failures": dict(sorted(failures.items())),
        "failures_by_kind": {"audio": n_audio, "model": len(failures) - n_audio},
        "max_failure_share": max_share,
        "audio_notes": dict(sorted(notes.items())),
        "identical_answers": identical,
        "n_utterances": len(df),
    }
    remove_stale_temporaries(Path(out_path))
    remove_stale_temporaries(candidates_path(out_path))
    path = write_predictions(
        out, out_path, labels=labels, label_set=manifest.label_set, provenance=meta_prov, candidates=cands, **meta
    )
    cache = getattr(model, "cache", None)
    lost = cache.check_present() if isinstance(cache, GenerationCache) else None
    check_failures(name, failures, len(df), max_share, path)
    written = read_predictions(path)
    df_out = written.df
    usage = delta(model.usage.as_dict(), before["usage"])
    verifier_usage = None
    if verifier is not None and verifier is not model:
        verifier_usage = delta(verifier.usage.as_dict(), before["verifier_usage"])
    df_out.attrs = {"meta": written.meta, "usage": usage, "verifier_usage": verifier_usage}
    log.info(
        "%s: %d rows; %d parse failures, %d model failures; live calls %d, cache hits %d%s",
        path,
        len(df_out),
        meta["parse_failures"],
        len(failures),
        usage["calls"],
        usage["cache_hits"],
        f"; bad cache entries recomputed {cache.corrupt + cache.stale}" if isinstance(cache, GenerationCache) else "",
    )
    if lost is not None:
        raise CacheError(
            f"{lost}: the predictions are written ({path}), but results computed after that were not stored, "
            "so the next run makes those calls again",
            cache.path,
            "gone",
        )
    return df_out
