"""The results layout, named once: where every stage writes and every later stage reads.

    <results>/prepared/<dataset>/manifest.parquet      the canonical per-utterance table
    <results>/prepared/<dataset>/ratings.parquet       one row per rating (where the corpus has raters)
    <results>/predictions/<dataset>/<model>/<strategy>.parquet             one cell's predictions
    <results>/predictions/<dataset>/<model>/<strategy>.candidates.parquet  its candidates
    <results>/scores/scores.parquet                    one row per utterance x cell
    <results>/summary/<name>.parquet (+ .csv)          summary, by_ambiguity, ci, compute, ...
    <results>/summary/metrics.json                     DVC's headline metrics
    <results>/stats/<name>.parquet (+ .csv)            paired, mixed_model, gee_correctness, power
    <results>/notebooks/                               the executed notebooks
    <figures>/                                         the figures (params ``figures.folder``)

``<results>`` is params ``paths.results``. Build one with ``Layout.from_params(params)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CANDIDATES_SUFFIX = ".candidates.parquet"  # a cell's candidates table, beside its predictions
SUMMARY_TABLES = (
    "summary",
    "by_ambiguity",
    "ci",
    "compute",
    "compute_matched",
    "conventions",
    "unanswered",
    "calibration",
    "calibration_folds",
)
STATS_TABLES = ("paired", "gains", "mixed_model", "gee_correctness", "power", "annotators", "paired_calibrated")


@dataclass(frozen=True)
class Layout:
    """Paths of the pipeline's outputs under ``results`` (and the figures folder)."""

    results: Path = Path("results")
    figures: Path = Path("figures")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> Layout:
        params = params or {}
        results = (params.get("paths") or {}).get("results") or "results"
        figures = (params.get("figures") or {}).get("folder") or "figures"
        return cls(Path(results), Path(figures))

    def prepared(self, dataset: str) -> Path:
        return self.results / "prepared" / dataset

    def manifest(self, dataset: str) -> Path:
        return self.prepared(dataset) / "manifest.parquet"

    def ratings(self, dataset: str) -> Path:
        return self.prepared(dataset) / "ratings.parquet"

    def predictions_dir(self, dataset: str | None = None, model: str | None = None) -> Path:
        path = self.results / "predictions"
        if dataset is not None:
            path = path / dataset
            if model is not None:
                path = path / model
        return path

    def predictions(self, dataset: str, model: str, strategy: str) -> Path:
        return self.predictions_dir(dataset, model) / f"{strategy}.parquet"

    def candidates(self, dataset: str, model: str, strategy: str) -> Path:
        return self.predictions_dir(dataset, model) / f"{strategy}{CANDIDATES_SUFFIX}"

    @property
    def scores(self) -> Path:
        return self.results / "scores" / "scores.parquet"

    @property
    def summary_dir(self) -> Path:
        return self.results / "summary"

    @property
    def stats_dir(self) -> Path:
        return self.results / "stats"

    @property
    def metrics_json(self) -> Path:
        return self.summary_dir / "metrics.json"

    @property
    def notebooks(self) -> Path:
        return self.results / "notebooks"

    def summary(self, name: str) -> Path:
        """``summary/<name>.parquet`` for a name of ``SUMMARY_TABLES``."""
        return self._table(self.summary_dir, name, SUMMARY_TABLES)

    def stats(self, name: str) -> Path:
        """``stats/<name>.parquet`` for a name of ``STATS_TABLES``."""
        return self._table(self.stats_dir, name, STATS_TABLES)

    @staticmethod
    def _table(folder: Path, name: str, known: tuple[str, ...]) -> Path:
        if name not in known:
            raise KeyError(f"{folder.name}/{name}: not a table of the layout; known: {list(known)}")
        return folder / f"{name}.parquet"
