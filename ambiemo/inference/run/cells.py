"""The pipeline's inference stage: every strategy of one model over one manifest, cells the route
cannot serve written as skipped."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.inference.candidates import candidate_columns
from ambiemo.inference.predictions import prediction_columns, read_predictions, write_predictions
from ambiemo.inference.run.outputs import InferenceFailures
from ambiemo.inference.run.settings import build_model, cell_provenance
from ambiemo.inference.run.single import run_inference
from ambiemo.models.base import CapabilityError
from ambiemo.strategies import STRATEGIES, strategy_settings

log = logging.getLogger(__name__)


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
            out[strategy] = write_skipped(
                params, manifest_path, path, str(err), model={"key": model_key}, strategy={"name": strategy}
            )
        except InferenceFailures as err:
            failed.append(err)
    if failed:
        raise InferenceFailures(
            "; ".join(str(e) for e in failed), {k: v for e in failed for k, v in e.failures.items()}, None
        )
    return out


def write_skipped(
    params: dict[str, Any], manifest_path: str | os.PathLike, out_path: str | os.PathLike, reason: str, **parts: Any
) -> pd.DataFrame:
    """Write an empty predictions table that records why this cell cannot run; ``parts`` name the
    cell in its provenance (``model``, ``strategy``), recorded as a run records them (``cell_provenance``).

    A matrix of models × strategies contains cells a route cannot serve (W-BoN needs
    log-probabilities, which OpenAI's audio models do not return). The pipeline writes such a
    cell as skipped, with the reason in its metadata (``skipped``), instead of stopping; scoring
    lists the skipped cells beside the results.
    """
    from ambiemo.data.manifest import read_manifest

    manifest = read_manifest(manifest_path)
    prov = cell_provenance(params, manifest.dataset, manifest=Path(manifest_path).name, **parts)
    empty = pd.DataFrame(columns=prediction_columns(manifest.labels))
    path = write_predictions(
        empty,
        out_path,
        labels=manifest.labels,
        label_set=manifest.label_set,
        provenance=prov,
        candidates=pd.DataFrame(columns=candidate_columns(manifest.labels)),
        skipped=reason,
        parse_failures=0,
        n_utterances=0,
    )
    log.warning("%s skipped: %s", out_path, reason)
    return read_predictions(path).df
