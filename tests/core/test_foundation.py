"""The repository's skeleton: registry, tables, params, profiles, CLI, notebooks, pipeline wiring."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import ambiemo
from ambiemo.cli import app
from ambiemo.core.config import load_params, section
from ambiemo.core.provenance import provenance
from ambiemo.core.registry import Registry
from ambiemo.core.tables import read_meta, read_table, write_table

ROOT = Path(__file__).resolve().parents[2]


def test_registry_registers_and_names_unknown_entries():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    assert reg.get("a") == 1 and "a" in reg and reg.names() == ["a"]
    with pytest.raises(KeyError, match="unknown widget 'b'; registered: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_tables_round_trip_data_and_metadata(tmp_path):
    df = pd.DataFrame({"utt_id": ["x", "y"], "p_sad": [0.25, 0.75]})
    meta = {"label_set": {"name": "four", "labels": ["neutral", "happy", "angry", "sad"]}, "n": 2}
    path = write_table(df, tmp_path / "sub" / "t.parquet", meta)
    back, back_meta = read_table(path)
    pd.testing.assert_frame_equal(back, df)
    assert back_meta == meta and read_meta(path) == meta
    assert not list((tmp_path / "sub").glob(".*tmp")), "atomic write left a temporary file"


def test_tables_are_byte_identical_on_rewrite(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0]})
    write_table(df, tmp_path / "1.parquet", {"k": 1})
    write_table(df, tmp_path / "2.parquet", {"k": 1})
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()


def test_read_table_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_table(tmp_path / "missing.parquet")


def test_provenance_records_what_reproduces_a_result():
    rec = provenance({"x": 1}, seed=7, model={"key": "m", "revision": "abc"})
    assert rec["seed"] == 7 and rec["params"] == {"x": 1} and rec["model"]["revision"] == "abc"
    assert rec["ambiemo_version"] == ambiemo.__version__
    assert rec["packages"]["numpy"] and "torch" in rec["packages"]
    assert rec["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", rec["git_commit"])
    json.dumps(rec)  # must be serialisable into parquet metadata


def test_section_names_the_missing_key():
    with pytest.raises(KeyError, match="models.nope"):
        section({"models": {}}, "models", "nope")


def test_params_profiles_and_run_block_agree():
    params = load_params(ROOT / "params.yaml")
    run = params["run"]
    profile = params["profiles"][run["profile"]]
    for key, value in profile.items():
        assert run[key] == value, f"run.{key} differs from profiles.{run['profile']}.{key}"


def test_profile_use_rewrites_only_the_run_block(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    before = yaml.safe_load(p.read_text())
    result = CliRunner().invoke(app, ["profile", "use", "paper", "--params", str(p)])
    assert result.exit_code == 0, result.output
    after = yaml.safe_load(p.read_text())
    assert after["run"] == {"profile": "paper", **before["profiles"]["paper"]}
    assert {k: v for k, v in after.items() if k != "run"} == {k: v for k, v in before.items() if k != "run"}
    # and back again gives the original file, comments included
    CliRunner().invoke(app, ["profile", "use", "demo", "--params", str(p)])
    assert p.read_text() == (ROOT / "params.yaml").read_text()


def test_profile_use_rejects_an_unknown_profile(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    result = CliRunner().invoke(app, ["profile", "use", "nope", "--params", str(p)])
    assert result.exit_code != 0 and "no profile 'nope'" in result.output


@pytest.mark.e2e
def test_console_command_prints_its_version():
    out = subprocess.run(
        [sys.executable, "-m", "ambiemo", "--version"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == f"ambiemo {ambiemo.__version__}"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs_and_have_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _dvc_stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_every_stage_runs_an_existing_notebook_or_script():
    for name, stage in _dvc_stages().items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        if words[0] == "ambiemo":  # the package's own command line (the plan stage)
            from typer.main import get_command

            from ambiemo.cli import app

            assert words[1] in get_command(app).commands, f"stage {name} runs `ambiemo {words[1]}`: no such command"
            continue
        runner = next(i for i, w in enumerate(words) if w in ("papermill", "bash"))
        target = words[runner + 1]
        assert (ROOT / target).exists(), f"stage {name} runs {target}, which does not exist"


def test_every_stage_param_exists_in_params_yaml():
    params = load_params(ROOT / "params.yaml")
    items = {"item": params["run"]["datasets"][0]}
    for stage in _dvc_stages().values():
        body = stage.get("do", stage)
        for key in body.get("params", []):
            key = key.replace("${item}", items["item"])
            key = key.replace("${item.model}", params["run"]["models"][0])
            section(params, *key.split("."))


def test_isin_is_pandas_isin_on_arrow_strings_with_repeats_and_nulls():
    from ambiemo.core.tables import isin

    rng = np.random.default_rng(3)
    values = pd.Series([f"u{i}" for i in rng.integers(0, 400, 1000)] + [None], dtype="str")
    among = pd.Series([f"u{i}" for i in rng.integers(0, 400, 300)] + [None, "u1", "u1"], dtype="str")
    for a, b in ((values, among), (values, among.dropna()), (values, among[:0]), (values[:0], among)):
        np.testing.assert_array_equal(isin(a, b), a.isin(b).to_numpy())
    np.testing.assert_array_equal(isin(values, list(among.dropna())), values.isin(list(among.dropna())).to_numpy())
