"""`ambiemo models list` groups models by family and shows each family's capacity ladder."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from ambiemo.cli.models import app

PARAMS = {
    "run": {"datasets": [], "models": ["b-big"], "strategies": []},
    "models": {
        "b-big": {"adapter": "fake", "family": "bee", "params_b": 24.0},
        "loner": {"adapter": "fake", "params_b": 1.0},
        "a-mid": {"adapter": "fake", "family": "ant", "params_b": 7.0},
        "b-small": {"adapter": "fake", "family": "bee", "params_b": 3.0},
        "a-moe": {"adapter": "fake", "family": "ant", "params_b": 30.5, "params_active_b": 3.3},
        "a-api": {"adapter": "fake", "family": "ant", "params_b": None},
        "a-twin": {"adapter": "fake", "family": "ant", "params_b": 7.0},
    },
}


def _run(tmp_path, *args):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    result = CliRunner().invoke(app, ["list", "--params", str(path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_listing_groups_by_family_in_capacity_order(tmp_path):
    lines = [line for line in _run(tmp_path).splitlines() if line.strip()]
    ladders = [line for line in lines if ":" in line and not line.startswith(" ")]
    # Families in order of first appearance; the model without one last; sizes increasing, ties in params order.
    assert ladders == [
        "bee: b-small 3B < b-big 24B",
        "ant: a-mid 7B = a-twin 7B < a-moe 30.5B, a-api (undisclosed)",
    ]
    keys = [
        line.split()[1] if line.startswith("*") else line.split()[0] for line in lines if line.startswith(("*", " "))
    ]
    assert keys[1:] == ["b-small", "b-big", "a-mid", "a-twin", "a-moe", "a-api", "loner"]  # keys[0]: the header
    assert "(no family)" in lines
    moe = next(line for line in lines if line.split()[0] == "a-moe")
    assert "30.5B (3.3B active)" in moe
    assert next(line for line in lines if "b-big" in line and line.startswith("*"))


def test_json_rows_carry_family_and_active_parameters(tmp_path):
    rows = {r["key"]: r for r in json.loads(_run(tmp_path, "--json"))}
    assert rows["a-moe"]["family"] == "ant" and rows["a-moe"]["params_active_b"] == 3.3
    assert rows["loner"]["family"] is None
