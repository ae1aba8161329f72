"""The door: params.yaml is refused before any work when it is ambiguous, mistyped or out of bounds,
in one paragraph naming the file, line and key, with exit 2 and no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ambiemo.strategies  # noqa: F401  (registers the check of the strategies' sections, as plan and infer do)
from ambiemo.cli import app
from ambiemo.core.config import ParamsFileError, load_params
from ambiemo.core.validation import ParamsError

ROOT = Path(__file__).resolve().parents[2]
PARAMS = (ROOT / "params.yaml").read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the nth line of ``text`` that starts with ``needle``."""
    found = [i + 1 for i, line in enumerate(text.splitlines()) if line.startswith(needle)]
    return found[nth - 1]


def test_a_second_block_of_the_same_section_is_refused_naming_both_lines(tmp_path):
    text = PARAMS + "inference: {max_failure_share: 1.0}\n"
    path = write(tmp_path, text)
    first, second = line_of(text, "inference:"), line_of(text, "inference:", 2)
    with pytest.raises(ParamsFileError) as e:
        load_params(path)
    assert f"lines {first} and {second}" in str(e.value) and "`inference`" in str(e.value)
    assert str(e.value).startswith(f"{path}:{second}:")


def test_a_duplicate_seed_is_refused(tmp_path):
    text = PARAMS + "seed: 1\n"
    with pytest.raises(ParamsFileError, match=r"`seed` is given twice \(lines 7 and \d+\)"):
        load_params(write(tmp_path, text))


def test_merge_keys_of_a_profile_are_not_duplicates():
    assert "<<: *demo" in PARAMS  # the run block merges its profile: not a repeated key
    assert load_params(ROOT / "params.yaml")["run"]["profile"] == "demo"


def test_a_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path):
    path = write(tmp_path, "seed: [1, 2\nrun: 3\n")
    with pytest.raises(ParamsFileError) as e:
        load_params(path)
    assert re.fullmatch(rf"{re.escape(str(path))}:2:4: not valid YAML: .+", str(e.value)), str(e.value)


@pytest.mark.parametrize(
    "old,new,key",
    [
        ("seed: 20260203", "seed: -3", "seed"),
        ("seed: 20260203", 'seed: "5"', "seed"),
        ("  batch_size: 8 ", '  batch_size: "8" ', "strategies.batch_size"),
        ("  profile: demo\n", "  profile: demo\n  limit: true\n", "run.limit"),
        ("  profile: demo\n", "  profile: demo\n  limit: -1\n", "run.limit"),
    ],
)
def test_no_coercion_and_no_negative_seed_or_limit(tmp_path, old, new, key):
    assert old in PARAMS, old
    text = PARAMS.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        load_params(path)
    assert key in dict(e.value.problems), e.value.problems
    wanted = key.split(".")[-1] + ":"
    line = next(
        i + 1 for i, ln in enumerate(text.splitlines()) if ln.strip().startswith(wanted) and new.strip() in text
    )
    assert f"`{key}` (line " in str(e.value) and "\n" not in str(e.value)
    assert line > 0


def test_candidates_beyond_the_route_bound_are_refused_unless_raised_on_purpose(tmp_path):
    text = PARAMS.replace("  <<: *demo\n  profile: demo\n", "  <<: *demo\n  profile: demo\n  strategies: [bon]\n")
    budgets = re.search(r"^  bon:\n    budgets: (\{demo: \[3\])", text, re.M)
    assert budgets, "the bon budgets line moved: update this test"
    huge = text.replace(budgets.group(0), "  bon:\n    budgets: {demo: [10000]", 1)
    with pytest.raises(ParamsError) as e:
        load_params(write(tmp_path, huge))
    problems = dict(e.value.problems)
    assert "10000 candidates" in problems["strategies.bon.budgets"]
    assert "the bound on a local route is 64" in problems["strategies.bon.budgets"]
    raised = huge.replace("strategies:\n", "strategies:\n  max_candidates: {local: 10000}\n", 1)
    assert load_params(write(tmp_path, raised))["strategies"]["max_candidates"]["local"] == 10000


def test_the_commands_exit_2_with_one_paragraph(tmp_path):
    path = write(tmp_path, PARAMS + "seed: 1\n")
    result = CliRunner().invoke(app, ["plan", "--params", str(path)])
    assert result.exit_code == 2
    out = subprocess.run(
        [sys.executable, "-m", "ambiemo", "strategies", "list", "--params", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "is given twice" in out.stderr
