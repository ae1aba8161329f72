"""docs/extending.md "Adding a strategy", followed literally: its module and its params entry are
taken from the page as written, put where it says on a copy of the repository, and `dvc repro`
runs the pipeline with the new strategy on the offline `fake` model. No other file is edited."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _recipe(page: str) -> tuple[str, str, str]:
    """The module's path, its code, and the params entry, as a reader copies them."""
    start = page.index("## Adding a strategy")
    end = page.find("\n## ", start + 1)
    section = page[start : end if end > 0 else len(page)]
    path = re.search(r"the module `(ambiemo/strategies/[a-z_]+\.py)`", section)
    blocks = dict(
        (lang, textwrap.dedent(body)) for lang, body in re.findall(r"```(python|yaml)\n(.*?)```", section, re.S)
    )
    assert path and set(blocks) == {"python", "yaml"}, (
        "the recipe must name the module and show it and its params entry"
    )
    return path.group(1), blocks["python"], blocks["yaml"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory) -> tuple[Path, str, str, dict]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    module_path, code, entry = _recipe((ROOT / "docs" / "extending.md").read_text())
    dest = tmp_path_factory.mktemp("recipe")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file() and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(dest),
        "AMBIEMO_CACHE_DIR": str(dest / ".cache"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "copy"], dest, env)
    # Step 1: the module, where the page says.
    (dest / module_path).write_text(code)
    # Step 2: the params entry under `strategies:`, and the strategy in the run (the fake model, a small slice).
    name = next(iter(yaml.safe_load(entry)))
    text = (dest / "params.yaml").read_text()
    assert "\nstrategies:\n" in text
    text = text.replace("\nstrategies:\n", "\nstrategies:\n" + entry, 1)
    text = text.replace(
        "  <<: *demo\n  profile: demo\n",
        f"  <<: *demo\n  profile: demo\n  models: [fake]\n  strategies: [baseline, {name}]\n  limit: 8\n",
        1,
    )
    (dest / "params.yaml").write_text(text)
    _run(["dvc", "repro"], dest, env)
    # The plan stage runs first, before the corpus is prepared, and counts no calls then: plan again now
    # that it is, with the run's strategies and with the baseline alone (both under git-ignored results/).
    _run(["ambiemo", "plan", "--json", "results/plan/with-recipe.json"], dest, env)
    _run(["ambiemo", "plan", "--json", "results/plan/baseline.json", "-S", "run.strategies=[baseline]"], dest, env)
    return dest, module_path, name, yaml.safe_load(entry)[name]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_recipe_runs_through_every_stage(recipe_run):
    dest, _, name, entry = recipe_run
    results = dest / "results"
    calls = {
        k: yaml.safe_load((results / "plan" / f"{k}.json").read_text())["models"]["fake"]["calls"]
        for k in ("with-recipe", "baseline")
    }
    assert calls["with-recipe"] > calls["baseline"] > 0, calls  # the planner counted the new strategy's requests
    predictions = pd.read_parquet(results / "predictions" / "demo" / "fake" / f"{name}.parquet")
    budgets = entry["budgets"]["demo"] if isinstance(entry["budgets"], dict) else entry["budgets"]
    assert set(predictions["budget"]) == set(budgets) and predictions["utt_id"].nunique() == 8
    summary = pd.read_parquet(results / "summary" / "summary.parquet")
    assert name in set(summary["strategy"])
    paired = pd.read_parquet(results / "stats" / "paired.parquet")
    assert name in set(paired["strategy"])
    assert (dest / "figures" / "fig3_interaction.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.e2e
def test_no_other_file_was_edited(recipe_run):
    dest, module_path, _, _ = recipe_run
    status = subprocess.run(["git", "status", "--porcelain"], cwd=dest, capture_output=True, text=True, check=True)
    changed = sorted(line[3:] for line in status.stdout.splitlines())
    assert changed == sorted(["dvc.lock", "params.yaml", module_path]), changed
