"""The commit an output records is the code's: committing dvc.lock after `make repro` does not change it,
so the outputs of that run and of a clean clone's run are byte-identical (docs/reliability.md)."""

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
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "note.txt").write_text("a\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "code")
    return tmp_path


def test_the_lock_neither_dirties_nor_moves_the_recorded_commit(repo):
    code = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == code
    (repo / "dvc.lock").write_text("stages: {}\n")  # `make repro` writes the lock
    _git(repo, "add", "dvc.lock")
    _git(repo, "commit", "-qm", "lock")
    assert _git(repo, "rev-parse", "HEAD") != code
    assert git_commit(repo) == code  # the clean clone records the code's commit too
    (repo / "dvc.lock").write_text("stages: {a: 1}\n")  # a rerun rewrites it before the next stage
    assert git_commit(repo) == code
    assert git_commit(repo / "sub") == code  # from any folder of the tree


def test_a_changed_tracked_file_is_dirty(repo):
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD") + "-dirty"
    (repo / "new.py").write_text("untracked\n")  # untracked files do not count, as before
    _git(repo, "checkout", "code.py")
    assert git_commit(repo) == _git(repo, "rev-parse", "HEAD")
