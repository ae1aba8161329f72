"""``score_run(params)``: score exactly the active run's cells, with the references beside them.

The one place that enumerates cells: notebook ``03_score`` and ``ambiemo score`` both call it.

1. **Cells**: every ``run.datasets × run.models × run.strategies`` predictions table in the
   results layout (``ambiemo.core.layout``), nothing else, so that a stale table of another profile
   never leaks in. A table whose metadata says ``skipped`` (no model of the run can serve the
   strategy) is listed with its reason and not scored; a missing table is an error naming it.
2. **References** (``ambiemo.scoring.references``), per dataset: ``uniform``, ``label-prior`` and
   ``hard-oracle`` scored like a model (``model == "reference"``, budget 1); and the human
   ceilings ``human-loo`` and ``human-split-half`` from ``ratings.parquet`` where the dataset has
   one, else ``human-loo-counts`` from the manifest's vote counts. A ceiling row carries the
   manifest's speaker, entropy and ambiguity bin (so the CIs and the per-bin breakdown treat it
   like a model) and has values only for ``js``, ``bc``, ``tv`` and ``brier``: NaN elsewhere.
3. **Unanswered**, per cell (dataset × model × table strategy × readout × budget): utterances of
   the manifest, rows, utterances with no row (``n_missing``), the model did not answer
   (``n_model_failures``, the table's ``model_failures``) and whose answer did not parse
   (``n_parse_failures``, model failures excluded). It is a table of its own, so it survives the
   concatenation of the cells (pandas drops ``attrs`` there) and is stored in the scores' metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.layout import Layout
from ambiemo.scoring import references as R
from ambiemo.scoring.schema import COMPUTE_COLUMNS, KEYS, VERIFIER_COLUMNS, ScoringError, scoring_params, write_scores
from ambiemo.scoring.scores import _ambiguity, score_predictions

CELL_COLUMNS = ("dataset", "model", "table")
SKIPPED_COLUMNS = ["dataset", "model", "strategy", "reason"]
UNANSWERED_COLUMNS = [
    "dataset",
    "model",
    "table",
    "strategy",
    "budget",
    "n_utterances",
    "n_rows",
    "n_missing",
    "n_model_failures",
    "n_parse_failures",
]


@dataclass
class ScoreRun:
    """What ``score_run`` returns: the scores, the per-cell unanswered counts, the skipped cells,
    the files read, and per dataset which human ceiling was computed from what."""

    scores: pd.DataFrame
    unanswered: pd.DataFrame
    skipped: pd.DataFrame
    inputs: list[str] = field(default_factory=list)
    ceilings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        """Cells of the scores, the model cells with no row (every utterance missing) included."""
        return n_cells(self.scores, self.unanswered)

    def write(self, params: Mapping[str, Any], path: str | Path | None = None) -> Path:
        """Write the scores (default: the layout's ``scores/scores.parquet``) with the unanswered
        counts, skipped cells and ceiling sources in the metadata."""
        path = Path(path) if path is not None else Layout.from_params(params).scores
        return write_scores(
            self.scores,
            path,
            params,
            inputs=self.inputs,
            extra={
                "unanswered": _records(self.unanswered),
                "skipped": _records(self.skipped),
                "ceilings": dict(self.ceilings),
            },
        )


def run_cells(params: Mapping[str, Any]) -> list[tuple[str, str, str, Path]]:
    """``(dataset, model, strategy, predictions path)`` of every cell of the active run, in order."""
    run, layout = params["run"], Layout.from_params(params)
    return [
        (dataset, model, strategy, layout.predictions(dataset, model, strategy))
        for dataset in run["datasets"]
        for model in run["models"]
        for strategy in run["strategies"]
    ]


def score_cell(
    manifest: Any,
    cell: tuple[str, str, str],
    path: Path,
    params: Mapping[str, Any],
    inputs: list[str],
    skipped: list[dict],
    unanswered: list[pd.DataFrame],
) -> pd.DataFrame | None:
    """One cell of the run (``cell``: dataset, model, strategy) scored from its predictions file,
    which is named in an error where the infer stage has not written it. The file joins ``inputs``;
    the cell joins ``skipped`` (no model could serve it: ``None``) or ``unanswered`` (its missing
    utterances, every one where the run wrote nothing: then ``None`` too)."""
    from ambiemo.inference.predictions import read_predictions

    dataset, model, strategy = cell
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no predictions for dataset {dataset}, model {model}, strategy {strategy}; "
            "has the infer stage run for this cell?"
        )
    predictions = read_predictions(path)
    inputs.append(str(path))
    if predictions.meta.get("skipped"):
        reason = predictions.meta["skipped"]
        skipped.append({"dataset": dataset, "model": model, "strategy": strategy, "reason": reason})
        return None
    unanswered.append(_unanswered(predictions.df, predictions.meta, manifest.df, dataset, model, strategy))
    if predictions.df.empty:  # a run that wrote nothing: a cell with every utterance missing
        return None
    return score_predictions(manifest, predictions, params)


def score_run(params: Mapping[str, Any], *, references: bool = True) -> ScoreRun:
    """Score every cell of the active run and (unless ``references=False``) the reference
    predictors and human ceilings of each dataset; see the module docstring."""
    from ambiemo.data.manifest import read_manifest

    layout = Layout.from_params(params)
    frames, unanswered, skipped, inputs, ceilings = [], [], [], [], {}
    manifests: dict[str, Any] = {}
    for dataset, model, strategy, path in run_cells(params):
        if dataset not in manifests:
            manifests[dataset] = read_manifest(layout.manifest(dataset))
            inputs.append(str(layout.manifest(dataset)))
        scored = score_cell(manifests[dataset], (dataset, model, strategy), path, params, inputs, skipped, unanswered)
        if scored is not None:
            frames.append(scored)
    if not frames:
        empty = [f"{u['dataset']}/{u['model']}/{u['table']}" for f in unanswered for u in f.to_dict("records")]
        raise ScoringError(
            f"no cell of the run has a scored row: {len(skipped)} skipped (no model of run.models can serve "
            f"run.strategies; see the reasons in the skipped table), the others wrote no rows{_eg(empty)}"
        )
    labels = frames[0].attrs["labels"]
    if references:
        cells = list(frames)
        for dataset, full in manifests.items():
            # The references answer exactly the utterances the run's cells answer (all of them, or
            # the first run.limit), so that a model and its yardsticks are scored on the same set.
            asked = {str(u) for f in cells for u in f.loc[f["dataset"].astype(str) == dataset, "utt_id"]}
            manifest = replace(full, df=full.df[full.df["utt_id"].astype(str).isin(asked)].reset_index(drop=True))
            frames.append(score_predictions(manifest, R.reference_predictions(manifest.df, manifest.labels), params))
            ceiling, source, used = human_ceilings(manifest, layout.ratings(dataset), params)
            frames.append(ceiling)
            ceilings[dataset] = {"source": source, "excluded": ceiling.attrs["excluded"], "utterances": len(asked)}
            inputs += used
    scores = pd.concat(frames, ignore_index=True).sort_values([*KEYS, "utt_id"], kind="stable")
    scores = scores.reset_index(drop=True)
    scores.attrs.update(
        labels=list(labels),
        ambiguity_order=frames[0].attrs["ambiguity_order"],
        missing={k: v for f in frames for k, v in f.attrs.get("missing", {}).items()},
    )
    return ScoreRun(
        scores=scores,
        unanswered=pd.concat(unanswered, ignore_index=True)[UNANSWERED_COLUMNS],
        skipped=pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
        inputs=inputs,
        ceilings=ceilings,
    )


def _eg(names: list[str]) -> str:
    return f" (e.g. {names[0]})" if names else ""


def _budgets_of(meta: Mapping[str, Any]) -> list[int]:
    """The budgets a predictions table was asked for (its provenance), for a table with no rows."""
    asked = ((meta.get("provenance") or {}).get("strategy") or {}).get("budgets") or []
    return sorted({int(b) for b in asked}) or [0]


def _unanswered(
    df: pd.DataFrame, meta: Mapping[str, Any], manifest: pd.DataFrame, dataset: str, model: str, table: str
) -> pd.DataFrame:
    """Per readout × budget of one predictions table: what was not answered, and why. A table with
    no rows is one row per budget it was asked for (budget 0 where its provenance does not say),
    every utterance missing."""
    failed = set(map(str, (meta.get("model_failures") or {}).keys()))
    n = int(manifest["utt_id"].nunique())
    if df.empty:
        rows = [
            {
                "dataset": dataset,
                "model": model,
                "table": table,
                "strategy": table,
                "budget": budget,
                "n_utterances": n,
                "n_rows": 0,
                "n_missing": n,
                "n_model_failures": len(failed),
                "n_parse_failures": 0,
            }
            for budget in _budgets_of(meta)
        ]
        return pd.DataFrame(rows, columns=UNANSWERED_COLUMNS)
    rows = []
    for (strategy, budget), g in df.groupby(["strategy", "budget"], sort=True):
        is_failure = g["utt_id"].astype(str).isin(failed)
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "table": table,
                "strategy": strategy,
                "budget": int(budget),
                "n_utterances": n,
                "n_rows": len(g),
                "n_missing": n - int(g["utt_id"].nunique()),
                "n_model_failures": int(is_failure.sum()),
                "n_parse_failures": int((~g["parsed_ok"].astype(bool) & ~is_failure).sum()),
            }
        )
    return pd.DataFrame(rows, columns=UNANSWERED_COLUMNS)


def human_ceilings(manifest: Any, ratings_path: Path, params: Mapping[str, Any]) -> tuple[pd.DataFrame, str, list[str]]:
    """Score rows of the human ceilings of one dataset, the source they came from (``ratings``:
    human-loo and human-split-half from the per-rater table; ``counts``: human-loo-counts from the
    manifest's vote counts), and the files read."""
    from ambiemo.data.ratings import read_ratings

    sp = scoring_params(params)
    labels = list(manifest.labels)
    if ratings_path.exists():
        ratings = read_ratings(ratings_path)
        ratings = ratings[ratings["utt_id"].astype(str).isin(set(manifest.df["utt_id"].astype(str)))]
        parts = [
            R.human_loo(ratings, labels, js_base=sp["js_base"]),
            R.human_split_half(ratings, labels, js_base=sp["js_base"], seed=int(params.get("seed") or 0)),
        ]
        source, used = "ratings: human-loo, human-split-half from ratings.parquet", [str(ratings_path)]
    else:
        parts = [R.human_loo_counts(manifest.df, labels, js_base=sp["js_base"])]
        source, used = "counts: human-loo-counts from the manifest's vote counts (no ratings.parquet)", []
    out = pd.concat([ceiling_scores(part, manifest, sp) for part in parts], ignore_index=True)
    out.attrs["excluded"] = {p.attrs["reference"]: p.attrs.get("excluded", {}) for p in parts}
    return out, source, used


def ceiling_scores(ceiling: pd.DataFrame, manifest: Any, sp: Mapping[str, Any]) -> pd.DataFrame:
    """One human ceiling table (``ambiemo.scoring.references.human_*``) as score rows: the manifest's
    columns for each utterance, the ceiling's ``js``, ``bc``, ``tv``, ``brier``, NaN elsewhere."""
    labels = list(manifest.labels)
    mdf = manifest.df
    order = list(manifest.meta.get("ambiguity", {}).get("bins", []))
    m = mdf.set_index(mdf["utt_id"].astype(str)).loc[ceiling["utt_id"].astype(str)].reset_index(drop=True)
    bins, ranks = _ambiguity(m, order, sp["ambiguity_from"])  # the same bins as a model's rows
    out = pd.DataFrame(
        {
            "dataset": m["dataset"].astype(str),
            "model": R.MODEL,
            "strategy": ceiling["reference"].to_numpy(),
            "budget": 1,
            "utt_id": ceiling["utt_id"].astype(str).to_numpy(),
            "speaker": m["speaker"].fillna("").astype(str),
            "n_raters": ceiling["n_raters"].to_numpy(),
            "entropy_bits": m["entropy_bits"].to_numpy(),
            "majority": m["majority"].to_numpy(),
            "majority_tie": m["majority_tie"].to_numpy(),
            "ambiguity": bins,
            "ambiguity_rank": ranks,
            "params_b": np.nan,
            "log10_params": np.nan,
            "parsed_ok": True,
            "n_candidates": 0,
        }
    )
    for c in (*COMPUTE_COLUMNS, *VERIFIER_COLUMNS):
        out[c] = 0.0
    out["pred_label"] = ""
    out["majority_used"] = ""
    out["oracle_n_parsed"] = 0  # no candidates (and the column keeps the models' integer type)
    for c in R.CEILING_METRICS:
        out[c] = ceiling[c].to_numpy(dtype=float)
    for x in labels:
        out[f"true_{x}"] = m[f"p_{x}"].to_numpy(dtype=float)
    for x in labels:
        out[f"p_{x}"] = np.nan
    return out


def unanswered_table(meta: Mapping[str, Any]) -> pd.DataFrame:
    """The per-cell unanswered counts stored in a scores table's metadata (by ``ScoreRun.write``)."""
    return pd.DataFrame(meta.get("unanswered", []), columns=UNANSWERED_COLUMNS)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in df.to_dict("records")]


def empty_cells(unanswered: pd.DataFrame) -> pd.DataFrame:
    """The cells of an unanswered table that have no row at all (a run that wrote nothing)."""
    return unanswered[unanswered["n_rows"] == 0].reset_index(drop=True)


def n_cells(scores: pd.DataFrame, unanswered: pd.DataFrame) -> int:
    """Cells of a scores table (dataset × model × strategy × budget), those with no row included."""
    keys = scores[list(KEYS)].drop_duplicates()
    empty = empty_cells(unanswered)[list(KEYS)]
    return len(pd.concat([keys.astype(str), empty.astype(str)]).drop_duplicates())


def empty_cells_note(unanswered: pd.DataFrame) -> str:
    """One sentence naming the cells with no row, for a stage that expected them ("" if none)."""
    empty = empty_cells(unanswered)
    if empty.empty:
        return ""
    names = [
        f"{r.dataset}/{r.model}/{r.table}@{r.budget} ({r.n_missing} of {r.n_utterances} missing)"
        for r in empty.itertuples()
    ]
    return f"{len(names)} cell(s) of the run have no row, every utterance missing (see unanswered): " + ", ".join(names)
