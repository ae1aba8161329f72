"""The commit an output records is the pipeline's: committing dvc.lock, the docs or a note after
`make repro` does not change it, so the outputs of that run and of a clean clone's run are
byte-identical (docs/reliability.md)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ambiemo.core.provenance import git_commit


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    for rel, text in {"ambiemo/code.py": "x = 1\n", "params.yaml": "seed: 0\n", "docs/page.md": "a\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "code")
    return tmp_path


def test_the_lock_and_the_docs_neither_dirty_nor_move_the_recorded_commit(repo):
    code = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == code
    (repo / "dvc.lock").write_text("stages: {}\n")  # `make repro` writes the lock ...
    (repo / "docs" / "page.md").write_text("b\n")  # ... and a note is edited
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "lock and docs")
    assert _git(repo, "rev-parse", "HEAD") != code
    assert git_commit(repo) == code  # the clean clone records the pipeline's commit too
    (repo / "dvc.lock").write_text("stages: {a: 1}\n")  # a rerun rewrites it between stages
    assert git_commit(repo) == code
    assert git_commit(repo / "docs") == code  # from any folder of the tree


def test_a_changed_pipeline_file_is_dirty_and_a_new_commit(repo):
    (repo / "params.yaml").write_text("seed: 1\n")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD") + "-dirty"
    _git(repo, "commit", "-qam", "params")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")
