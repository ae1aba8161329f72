"""Dependencies point one way: the config layer imports no stage, and no module imports itself back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ambiemo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ambiemo modules ``path`` imports anywhere (functions included), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) - {name} for name, path in files.items()}


def _parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_the_config_layer_imports_no_strategy_or_model_code():
    """Loading and checking params.yaml runs in a fresh interpreter without importing a stage."""
    code = (
        "import sys; from ambiemo.core.config import load_params; "
        "load_params('params.yaml'); "
        "print(sorted(m for m in sys.modules if m.startswith('ambiemo.') and not m.startswith('ambiemo.core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_no_import_circle():
    """No module reaches itself through the modules it imports (a package's __init__ importing its
    own submodules is the package's shape, not a circle, so edges into a parent package are left out)."""
    graph = _graph()
    edges = {m: {d for d in deps if d not in _parents(m)} for m, deps in graph.items()}
    circles = []
    for start in edges:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, "import circles:\n" + "\n".join(sorted(set(circles))[:10])


def test_the_core_imports_no_stage():
    graph = _graph()
    stages = ("ambiemo.data", "ambiemo.models", "ambiemo.inference", "ambiemo.strategies", "ambiemo.scoring")
    stages += ("ambiemo.stats", "ambiemo.report", "ambiemo.cli")
    bad = {
        m: sorted(d for d in deps if d.startswith(stages)) for m, deps in graph.items() if m.startswith("ambiemo.core")
    }
    assert not any(bad.values()), bad


def test_analysis_stages_depend_on_no_strategy_or_model_code():
    """A change to a strategy or an adapter reruns plan and inference; the stages after them rerun only
    when the predictions change (their declared code is checked against their imports by test_stage_deps)."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("score", "aggregate", "stats", "figures", "paper_tables", "paper"):
        deps = (stages[name].get("do") or stages[name]).get("deps", [])
        code = [d for d in deps if isinstance(d, str) and d.startswith(("ambiemo/strategies", "ambiemo/models"))]
        assert not code, f"stage {name} depends on {code}"
    for name in ("plan", "infer"):
        deps = (stages[name].get("do") or stages[name]).get("deps", [])
        assert {"ambiemo/strategies", "ambiemo/models"} <= set(deps), name
