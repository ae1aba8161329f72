"""``write_score_run`` writes, one dataset × model at a time, the file ``score_run(...).write`` writes."""

from __future__ import annotations

import copy
import stat
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synthetic import LABELS, PARAMS, candidates_table, manifest_df, predictions_df  # noqa: E402

from ambiemo import scoring  # noqa: E402
from ambiemo.core.layout import Layout  # noqa: E402
from ambiemo.core.tables import read_meta  # noqa: E402
from ambiemo.data import manifest as mm  # noqa: E402
from ambiemo.data.labels import LabelSet  # noqa: E402
from ambiemo.inference.predictions import write_predictions  # noqa: E402
from ambiemo.scoring.stream import write_score_run  # noqa: E402

BINS = {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]}


def test_streamed_scores_are_the_whole_runs_file(tmp_path):
    params = copy.deepcopy(PARAMS)
    params.update(paths={"results": str(tmp_path / "results")}, seed=3)
    models, strategies = ["small", "large", "tiny"], ["baseline", "bon", "w-bon"]
    params["run"] = {"datasets": ["demo", "other"], "models": models, "strategies": strategies}
    params["models"]["tiny"] = {"params_b": 0.1}
    layout = Layout.from_params(params)
    for d, dataset in enumerate(params["run"]["datasets"]):
        man = manifest_df(n=14 + 3 * d, n_speakers=3, seed=d, dataset=dataset)
        mm.write_manifest(
            man, layout.manifest(dataset), label_set=LabelSet("four", LABELS), ambiguity=BINS, exclusions={}
        )
        for i, (model, strategy) in enumerate((m, s) for m in models for s in strategies):
            df = predictions_df(man, model, strategy, budget=1 + i % 2, seed=10 * d + i, fail_rate=0.2)
            meta = {}
            if (model, strategy) == ("tiny", "w-bon"):
                meta["skipped"] = "tiny cannot run w-bon"
                df = df.iloc[:0]
            if (dataset, model, strategy) == ("other", "large", "bon"):
                df = df.iloc[:0]  # a run that wrote nothing
            prov = {"model": model, "strategy": {"name": strategy, "budgets": [1 + i % 2]}}
            kw = {"labels": LABELS, "label_set": "four", "provenance": prov}
            write_predictions(
                df, layout.predictions(dataset, model, strategy), candidates=candidates_table(df), **kw, **meta
            )
    whole = scoring.score_run(params)
    reference_path = whole.write(params, tmp_path / "whole.parquet")
    written = write_score_run(params, tmp_path / "streamed.parquet")
    a, b = pd.read_parquet(reference_path), pd.read_parquet(written.path)
    pd.testing.assert_frame_equal(b, a)
    assert read_meta(written.path) == read_meta(reference_path)
    assert pq.read_schema(written.path).names == pq.read_schema(reference_path).names
    assert written.n_cells == whole.n_cells and written.n_rows == len(whole.scores)
    pd.testing.assert_frame_equal(written.unanswered, whole.unanswered)
    assert not list(tmp_path.glob(".streamed.parquet*"))  # the parts are gone
    # the joined file gets the mode the whole run's file (and any plain open) gets, not mkstemp's 0600
    assert stat.S_IMODE(written.path.stat().st_mode) == stat.S_IMODE(reference_path.stat().st_mode)
    plain = tmp_path / "plain"
    plain.write_text("")
    assert stat.S_IMODE(written.path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_an_input_is_hashed_once_per_version(tmp_path, monkeypatch):
    """The stages record each input's SHA-256 in every table they write; a file read again for each
    table is read once, and read again once it changes."""
    import hashlib

    from ambiemo.scoring import results

    path = tmp_path / "scores.parquet"
    path.write_bytes(b"first version")
    opened = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k))
    first = [results.file_hashes([path])[str(path)] for _ in range(3)]
    assert first == [hashlib.sha256(b"first version").hexdigest()] * 3 and len(opened) == 1
    path.write_bytes(b"second, longer version")
    assert results.file_hashes([path])[str(path)] == hashlib.sha256(b"second, longer version").hexdigest()
    assert results.file_hashes([tmp_path / "absent"]) == {str(tmp_path / "absent"): None}
