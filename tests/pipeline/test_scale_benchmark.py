"""``benchmarks/scale.py`` (``make bench``) runs end to end on a tiny study and writes the table the
docs quote: a smoke test, so that the benchmark cannot rot while the stages it measures move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scale_benchmark_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--scale", "0.0003", "--models", "1"]
    subprocess.run([*cmd, "--out", str(out)], check=True, env=env, cwd=tmp_path, timeout=900, capture_output=True)
    result = json.loads(out.read_text())
    assert set(result["stages"]) == {"score", "aggregate", "stats"}
    for table in (result["stages"], result["small"]):
        for stage in table.values():
            assert stage["rows"] > 0 and stage["wall_s"] > 0 and 0 < stage["peak_gb"] < 24
    # every readout of the ladder profile (31), one model, three corpora of at least 8 utterances each
    assert result["stages"]["score"]["rows"] >= result["small"]["score"]["rows"] == 3 * 8 * 31
    assert result["growth_10x"] > 0 and result["models"] == 1
