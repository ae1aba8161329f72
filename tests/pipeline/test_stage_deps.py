"""Every DVC stage declares the ambiemo modules its notebook imports, directly or through other
ambiemo modules, so that a change there reruns the stage (a stale figure is a wrong figure)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "ambiemo"


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    path = ROOT.joinpath(*parts)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imports(source: str, package: str = "ambiemo") -> set[str]:
    """ambiemo modules named by the import statements of ``source`` (at any depth: lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    return {m for m in found if module_file(m)}


def closure(names: set[str]) -> set[Path]:
    """The files of ``names`` and of every ambiemo module they import, transitively (parents too)."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__.py
        todo += sorted(imports(module_file(name).read_text()) - seen)
    return {module_file(n).relative_to(ROOT) for n in seen}


def notebook_source(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(line for block in code for line in block.splitlines() if not line.lstrip().startswith(("%", "!")))


def declared(stage: dict) -> list[Path]:
    return [Path(d) for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("ambiemo")]


STAGES = {
    name: stage
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
    if "papermill" in stage.get("cmd", "")
}


def test_closure_finds_lazy_imports() -> None:
    assert {Path("ambiemo/scoring/metrics.py"), Path("ambiemo/data/labels.py")} <= closure({"ambiemo.scoring.metrics"})


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_every_module_its_notebook_imports(name: str) -> None:
    stage = STAGES[name].get("do", STAGES[name])
    notebook = re.search(r"papermill (\S+\.ipynb)", stage["cmd"]).group(1)
    needed = closure(imports(notebook_source(ROOT / notebook)))
    deps = declared(stage)
    missing = sorted(
        str(f) for f in needed if not any(f == d or d in f.parents for d in deps) and f.name != "__init__.py"
    )
    assert not missing, f"dvc.yaml stage {name} imports but does not declare: {missing}"


def test_plan_stage_comes_first_and_reruns_only_on_what_the_plan_reads() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert next(iter(stages)) == "plan"
    stage = stages["plan"]
    assert stage["cmd"].split()[:2] == ["ambiemo", "plan"] and "--json ${paths.results}/plan/plan.json" in stage["cmd"]
    # every ambiemo module the plan's numbers come from is a dependency (a code change reruns it) ...
    deps = [Path(d) for d in stage["deps"]]
    needed = closure({"ambiemo.inference.plan", "ambiemo.core.config"})
    missing = sorted(
        str(f) for f in needed if not any(f == d or d in f.parents for d in deps) and f.name != "__init__.py"
    )
    assert not missing, f"the plan stage does not declare {missing}"
    # ... and so is every params section it reads, but not the whole file (a figure's colour must not rerun it)
    assert {"run", "datasets", "models", "strategies", "prompts"} <= set(stage["params"])
    assert not {"figures", "scoring", "stats"} & set(stage["params"])
    # the JSON is not a dependency of anything: its contents (cache coverage) may change without rerunning stages
    assert not any("plan.json" in str(d) for s in stages.values() for d in s.get("do", s).get("deps", []))
