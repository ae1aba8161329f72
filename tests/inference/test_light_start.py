"""``ambiemo infer`` on a served route starts light: the whole command, run as a user runs it against a
fake OpenAI-compatible server, answers every utterance without importing the libraries that only the
native adapters, the statistics or the figures use. Each of them costs start-up (torch alone takes
seconds), and start-up is paid once per command, so it bounds what concurrency can gain on a short run
(``benchmarks/serving.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fake_api import chat_response, vllm_spec

pytestmark = pytest.mark.usefixtures("api_env")

# What a served route must not import. openai: the route talks plain HTTP (ambiemo.models.api.chat_http),
# and the SDK's import was a second of start-up; aiohttp came with it. rich, click, pygments: httpx's
# command-line client, which chat_http keeps out. And the native adapters' modules: load_model stops
# importing adapters once the route is registered.
NATIVE = ("ambiemo.models.hf", "ambiemo.models.upstream")
HEAVY = ("torch", "transformers", "accelerate", "matplotlib", "seaborn", "statsmodels", "scipy", "sklearn")
HEAVY += ("librosa", "papermill", "dvc", "openai", "aiohttp", "rich", "click", "pygments")

# Runs `python -m ambiemo ARGS` and writes, at its end, to the first argument: how many objects the
# collector no longer walks (gc.freeze), then the names of the modules loaded.
PROBE = """
import atexit, gc, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join([str(gc.get_freeze_count()), *sorted(sys.modules)])))
sys.argv[0] = "ambiemo"
runpy.run_module("ambiemo", run_name="__main__", alter_sys=True)
"""


def test_infer_on_a_served_route_imports_no_heavy_library(fake_api, manifest: Path, tmp_path: Path) -> None:
    answer = json.dumps({"neutral": 0.4, "happy": 0.3, "angry": 0.2, "sad": 0.1})
    api = fake_api(lambda i, path, body, headers: (200, chat_response([(answer, None)])))
    params = tmp_path / "params.yaml"
    doc = {"seed": 5, "paths": {"cache_dir": str(tmp_path / "cache")}, "models": {"served": vllm_spec(api.url)}}
    doc["models"]["served"]["logprobs"] = False
    params.write_text(yaml.safe_dump(doc))
    out, modules = tmp_path / "pred.parquet", tmp_path / "modules.txt"
    cmd = [sys.executable, "-c", PROBE, str(modules), "infer", "--model", "served", "--manifest", str(manifest)]
    cmd += ["--out", str(out), "--params", str(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)

    assert proc.returncode == 0, proc.stderr[-2000:]
    n = len(pd.read_parquet(manifest))
    assert len(pd.read_parquet(out)) == n and len(api.requests) == n  # the route really ran, over HTTP
    frozen, *names = modules.read_text().split()
    loaded = {name.split(".")[0] for name in names}
    assert "httpx" in loaded  # the probe sees what the command imported: the route's client
    assert sorted(loaded & set(HEAVY)) == []
    assert [name for name in names if name.startswith(NATIVE)] == []
    assert "HTTP Request" not in proc.stderr  # httpx's line per request stays out of the command's log
    assert int(frozen) > 0  # what the imports built is out of the collector's walks (ambiemo.cli.main)
