"""Running one model x strategy over one manifest: the inference stage.

``run_inference`` is the one entry point; ``ambiemo infer`` and the DVC inference matrix call it.

    manifest --(audio, batches of utterances)--> strategy.run at every budget
             --> parse-failure policy --> predictions parquet (ambiemo.predictions)

The model is wrapped in the generation cache, so an interrupted run resumes where it stopped
(finished calls are answered from the cache) and an unchanged rerun makes no model call and
writes a byte-identical file. An utterance whose audio cannot be read or whose model call fails
is recorded (rows with ``parsed_ok`` False and ``n_candidates`` 0, the error in the metadata's
``model_failures``) and the run goes on; only a run in which every utterance fails is an error.
A model that lacks what the strategy needs is refused before any work.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.models.base import AudioLanguageModel, CapabilityError
from ambiemo.parsing import apply_failure_policy
from ambiemo.predictions import predicted_label, prediction_columns, read_predictions, write_predictions
from ambiemo.prompts import PromptBook
from ambiemo.strategies import STRATEGIES, Context, Cost, Row, Strategy, Utterance, strategy_settings

log = logging.getLogger(__name__)

# A model key that needs no params entry: the scripted test double (ambiemo.models.fake).
FAKE_SPEC = {"adapter": "fake"}


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
    from ambiemo.cache import CachedModel, GenerationCache
    from ambiemo.config import cache_dir
    from ambiemo.models import load_model

    cache = cache if cache is not None else GenerationCache(cache_dir(params))
    # Local adapters keep built or converted weights (tiny models, the cascade's LLM) beside the cache.
    kwargs.setdefault("cache_dir", cache_dir(params))
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
) -> pd.DataFrame:
    """Run ``strategy`` with model ``model_key`` over the manifest, write the predictions parquet, return its rows.

    The returned frame is the table as written (schema: ``ambiemo.predictions``); ``df.attrs``
    holds its metadata (``meta``) and this run's live usage (``usage``, ``verifier_usage``:
    real calls and cache hits, which unlike the table differ between a first run and a rerun).

    ``limit``: only the first ``limit`` utterances in manifest order (None or 0: all).
    ``budgets``: these budgets instead of params ``strategies.<name>.budgets``.
    ``model`` / ``verifier``: already built models to use instead of building them from params
    (tests, notebooks that run several strategies with one loaded model); wrap them in
    ``ambiemo.cache.CachedModel`` yourself if they should be cached.
    """
    from ambiemo.manifest import read_manifest
    from ambiemo.predictions import read_predictions
    from ambiemo.provenance import provenance

    manifest = read_manifest(manifest_path)
    labels = manifest.labels
    df = manifest.df.iloc[: limit or None].reset_index(drop=True)
    settings = strategy_settings(params)
    cls = STRATEGIES.get(strategy)

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
    strat: Strategy = cls(Context(model, labels, prompts, settings, verifier))
    strat.check()
    budgets = sorted({int(b) for b in budgets}) if budgets else strat.default_budgets()
    strat.check_budgets(budgets)
    policy = (params.get("parsing") or {}).get("on_failure", "uniform")
    apply_failure_policy(None, len(labels), policy)  # an unknown policy fails now, not after the run

    results, failures = _run(
        strat, df, budgets, model.sample_rate, int(settings["batch_size"]), f"{model_key}/{strategy}"
    )
    if len(df) and not results:
        first = next(iter(failures.items()))
        raise RuntimeError(f"every utterance failed ({len(failures)}); the first, {first[0]}: {first[1]}")
    out, parse_failures = _table(strat, df, budgets, results, failures, labels, model_key, policy)

    relevant = {k: params[k] for k in ("seed", "prompts", "parsing", "strategies") if k in params}
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
    meta = {
        "parse_failures": int(sum(parse_failures.values())),
        "parse_failures_by": dict(sorted(parse_failures.items())),
        "model_failures": dict(sorted(failures.items())),
        "n_utterances": len(df),
    }
    path = write_predictions(out, out_path, labels=labels, label_set=manifest.label_set, provenance=meta_prov, **meta)
    written = read_predictions(path)
    df_out = written.df
    usage = _delta(model.usage.as_dict(), before["usage"])
    verifier_usage = None
    if verifier is not None and verifier is not model:
        verifier_usage = _delta(verifier.usage.as_dict(), before["verifier_usage"])
    df_out.attrs = {"meta": written.meta, "usage": usage, "verifier_usage": verifier_usage}
    log.info(
        "%s: %d rows; %d parse failures, %d model failures; live calls %d, cache hits %d",
        path,
        len(df_out),
        meta["parse_failures"],
        len(failures),
        usage["calls"],
        usage["cache_hits"],
    )
    return df_out


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
    from ambiemo.manifest import read_manifest
    from ambiemo.provenance import provenance

    manifest = read_manifest(manifest_path)
    prov = provenance(
        {k: params[k] for k in ("seed", "strategies") if k in params},
        params.get("seed"),
        model={"key": model_key},
        strategy={"name": strategy},
        dataset=manifest.dataset,
    )
    empty = pd.DataFrame(columns=prediction_columns(manifest.labels))
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


def _run(
    strat: Strategy, df: pd.DataFrame, budgets: list[int], sample_rate: int, batch_size: int, name: str
) -> tuple[dict[int, list[Row]], dict[str, str]]:
    """Rows per manifest position, and the failures {utt_id: error}.

    Utterances go to the strategy in batches (one model call serves a batch). When a batch
    fails, each of its utterances is run alone, so that one bad utterance is recorded and the
    others are answered (from the cache where the batch call got that far).
    """
    from ambiemo.audio import load_audio

    results: dict[int, list[Row]] = {}
    failures: dict[str, str] = {}
    for start in range(0, len(df), batch_size):
        utts: list[tuple[int, Utterance]] = []
        for i in range(start, min(start + batch_size, len(df))):
            utt_id, path = str(df.at[i, "utt_id"]), str(df.at[i, "audio_path"])
            try:
                if not path:
                    raise ValueError("the manifest has no audio for it (a labels-only manifest); rebuild it with audio")
                utts.append((i, Utterance(utt_id, load_audio(path, sample_rate), sample_rate)))
            except Exception as e:  # noqa: BLE001 -- recorded per utterance, see the module doc
                failures[utt_id] = f"audio: {e}"
        try:
            for (i, _), rows in zip(utts, strat.run([u for _, u in utts], budgets), strict=True):
                results[i] = rows
        except CapabilityError:
            raise
        except Exception:  # noqa: BLE001 -- find which utterance failed
            for i, u in utts:
                try:
                    results[i] = strat.run([u], budgets)[0]
                except CapabilityError:
                    raise
                except Exception as e:  # noqa: BLE001
                    failures[u.utt_id] = f"{type(e).__name__}: {e}"
                    log.warning("utterance %s failed: %s", u.utt_id, e)
        log.info("%s: %d of %d utterances done", name, min(start + batch_size, len(df)), len(df))
    return results, failures


def _table(
    strat: Strategy,
    df: pd.DataFrame,
    budgets: list[int],
    results: dict[int, list[Row]],
    failures: dict[str, str],
    labels: tuple[str, ...],
    model_key: str,
    policy: str,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The predictions rows (readout, then budget, then manifest order) and parse failures per readout@budget."""
    rows = []
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
                        "prompt_tokens": pd.NA if c.prompt_tokens is None else c.prompt_tokens,
                        "gen_tokens": c.gen_tokens,
                        "wall_s": c.wall_s,
                        "candidates": json.dumps(row.candidates, sort_keys=True),
                    }
                )
    return pd.DataFrame(rows, columns=prediction_columns(labels)), parse_failures


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Usage spent between two snapshots (a model object passed in may have served earlier runs)."""
    return {k: v - before.get(k, 0) for k, v in after.items()}
