"""Every third-party package that ``ambiemo`` imports is declared in pyproject.toml (core or an extra).

The imports are read with ``ast`` from every ``ambiemo/**/*.py``, including the lazy ones inside
functions; an import name is mapped to the distributions that install it with
``importlib.metadata.packages_distributions()`` (``sklearn`` is installed by ``scikit-learn``,
``yaml`` by ``PyYAML``), narrowed by the files of each distribution where one import name is shared
(the ``google`` namespace holds several distributions)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(source: str) -> set[str]:
    """Absolute module names imported anywhere in ``source`` (module level, functions, try blocks)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def third_party(modules: set[str], own: str = "ambiemo") -> set[str]:
    return {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != own}


def declared_distributions(pyproject: dict) -> set[str]:
    project = pyproject["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def providers(module: str, index: dict[str, list[str]]) -> set[str]:
    """The distributions that install ``module`` (canonical names); empty when none installed does."""
    top, *rest = module.split(".")
    dists = {canonicalize_name(d) for d in index.get(top, [])}
    if len(dists) > 1 and rest:  # a namespace shared by several distributions: which one holds this module?
        prefix = f"{top}/{rest[0]}"
        holding = {d for d in dists if any(str(f).startswith(prefix) for f in metadata.files(d) or [])}
        dists = holding or dists
    return dists


def undeclared(modules: set[str], declared: set[str], index: dict[str, list[str]]) -> dict[str, str]:
    """Each module whose distribution is not declared, with what installs it (or that nothing does)."""
    out = {}
    for module in sorted(modules):
        dists = providers(module, index)
        if not dists:
            out[module] = "not installed: cannot tell which distribution provides it"
        elif not dists & declared:
            out[module] = f"installed by {sorted(dists)}, none of which pyproject.toml declares"
    return out


def package_imports() -> dict[str, set[str]]:
    """Third-party module -> the ambiemo files that import it."""
    where: dict[str, set[str]] = {}
    for path in sorted((ROOT / "ambiemo").rglob("*.py")):
        for module in third_party(imported_modules(path.read_text())):
            where.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return where


def test_the_walk_finds_lazy_imports_and_skips_the_standard_library_and_the_package() -> None:
    source = (
        "import json\nimport numpy as np\nfrom . import base\nfrom ambiemo.core import config\n"
        "def f():\n    from tqdm import tqdm\n    try:\n        import google.genai\n    except ImportError:\n"
        "        pass\n"
    )
    assert third_party(imported_modules(source)) == {"numpy", "tqdm", "google.genai"}


def test_a_package_imported_but_not_declared_is_reported_with_its_distribution() -> None:
    index = {"yaml": ["PyYAML"], "sklearn": ["scikit-learn"], "pydantic": ["pydantic"]}
    declared = {"pyyaml", "scikit-learn"}
    out = undeclared({"yaml", "sklearn.metrics", "pydantic", "nowhere"}, declared, index)
    assert set(out) == {"pydantic", "nowhere"}
    assert "['pydantic']" in out["pydantic"] and "not installed" in out["nowhere"]


def test_every_third_party_import_of_the_package_is_declared() -> None:
    declared = declared_distributions(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    where = package_imports()
    assert {"numpy", "pydantic", "tqdm"} <= {m.split(".")[0] for m in where}  # the walk sees the package
    missing = undeclared(set(where), declared, metadata.packages_distributions())
    report = [f"{m} ({', '.join(sorted(where[m]))}): {why}" for m, why in missing.items()]
    assert not report, "imported but not declared in pyproject.toml:\n" + "\n".join(report)
