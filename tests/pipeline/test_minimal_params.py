"""A params.yaml with every optional key removed runs the demo pipeline at the schema's defaults.

The stages are the pipeline's own notebooks, executed with papermill in order on a copy of the
repository whose params.yaml holds only what has no default: the run, a label set, the demo
dataset, the fake model and a budget grid for the one strategy that has a budget."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "run": {"datasets": ["demo"], "models": ["fake"], "strategies": ["baseline", "bon"], "limit": 8},
    "label_sets": {"four": {"labels": ["neutral", "happy", "angry", "sad"]}},
    "datasets": {"demo": {"loader": "demo", "root": "results/prepared/demo/corpus", "label_set": "four"}},
    "models": {"fake": {"adapter": "fake"}},
    "strategies": {"bon": {"budgets": [2]}},
}


@pytest.fixture(scope="module")
def minimal_run(tmp_path_factory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path_factory.mktemp("minimal")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        if rel.startswith(("ambiemo/", "notebooks/")) and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / "params.yaml").write_text(yaml.safe_dump(MINIMAL, sort_keys=False))
    env = {**os.environ, "AMBIEMO_CACHE_DIR": str(dest / ".cache"), "PYTHONPATH": str(dest)}
    runs = [
        ("01_prepare", ["-p", "dataset", "demo", "-p", "out_dir", "results/prepared/demo"]),
        (
            "02_infer",
            ["-p", "dataset", "demo", "-p", "model", "fake", "-p", "progress", "False"]
            + [
                "-p",
                "manifest",
                "results/prepared/demo/manifest.parquet",
                "-p",
                "out_dir",
                "results/predictions/demo/fake",
            ],
        ),
        ("03_score", []),
        ("04_aggregate", []),
        ("05_stats", []),
        ("06_figures", []),
    ]
    (dest / "executed").mkdir()
    for name, args in runs:
        cmd = [sys.executable, "-m", "papermill", f"notebooks/{name}.ipynb", f"executed/{name}.ipynb", "-k", "python3"]
        out = subprocess.run(cmd + args + ["--log-level", "WARNING"], cwd=dest, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"{name} failed at the schema's defaults:\n{out.stderr[-3000:]}"
    return dest


@pytest.mark.slow
@pytest.mark.e2e
def test_every_stage_runs_at_the_schema_defaults(minimal_run):
    from ambiemo.core.params import Figures, Scoring, Stats

    results = minimal_run / "results"
    summary = pd.read_parquet(results / "summary" / "summary.parquet")
    assert {"baseline", "bon"} <= set(summary["strategy"])
    paired = pd.read_parquet(results / "stats" / "paired.parquet")
    assert set(paired["metric"]) == set(Stats().paired_metrics)  # the schema's default metrics, none restated
    ci = pd.read_parquet(results / "summary" / "ci.parquet")
    assert ci["level"].eq(Scoring().ci_level).all() if "level" in ci else True
    for stem in ("fig1_metric_heatmap", "fig2_metric_vs_ambiguity", "fig3_interaction"):
        for fmt in Figures().formats:  # the default formats, written into the default folder
            assert (minimal_run / Figures().folder / f"{stem}.{fmt}").stat().st_size > 0
