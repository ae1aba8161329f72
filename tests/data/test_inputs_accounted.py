"""Every input accounted for: a manifest column of a label outside the label set is refused, naming it;
missing audio is counted and named per clip whatever its row (``N of M clips missing: ...``), "moved or
not mounted" only when no clip is there, and reading a manifest (as ``score`` does) needs no audio;
``data prepare`` names a zero-sample clip with the other corrupt ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from ambiemo.cli import app
from ambiemo.core.tables import read_table, write_table
from ambiemo.data import DATASETS, Corpus, DataError, Rating, Utterance, prepare_dataset
from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import ManifestError, build_manifest, read_manifest, write_manifest
from ambiemo.inference.run import run_inference

FOUR = ("neutral", "happy", "angry", "sad")
N = 5


def make_manifest(folder: Path) -> Path:
    """Five clips under ``folder/audio``, their paths stored relative to that root."""
    root = folder / "audio"
    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i in range(N):
        sf.write(root / f"u{i}.wav", (0.1 * rng.standard_normal(4000)).astype("float32"), 16000)
    info = pd.DataFrame({"utt_id": [f"u{i}" for i in range(N)], "dataset": "inputs", "audio_path": "x"})
    info["audio_path"] = [f"u{i}.wav" for i in range(N)]
    votes = np.array([[3, 0, 0, 0], [1, 2, 0, 0], [0, 0, 2, 1], [1, 1, 1, 0], [0, 0, 0, 3]], dtype=float)
    ls = LabelSet("four", FOUR)
    df, amb = build_manifest(info, votes, votes.sum(axis=1).astype(int), ls, AmbiguityBins())
    out = folder / "manifest.parquet"
    return write_manifest(df, out, label_set=ls, ambiguity=amb, exclusions={}, audio_root=str(root))


@pytest.mark.parametrize("column", ["votes_fear", "p_fear"])
def test_a_column_of_a_label_outside_the_label_set_is_refused_naming_it(tmp_path, column):
    path = make_manifest(tmp_path)
    df, meta = read_table(path)
    df[column] = 1.0
    write_table(df, path, meta)
    with pytest.raises(ManifestError, match=rf"\['{column}'\] are for label\(s\) outside the label set 'four'"):
        read_manifest(path)


@pytest.mark.parametrize("row", [0, 2, 4])
def test_a_missing_clip_is_named_whatever_its_row_and_the_run_records_it_and_goes_on(tmp_path, row, caplog):
    path = make_manifest(tmp_path)
    (tmp_path / "audio" / f"u{row}.wav").unlink()
    manifest = read_manifest(path)  # reading needs no audio
    with caplog.at_level(logging.WARNING):
        assert manifest.require_audio() == [f"u{row}"]
    assert f"1 of {N} clips missing: u{row}" in caplog.text and "moved" not in caplog.text
    params = {"seed": 1, "paths": {"cache_dir": str(tmp_path / "cache")}, "inference": {"max_failure_share": 0.5}}
    df = run_inference(params, "fake", "baseline", path, tmp_path / "p.parquet")
    failures = df.attrs["meta"]["model_failures"]
    assert list(failures) == [f"u{row}"] and failures[f"u{row}"].startswith("audio: ")
    assert len(df) == N and df["parsed_ok"].sum() == N - 1


def test_moved_or_not_mounted_only_when_no_clip_is_there(tmp_path):
    path = make_manifest(tmp_path)
    for i in range(N - 1):
        (tmp_path / "audio" / f"u{i}.wav").unlink()
    assert read_manifest(path).require_audio() == [f"u{i}" for i in range(N - 1)]  # one left: not moved
    (tmp_path / "audio").rename(tmp_path / "elsewhere")
    manifest = read_manifest(path)  # what `score` does: no audio needed, no error
    assert manifest.missing_audio() == ([f"u{i}" for i in range(N)], N)
    with pytest.raises(ManifestError, match="does not exist; the corpus has moved or is not mounted"):
        manifest.require_audio()
    # A run of the first four rows, none of whose clips is there: named, not "moved" (u4 is there).
    moved = read_manifest(path, audio_root=tmp_path / "elsewhere")
    assert moved.require_audio(rows=N - 1) == [f"u{i}" for i in range(N - 1)]
    (tmp_path / "elsewhere" / f"u{N - 1}.wav").unlink()
    with pytest.raises(ManifestError, match=f"holds none of its {N} clips; the corpus has moved"):
        read_manifest(path, audio_root=tmp_path / "elsewhere").require_audio()


def test_data_stats_counts_missing_clips_at_any_row(tmp_path):
    path = make_manifest(tmp_path)
    (tmp_path / "audio" / "u0.wav").unlink()
    (tmp_path / "audio" / "u3.wav").unlink()
    result = CliRunner().invoke(app, ["data", "stats", str(path)])
    assert result.exit_code == 0, result.output
    assert f"audio: 2 of {N} clips missing: u0, u3" in result.output and "moved" not in result.output


def _clips_loader(clips: dict[str, Path]):
    def load(root: Path, spec) -> Corpus:
        utts = [Utterance(u, [Rating("r1", ("happy",)), Rating("r2", ("sad",))], str(p)) for u, p in clips.items()]
        return Corpus(utts, frozenset({"happy", "sad"}))

    return load


def test_prepare_names_a_zero_sample_clip_with_the_other_corrupt_ones(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    root.mkdir()
    sf.write(root / "good.wav", np.zeros(800, np.float32), 16000)
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16000)  # a valid header, no sample
    (root / "garbage.wav").write_bytes(b"not audio at all")
    clips = {name: root / f"{name}.wav" for name in ("good", "empty", "garbage")}
    monkeypatch.setitem(DATASETS._items, "zero-test", _clips_loader(clips))
    params = {
        "label_sets": {"two": {"labels": ["happy", "sad"]}},
        "datasets": {"zero": {"loader": "zero-test", "root": str(root), "label_set": "two"}},
    }
    with pytest.raises(DataError) as err:
        prepare_dataset("zero", params)
    message = str(err.value)
    assert "2 audio file(s) cannot be read" in message
    assert "empty (no samples" in message and "garbage (unreadable header" in message and "good" not in message
