"""The notebooks a reader opens: the prepare notebook, executed alone, shows the dataset's
ambiguity histogram inline (the figures notebook's images are checked after the pipeline test)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.e2e  # papermill runs the notebook in a kernel
def test_the_prepare_notebook_shows_the_ambiguity_histogram(tmp_path):
    papermill = pytest.importorskip("papermill")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["demo"]["root"] = str(tmp_path / "corpus")  # the demo corpus lands here, not in results/
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = tmp_path / "01_prepare.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "01_prepare.ipynb"),
        str(out),
        parameters={"dataset": "demo", "out_dir": str(tmp_path / "demo"), "params_path": str(tmp_path / "params.yaml")},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    nb = nbformat.read(out, as_version=4)
    images = [
        (i, o)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 1  # the histogram, as a PNG whatever backend the kernel uses
    cell = nb.cells[images[0][0]]
    assert "histplot" in cell.source and "entropy_bits" in cell.source
    assert "How ambiguous" in nb.cells[images[0][0] - 1].source  # under a sentence saying what it shows
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
