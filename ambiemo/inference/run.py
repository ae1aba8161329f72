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

A model that lacks what the strategy needs is refused before any work.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.errors import ModelCallError
from ambiemo.data.audio import AudioError
from ambiemo.inference.candidates import candidate_columns, candidates_frame, candidates_path, write_candidates
from ambiemo.inference.predictions import predicted_label, prediction_columns, read_predictions, write_predictions
from ambiemo.models.base import (
    AudioLanguageModel,
    AudioRequest,
    Candidate,
    CapabilityError,
    GenerationConfig,
    OptionScores,
)
from ambiemo.strategies import STRATEGIES, Context, Cost, Row, Strategy, Utterance, strategy_settings
from ambiemo.strategies.parsing import apply_failure_policy
from ambiemo.strategies.prompts import PromptBook

log = logging.getLogger(__name__)

# A model key that needs no params entry: the scripted test double (ambiemo.models.fake).
FAKE_SPEC = {"adapter": "fake"}
# Default of params inference.max_failure_share: any broken clip is reported; the stage fails above 1%.
MAX_FAILURE_SHARE = 0.01
# Settings of params ``strategies`` that say how a run is done, not what it computes: left out of the
# outputs' provenance, so that the files are byte-identical whatever they are.
RUN_ONLY_SETTINGS = frozenset({"batch_size"})
# Seconds between progress log lines (the bar, where shown, updates continuously).
PROGRESS_LOG_EVERY_S = 60.0
# Environment variables whose values are never written: API keys and tokens (see redact_secrets).
_SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")


class InferenceFailures(RuntimeError):
    """More utterances failed than params ``inference.max_failure_share`` allows; the predictions
    were written all the same (``path``), with every failure in their metadata."""

    def __init__(self, message: str, failures: dict[str, str], path: Path | None) -> None:
        super().__init__(message)
        self.failures = failures
        self.path = path


def redact_secrets(text: str) -> str:
    """``text`` with the value of every secret-looking environment variable (``*_API_KEY``,
    ``*_TOKEN``, ...) replaced by ``***``: a last guard before a reason is written anywhere."""
    for name, value in os.environ.items():
        if value and len(value) >= 8 and name.upper().endswith(_SECRET_SUFFIXES):
            text = text.replace(value, "***")
    return text


class SecretFilter(logging.Filter):
    """A logging filter that redacts secrets from every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_secret_filter() -> None:
    """Put ``SecretFilter`` on every handler of the root logger (call after configuring logging)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())


def inference_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Params ``inference`` with defaults: ``max_failure_share`` (float in [0, 1], default 0.01)."""
    section = dict(params.get("inference") or {})
    unknown = set(section) - {"max_failure_share"}
    if unknown:
        raise ValueError(f"params inference: unknown key(s) {sorted(unknown)}; known: ['max_failure_share']")
    share = section.get("max_failure_share", MAX_FAILURE_SHARE)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"params inference.max_failure_share must be a number in [0, 1], got {share!r}")
    return {"max_failure_share": float(share)}


def model_spec(params: dict[str, Any], key: str) -> dict[str, Any]:
    """Params ``models.<key>``; the ``fake`` model needs no entry."""
    models = params.get("models") or {}
    if key in models:
        return dict(models[key])
    if key == "fake":
        return dict(FAKE_SPEC)
    known = ", ".join(sorted(models)) or "(none)"
    raise KeyError(f"params.yaml models has no {key!r}; defined: {known} (or `fake`, the offline test double)")


def build_model(params: dict[str, Any], key: str, cache: Any = None, **kwargs: Any) -> AudioLanguageModel:
    """The model ``key`` behind the generation cache (``cache``: a GenerationCache, default from params)."""
    from ambiemo.core.config import cache_dir
    from ambiemo.inference.cache import CachedModel, GenerationCache
    from ambiemo.models import load_model

    cache = cache if cache is not None else GenerationCache(cache_dir(params))
    # Local adapters keep built or converted weights (tiny models, the cascade's LLM) beside the cache.
    kwargs.setdefault("cache_dir", cache_dir(params))
    kwargs.setdefault("weights_dir", (params.get("paths") or {}).get("weights_dir"))  # fetched weights, if any
    return CachedModel(load_model(key, model_spec(params, key), **kwargs), cache)


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

    ``limit``: only the first ``limit`` utterances in manifest order (None or 0: all).
    ``budgets``: these budgets instead of params ``strategies.<name>.budgets``.
    ``model`` / ``verifier``: already built models to use instead of building them from params
    (tests, notebooks that run several strategies with one loaded model); wrap them in
    ``ambiemo.inference.cache.CachedModel`` yourself if they should be cached.
    ``progress``: show the progress bar (None: when stderr is a terminal outside CI).

    Raises ``InferenceFailures`` (after writing the table) when more than params
    ``inference.max_failure_share`` of the utterances failed; any other exception that a
    strategy or model raises, except a per-utterance ``AudioError`` or ``ModelCallError``,
    stops the run at once.
    """
    from ambiemo.core.provenance import provenance
    from ambiemo.data.manifest import read_manifest

    manifest = read_manifest(manifest_path)
    labels = manifest.labels
    df = manifest.df.iloc[: limit or None].reset_index(drop=True)
    settings = strategy_settings(params)
    max_share = inference_settings(params)["max_failure_share"]
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
    guarded = _Guarded(model)
    guarded_verifier = None if verifier is None else guarded if verifier is model else _Guarded(verifier)
    strat: Strategy = cls(Context(guarded, labels, prompts, settings, guarded_verifier))
    strat.check()
    budgets = sorted({int(b) for b in budgets}) if budgets else strat.default_budgets()
    strat.check_budgets(budgets)
    policy = (params.get("parsing") or {}).get("on_failure", "uniform")
    apply_failure_policy(None, len(labels), policy)  # an unknown policy fails now, not after the run

    usages = [model.usage] + ([verifier.usage] if verifier is not None and verifier is not model else [])
    bar = _Progress(name, len(df), usages, progress)
    try:
        results, failures, notes = _run(
            strat,
            df,
            budgets,
            model.sample_rate,
            # A served or API route gets at least its capacity (concurrency x endpoints) per batch, so that
            # every slot is busy; answers do not depend on the batch (issue 19).
            max(int(settings["batch_size"]), int(getattr(model, "preferred_batch", 0) or 0)),
            name,
            getattr(model.capabilities, "max_audio_s", None),
            bar,
        )
    finally:
        bar.close()
    out, cands, parse_failures = _table(strat, df, budgets, results, failures, labels, model_key, policy)
    identical = _identical_answers(strat, results, budgets)
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

    relevant = {k: params[k] for k in ("seed", "prompts", "parsing", "strategies") if k in params}
    if "strategies" in relevant:  # how utterances are batched changes no number, so not the files either
        relevant["strategies"] = {k: v for k, v in relevant["strategies"].items() if k not in RUN_ONLY_SETTINGS}
    meta_prov = provenance(
        relevant,
        params.get("seed"),
        model=model.identity,
        verifier=verifier.identity if verifier is not None else None,
        strategy={**strat.provenance(), "budgets": budgets},
        prompts=prompts.describe(),
        dataset=manifest.dataset,
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
    _remove_stale_temporaries(Path(out_path))
    _remove_stale_temporaries(candidates_path(out_path))
    # The candidates first: a predictions file that exists always has its candidates beside it.
    write_candidates(
        cands,
        candidates_path(out_path),
        labels=labels,
        label_set=manifest.label_set,
        provenance=meta_prov,
        predictions=Path(out_path).name,
    )
    path = write_predictions(out, out_path, labels=labels, label_set=manifest.label_set, provenance=meta_prov, **meta)
    _check_failures(name, failures, len(df), max_share, path)
    written = read_predictions(path)
    df_out = written.df
    usage = _delta(model.usage.as_dict(), before["usage"])
    verifier_usage = None
    if verifier is not None and verifier is not model:
        verifier_usage = _delta(verifier.usage.as_dict(), before["verifier_usage"])
    df_out.attrs = {"meta": written.meta, "usage": usage, "verifier_usage": verifier_usage}
    cache = getattr(model, "cache", None)
    log.info(
        "%s: %d rows; %d parse failures, %d model failures; live calls %d, cache hits %d%s",
        path,
        len(df_out),
        meta["parse_failures"],
        len(failures),
        usage["calls"],
        usage["cache_hits"],
        f"; bad cache entries recomputed {cache.corrupt + cache.stale}" if cache is not None else "",
    )
    return df_out


def _check_failures(name: str, failures: dict[str, str], n: int, max_share: float, path: Path) -> None:
    """Report every failure; raise ``InferenceFailures`` when their share exceeds ``max_share``."""
    if not failures:
        return
    listed = "; ".join(f"{u}: {r}" for u, r in list(sorted(failures.items()))[:10])
    more = f" (and {len(failures) - 10} more)" if len(failures) > 10 else ""
    share = len(failures) / max(n, 1)
    log.warning("%s: %d of %d utterances failed (%.1f%%): %s%s", name, len(failures), n, 100 * share, listed, more)
    if share > max_share:
        what = "every utterance failed" if len(failures) == n else f"{len(failures)} of {n} utterances failed"
        raise InferenceFailures(
            f"{name}: {what} ({share:.1%}), more than params inference.max_failure_share = {max_share:.1%}: "
            f"{listed}{more}. The predictions, with every failure in their metadata, are in {path}",
            failures,
            path,
        )


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files a killed writer of ``path`` left behind (``ambiemo.core.tables.write_table``'s names)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def run_strategies(
    params: dict[str, Any],
    model_key: str,
    strategies: Sequence[str],
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    limit: int | None = None,
    *,
    progress: bool | None = None,
) -> dict[str, pd.DataFrame]:
    """Every strategy of ``strategies`` with one model object: ``out_dir/<strategy>.parquet`` each.

    The pipeline's inference stage (one per dataset x model): the model and the verifier are built
    once and load their weights once, on the first call the cache cannot answer, however many
    strategies follow. A strategy the route cannot serve is written as skipped (``write_skipped``);
    one whose failures exceed ``inference.max_failure_share`` is written, the others still run,
    and ``InferenceFailures`` naming all of them is raised at the end.
    """
    model = build_model(params, model_key)
    settings = strategy_settings(params)
    verifier = None
    out: dict[str, pd.DataFrame] = {}
    failed: list[InferenceFailures] = []
    for strategy in strategies:
        path = Path(out_dir) / f"{strategy}.parquet"
        if STRATEGIES.get(strategy).uses_verifier and verifier is None and settings["verifier"]["model"]:
            vkey = settings["verifier"]["model"]
            verifier = model if vkey == model_key else build_model(params, vkey, cache=getattr(model, "cache", None))
        try:
            out[strategy] = run_inference(
                params,
                model_key,
                strategy,
                manifest_path,
                path,
                limit,
                model=model,
                verifier=verifier,
                progress=progress,
            )
        except CapabilityError as err:  # a cell the route cannot serve: recorded, the rest runs
            out[strategy] = write_skipped(params, model_key, strategy, manifest_path, path, reason=str(err))
        except InferenceFailures as err:
            failed.append(err)
    if failed:
        raise InferenceFailures(
            "; ".join(str(e) for e in failed), {k: v for e in failed for k, v in e.failures.items()}, None
        )
    return out


def write_skipped(
    params: dict[str, Any],
    model_key: str,
    strategy: str,
    manifest_path: str | os.PathLike,
    out_path: str | os.PathLike,
    reason: str,
) -> pd.DataFrame:
    """Write an empty predictions table that records why this cell cannot run.

    A matrix of models × strategies contains cells a route cannot serve (W-BoN needs
    log-probabilities, which OpenAI's audio models do not return). The pipeline writes such a
    cell as skipped, with the reason in its metadata (``skipped``), instead of stopping; scoring
    lists the skipped cells beside the results.
    """
    from ambiemo.core.provenance import provenance
    from ambiemo.data.manifest import read_manifest

    manifest = read_manifest(manifest_path)
    prov = provenance(
        {k: params[k] for k in ("seed", "strategies") if k in params},
        params.get("seed"),
        model={"key": model_key},
        strategy={"name": strategy},
        dataset=manifest.dataset,
    )
    empty = pd.DataFrame(columns=prediction_columns(manifest.labels))
    write_candidates(
        pd.DataFrame(columns=candidate_columns(manifest.labels)),
        candidates_path(out_path),
        labels=manifest.labels,
        label_set=manifest.label_set,
        provenance=prov,
        predictions=Path(out_path).name,
        skipped=reason,
    )
    path = write_predictions(
        empty,
        out_path,
        labels=manifest.labels,
        label_set=manifest.label_set,
        provenance=prov,
        skipped=reason,
        parse_failures=0,
        n_utterances=0,
    )
    log.warning("%s/%s skipped: %s", model_key, strategy, reason)
    return read_predictions(path).df


class _Guarded(AudioLanguageModel):
    """The model as a strategy sees it during a run: a failed request (a candidate whose ``meta`` has
    ``"error"``, NaN option scores) raises ``ModelCallError`` naming the utterance, so that the run
    records that utterance instead of mistaking the failure for a bug. Everything else is delegated."""

    def __init__(self, model: AudioLanguageModel) -> None:
        # Deliberately no super().__init__: usage, identity and capabilities are the wrapped model's.
        self.model = model

    key = property(lambda self: self.model.key)  # type: ignore[assignment]
    model_id = property(lambda self: self.model.model_id)  # type: ignore[assignment]
    revision = property(lambda self: self.model.revision)  # type: ignore[assignment]
    sample_rate = property(lambda self: self.model.sample_rate)  # type: ignore[assignment]
    usage = property(lambda self: self.model.usage)  # type: ignore[assignment]
    capabilities = property(lambda self: self.model.capabilities)  # type: ignore[assignment]

    @property
    def identity(self) -> dict[str, Any]:
        return self.model.identity

    def __getattr__(self, name: str) -> Any:
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def generate(self, requests: Sequence[AudioRequest], config: GenerationConfig) -> list[list[Candidate]]:
        out = self.model.generate(requests, config)
        for request, cands in zip(requests, out, strict=True):
            for c in cands:
                if "error" in c.meta:
                    raise ModelCallError(
                        f"model {self.key!r} failed on utterance {request.utt_id!r}: {c.meta['error']}", request.utt_id
                    )
        return out

    def score_options(self, request: AudioRequest, options: Sequence[str], prefix: str = "") -> np.ndarray:
        return self.score_options_many([request], options, prefix)[0].logprobs

    def score_options_many(
        self, requests: Sequence[AudioRequest], options: Sequence[str], prefix: str = ""
    ) -> list[OptionScores]:
        out = self.model.score_options_many(requests, options, prefix)
        for request, scores in zip(requests, out, strict=True):
            if np.isnan(np.asarray(scores.logprobs, dtype=float)).any():
                raise ModelCallError(
                    f"model {self.key!r} could not score options for {request.utt_id!r}", request.utt_id
                )
        return out


class _Progress:
    """A tqdm bar (where shown) and a periodic log line: utterances done, rate, ETA, cache hits,
    model failures, parse failures and API spend of this run."""

    def __init__(self, name: str, total: int, usages: list[Any], show: bool | None) -> None:
        from tqdm import tqdm

        if show is None:
            show = sys.stderr.isatty() and not os.environ.get("CI")
        self.name, self.total, self.usages = name, total, usages
        self.before = [u.as_dict() for u in usages]
        self.start = self.last_log = time.monotonic()
        self.done = 0
        self.bar = tqdm(total=total, desc=name, unit="utt", disable=not show, file=sys.stderr, dynamic_ncols=True)

    def counts(self, model_failures: int, parse_failures: int) -> dict[str, Any]:
        now = [u.as_dict() for u in self.usages]
        spent = sum(a["cost_usd"] - b.get("cost_usd", 0) for a, b in zip(now, self.before, strict=True))
        hits = sum(a["cache_hits"] - b.get("cache_hits", 0) for a, b in zip(now, self.before, strict=True))
        return {"cache_hits": hits, "model_failures": model_failures, "parse_failures": parse_failures, "usd": spent}

    def update(self, n: int, model_failures: int, parse_failures: int) -> None:
        self.done += n
        c = self.counts(model_failures, parse_failures)
        self.bar.set_postfix(
            hits=c["cache_hits"],
            failed=c["model_failures"],
            unparsed=c["parse_failures"],
            usd=f"{c['usd']:.4f}",
            refresh=False,
        )
        self.bar.update(n)
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_LOG_EVERY_S or self.done >= self.total:
            self.last_log = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %d of %d utterances (%.0f%%), %.2f utt/s, ETA %.0f s; cache hits %d, model failures %d, "
                "parse failures %d, API spend $%.4f",
                self.name,
                self.done,
                self.total,
                100 * self.done / max(self.total, 1),
                rate,
                eta,
                c["cache_hits"],
                c["model_failures"],
                c["parse_failures"],
                c["usd"],
            )

    def close(self) -> None:
        self.bar.close()


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


def _run(
    strat: Strategy,
    df: pd.DataFrame,
    budgets: list[int],
    sample_rate: int,
    batch_size: int,
    name: str,
    max_audio_s: float | None,
    progress: _Progress,
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
    except (ModelCallError, CapabilityError):
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


# Fewer utterances than this with the same answer are no sign that the audio is ignored.
MIN_IDENTICAL = 3


def _identical_answers(strat: Strategy, results: dict[int, list[Row]], budgets: list[int]) -> dict[str, Any] | None:
    """When every answered utterance got the identical answer (candidate texts and distribution of the
    first readout at the largest budget), what it was; else None."""
    label, budget = strat.row_labels()[0], max(budgets)
    prints, texts = set(), []
    n = 0
    for i in sorted(results):
        row = next((r for r in results[i] if r.strategy == label and r.budget == budget), None)
        if row is None:
            continue
        texts = [str(c.get("text", "")) for c in row.candidates]
        p = None if row.p is None else [round(float(x), 9) for x in row.p]
        prints.add(json.dumps([texts, p]))
        n += 1
        if len(prints) > 1:
            return None
    if n < MIN_IDENTICAL:
        return None
    return {"n_utterances": n, "readout": label, "budget": budget, "answer": texts[0][:500] if texts else ""}


def _table(
    strat: Strategy,
    df: pd.DataFrame,
    budgets: list[int],
    results: dict[int, list[Row]],
    failures: dict[str, str],
    labels: tuple[str, ...],
    model_key: str,
    policy: str,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The predictions rows (readout, then budget, then manifest order), the candidates table (in the
    same order, then candidate order) and parse failures per readout@budget."""
    rows: list[dict[str, Any]] = []
    cands: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    parse_failures: dict[str, int] = {}
    for label in strat.row_labels():
        for b in budgets:
            for i in range(len(df)):
                utt_id = str(df.at[i, "utt_id"])
                found = [r for r in results.get(i, []) if r.strategy == label and r.budget == b]
                row = found[0] if found else Row(label, b, None, [], Cost())  # a failed utterance
                p, ok = apply_failure_policy(row.p, len(labels), policy)
                if not ok and utt_id not in failures:
                    parse_failures[f"{label}@{b}"] = parse_failures.get(f"{label}@{b}", 0) + 1
                c = row.cost
                rows.append(
                    {
                        "utt_id": utt_id,
                        "dataset": str(df.at[i, "dataset"]),
                        "model": model_key,
                        "strategy": label,
                        "budget": b,
                        **{f"p_{x}": float(v) for x, v in zip(labels, p, strict=True)},
                        "pred_label": predicted_label(p, ok, labels),
                        "parsed_ok": ok,
                        "n_candidates": len(row.candidates),
                        "model_calls": c.model_calls,
                        "verifier_calls": c.verifier_calls,
                        "prompt_tokens": _tokens(c.prompt_tokens),
                        "gen_tokens": c.gen_tokens,
                        "wall_s": c.wall_s,
                        "verifier_prompt_tokens": pd.NA
                        if c.verifier_prompt_tokens is None
                        else c.verifier_prompt_tokens,
                        "verifier_gen_tokens": c.verifier_gen_tokens,
                        "verifier_wall_s": c.verifier_wall_s,
                    }
                )
                cands.append((rows[-1], row.candidates))
    return pd.DataFrame(rows, columns=prediction_columns(labels)), candidates_frame(cands, labels), parse_failures


def _tokens(n: int | None) -> Any:
    return pd.NA if n is None else n


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Usage spent between two snapshots (a model object passed in may have served earlier runs)."""
    return {k: v - before.get(k, 0) for k, v in after.items()}
