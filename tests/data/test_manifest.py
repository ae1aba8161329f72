"""The manifest schema: written, read back, checked; bad manifests are refused with their ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ambiemo.core.tables import read_table, write_table
from ambiemo.data.labels import AmbiguityBins, LabelSet
from ambiemo.data.manifest import ManifestError, build_manifest, manifest_columns, read_manifest, write_manifest

FOUR = LabelSet("four", ("neutral", "happy", "angry", "sad"))


def _manifest():
    info = pd.DataFrame(
        {
            "utt_id": ["u1", "u2", "u3"],
            "dataset": "toy",
            "speaker": ["s1", "s1", "s2"],
            "intended": ["happy", "sad", ""],
            "extra_col": [1, 2, 3],
        }
    )
    votes = np.array([[0, 3, 0, 0], [1, 0, 1, 1], [0.5, 1.5, 1, 0]], float)
    return build_manifest(info, votes, np.array([3, 3, 3]), FOUR, AmbiguityBins())


def _write(tmp_path, df, amb, name="m.parquet"):
    return write_manifest(
        df,
        tmp_path / name,
        label_set=FOUR,
        ambiguity=amb,
        exclusions={"no_ratings": 2},
        provenance={"seed": 1},
        dataset="toy",
    )


def test_build_derives_every_column():
    df, amb = _manifest()
    assert list(df.columns) == manifest_columns(FOUR.labels) + ["extra_col"]
    np.testing.assert_allclose(
        df[["p_neutral", "p_happy", "p_angry", "p_sad"]].to_numpy(),
        [[0, 1, 0, 0], [1 / 3, 0, 1 / 3, 1 / 3], [1 / 6, 1 / 2, 1 / 3, 0]],
    )
    assert df["majority"].tolist() == ["happy", "", "happy"]
    assert df["majority_tie"].tolist() == [False, True, False]
    # hand-computed: log2(3) = 1.585; -(1/6 log 1/6 + 1/2 log 1/2 + 1/3 log 1/3) = 1.459
    np.testing.assert_allclose(df["entropy_bits"], [0.0, 1.584963, 1.459148], atol=1e-6)
    assert df["ambiguity"].tolist() == ["clear", "high", "medium"]
    assert df["n_distinct"].tolist() == [1, 3, 3]
    np.testing.assert_allclose(df["max_share"], [1.0, 1 / 3, 0.5])
    assert df["audio_path"].tolist() == ["", "", ""] and df["duration_s"].isna().all()
    assert amb == {"method": "fixed", "edges": [1.0, 1.5], "bins": ["clear", "low", "medium", "high"]}


def test_round_trip_and_byte_identical_rewrite(tmp_path):
    df, amb = _manifest()
    path = _write(tmp_path, df, amb)
    m = read_manifest(path)
    assert m.labels == FOUR.labels and m.label_set == "four" and len(m) == 3
    assert m.exclusions == {"no_ratings": 2} and m.meta["dataset"] == "toy"
    np.testing.assert_allclose(m.distributions(), df[[f"p_{x}" for x in FOUR.labels]].to_numpy())
    np.testing.assert_allclose(m.votes().sum(axis=1), 3.0)
    assert m.ambiguity_order() == ["clear", "low", "medium", "high"]
    again = _write(tmp_path, m.df, amb, name="again.parquet")
    assert path.read_bytes() == again.read_bytes()
    assert pq.read_schema(path).field("majority_tie").type == "bool"


def _corrupt(tmp_path, mutate, meta_mutate=None):
    df, amb = _manifest()
    path = _write(tmp_path, df, amb)
    df, meta = read_table(path)
    mutate(df)
    if meta_mutate:
        meta_mutate(meta)
    write_table(df, path, meta)  # bypasses the checks, as a hand-edited file would
    return path


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.__setitem__("utt_id", ["u1", "u1", "u3"]), r"2 utterance\(s\) share a utt_id: \['u1', 'u1'\]"),
        (lambda d: d.loc.__setitem__((1, "p_sad"), 0.9), r"not summing to 1: \['u2'\]"),
        (lambda d: d.loc.__setitem__((0, "votes_happy"), 0.0), r"have no votes: \['u1'\]"),
        (lambda d: d.loc.__setitem__((2, "majority"), "bored"), r"majority outside the label set .*\['u3'\]"),
        (lambda d: d.loc.__setitem__((2, "ambiguity"), "clear"), r"`clear` without zero entropy .*\['u3'\]"),
        (lambda d: d.drop(columns=["p_sad"], inplace=True), r"missing column\(s\) \['p_sad'\]"),
    ],
)
def test_read_refuses_broken_manifests(tmp_path, mutate, match):
    with pytest.raises(ManifestError, match=match):
        read_manifest(_corrupt(tmp_path, mutate))


def test_read_refuses_missing_metadata(tmp_path):
    path = _corrupt(tmp_path, lambda d: None, lambda m: m.pop("label_set"))
    with pytest.raises(ManifestError, match="no label_set"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError, match="ambiemo data prepare"):
        read_manifest(tmp_path / "absent.parquet")


def test_write_refuses_invalid_rows(tmp_path):
    df, amb = _manifest()
    df.loc[0, "p_happy"] = 0.5
    with pytest.raises(ManifestError, match="u1"):
        _write(tmp_path, df, amb)
    assert not (tmp_path / "m.parquet").exists()


def test_manifests_with_absolute_audio_paths_read_as_before(tmp_path):
    """A manifest from before relative paths (absolute paths, no audio_root) is not rewritten."""
    from ambiemo.data.manifest import resolve_audio

    df = pd.DataFrame({"utt_id": ["a", "b"], "audio_path": [str(tmp_path / "a.wav"), ""]})
    assert resolve_audio(df, {}, where="m").equals(df)
    with pytest.raises(ManifestError, match="m: audio paths are relative but the metadata names no audio_root"):
        resolve_audio(df.assign(audio_path=["a.wav", ""]), {}, where="m")
