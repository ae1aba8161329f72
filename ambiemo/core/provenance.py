"""What every result file records about the run that made it."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import ambiemo

# Packages whose versions change results; recorded in every output.
TRACKED_PACKAGES = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "statsmodels",
    "torch",
    "transformers",
    "tokenizers",
    "opensmile",
    "ctranslate2",
    "httpx",
    "google-genai",
    "vllm",
)


@functools.lru_cache(maxsize=8)
def _versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Once per process: the installed versions do not change under a running interpreter, and
    # reading the metadata of 13 packages took a tenth of a second per output file.
    out = []
    for name in names:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(out)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (those installed), as recorded in every output."""
    return dict(_versions(tuple(names)))


# What the pipeline's outputs come from: its code, notebooks, definition, params, pins and the paper's
# sources. The commit an output records is the last one that changed any of these, so that committing
# dvc.lock, the docs or a note after `make repro` changes no output, and a clean clone's run records
# the commit that the run which wrote dvc.lock recorded (the reproduction promise, docs/reliability.md).
PIPELINE_PATHS = ("ambiemo", "notebooks", "paper", "dvc.yaml", "params.yaml", "pyproject.toml", "requirements")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The last commit that changed the pipeline's inputs (``PIPELINE_PATHS``), with ``-dirty`` if one
    of them has uncommitted changes; None outside a git work tree."""
    paths = [f":(top){name}" for name in PIPELINE_PATHS]  # from any folder of the tree

    def git(*args: str) -> str:
        return subprocess.run(["git", *args, "--", *paths], cwd=cwd, capture_output=True, text=True, check=True).stdout

    try:
        sha = git("log", "-1", "--format=%H").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if not sha:
        return None
    return sha + ("-dirty" if dirty else "")


def provenance(params: dict[str, Any] | None = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """A provenance record: params, seed, package versions, git commit, and ``extra``
    (for example ``model=model.identity``).

    The timestamp is kept out on purpose: outputs of an unchanged rerun must be
    byte-identical so that DVC sees nothing to do.
    """
    return {
        "ambiemo_version": ambiemo.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "seed": seed,
        "params": params or {},
        **extra,
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
