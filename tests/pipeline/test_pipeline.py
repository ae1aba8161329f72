"""End to end: `dvc repro` on a copy of the repository, with the offline `fake` model.

The real demo profile takes minutes (`make repro`); this runs every stage of the same dvc.yaml
and notebooks on a small slice in about a minute, then checks that a second `dvc repro` does
nothing and that the run touched no tracked file but dvc.lock.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e  # `dvc repro` of every stage on a copy of the repository

ROOT = Path(__file__).resolve().parents[2]
# Made at run time, so that no file of the copied repository (this one included) holds them.
PLANTED = {"openai": f"sk-planted-{secrets.token_hex(12)}", "gemini": f"AIza-planted-{secrets.token_hex(12)}"}
FIGURES = [
    "fig1_metric_heatmap",
    "fig2_metric_vs_ambiguity",
    "fig3_interaction",
    "fig4_compute_curves",
    "fig5_reliability",
    "fig6_ambiguity_distribution",
    "fig7_annotators",
]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def pipeline_copy(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file() and rel != "dvc.lock":  # no lock: every stage runs, as on a fresh clone
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["run"] = {
        "profile": "demo",
        "datasets": ["demo"],
        "models": ["fake"],
        "strategies": ["baseline", "w-bon", "self-consistency"],
        "limit": 8,
    }
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AMBIEMO_CACHE_DIR": str(dest / ".cache"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        # Planted keys: the run must not write them anywhere (test_no_planted_key_in_any_output).
        "OPENAI_API_KEY": PLANTED["openai"],
        "GEMINI_API_KEY": PLANTED["gemini"],
    }
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "copy"], dest, env)
    out = _run(["dvc", "repro"], dest, env)
    (dest / ".git" / "repro.log").write_text(out.stdout + out.stderr)  # the run's log (git ignores it there)
    return dest, env


def test_repro_writes_every_figure_table_and_paper_input(pipeline_copy):
    dest, _ = pipeline_copy
    for stem in FIGURES:
        for ext in ("pdf", "png"):
            path = dest / "figures" / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, f"{path.name} missing or empty"
    generated = dest / "paper" / "generated"
    for name in (
        "macros.tex",
        "tab_main.tex",
        "tab_datasets.tex",
        "tab_paired.tex",
        "tab_mixed.tex",
        "tab_compute.tex",
    ):
        assert (generated / name).is_file(), name
    macros = (generated / "macros.tex").read_text()
    n_corpus = yaml.safe_load((dest / "params.yaml").read_text())["datasets"]["demo"]["n_utterances"]
    assert f"\\newcommand{{\\NumUtterances}}{{{n_corpus}}}" in macros  # the corpus, not the inference limit
    for nb in ("03_score", "04_aggregate", "05_stats", "06_figures", "07_paper_tables"):
        assert (dest / "results" / "notebooks" / f"{nb}.ipynb").is_file()
    assert (dest / "results" / "paper" / "BUILD.txt").is_file()


def test_second_repro_is_a_no_op_and_tracked_files_are_untouched(pipeline_copy):
    dest, env = pipeline_copy
    before = {p: p.stat().st_mtime_ns for p in (dest / "results").rglob("*.parquet")}
    out = _run(["dvc", "repro"], dest, env)
    assert "Running stage" not in out.stdout, out.stdout
    assert {p: p.stat().st_mtime_ns for p in (dest / "results").rglob("*.parquet")} == before
    changed = _run(["git", "status", "--porcelain", "--untracked-files=no"], dest, env).stdout.split("\n")
    assert [line for line in changed if line.strip()] == [], "the run modified tracked files"
    status = _run(["git", "status", "--porcelain"], dest, env).stdout.split("\n")
    assert [line for line in status if line.strip()] == ["?? dvc.lock"], "the run left files git does not ignore"


def test_no_planted_key_in_any_output(pipeline_copy):
    """API keys live in the environment only: none of them appears in any file the run wrote or
    in its log (tables, cache, executed notebooks, dvc.lock, figures, paper inputs)."""
    dest, _ = pipeline_copy
    scanned = 0
    for path in dest.rglob("*"):
        if (".git" in path.relative_to(dest).parts and path.name != "repro.log") or not path.is_file():
            continue
        data = path.read_bytes()
        scanned += 1
        for name, key in PLANTED.items():
            assert key.encode() not in data, f"the {name} key leaked into {path.relative_to(dest)}"
    assert scanned > 50 and (dest / "dvc.lock").is_file() and any((dest / "results" / "notebooks").rglob("*.ipynb"))


def test_the_executed_figures_notebook_shows_every_figure(pipeline_copy):
    """A reader who opens the executed notebook sees each figure inline, not a list of file paths."""
    import nbformat

    dest, _ = pipeline_copy
    nb = nbformat.read(dest / "results" / "notebooks" / "06_figures.ipynb", as_version=4)
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) == len(FIGURES)
    notes = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("**Figure")]
    assert len(notes) == len(FIGURES)  # a sentence per figure saying what to look for
