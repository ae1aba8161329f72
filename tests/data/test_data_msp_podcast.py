"""MSP-Podcast from small hand-written fixtures in the release formats.

tests/fixtures/msp-podcast: labels_consensus.csv + labels_detailed.csv + Transcripts/;
tests/fixtures/msp-podcast-v1: the older spelling labels_concensus.csv + labels_detailed.json,
with the same annotations (minus the segment that has no ratings).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from scipy.stats import entropy as scipy_entropy

from ambiemo.data import DataError, prepare_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LABELS = ["neutral", "happy", "angry", "sad"]
KEPT = ["MSP-PODCAST_0001_0008", "MSP-PODCAST_0003_0001", "MSP-PODCAST_0005_0001", "MSP-PODCAST_0006_0010"]


def params(root, label_set="four", **spec):
    return {
        "label_sets": {
            "four": {"labels": LABELS, "merge": {"excited": "happy"}},
            "crema6": {"labels": ["angry", "disgust", "fear", "happy", "neutral", "sad"]},
        },
        "datasets": {
            "msp-podcast": {
                "loader": "msp-podcast",
                "root": str(root),
                "label_set": label_set,
                "votes": "drop_utterance",
                "splits": ["Test1"],
                **spec,
            }
        },
        "ambiguity": {"method": "fixed", "bins": ["low", "medium", "high"], "edges_bits": [1.0, 1.5]},
    }


@pytest.mark.parametrize("release", ["msp-podcast", "msp-podcast-v1"])
def test_test1_hand_computed(release):
    m = prepare_dataset("msp-podcast", params(FIXTURES / release), allow_missing_audio=True)
    df = m.df.set_index("utt_id")
    assert df.index.tolist() == KEPT
    expected = {"split_not_selected": 2, "votes_outside_label_set": 2}  # Train + Test2; Contempt, Other-Concerned
    if release == "msp-podcast":
        expected["no_ratings"] = 1  # 0008_0003 has no detailed rows
    assert m.exclusions == expected
    assert "split_not_selected" not in m.meta["excluded_ids"]  # a count, not 100k ids
    assert m.meta["excluded_ids"]["votes_outside_label_set"] == ["MSP-PODCAST_0001_0019", "MSP-PODCAST_0004_0002"]
    assert m.meta["categories_outside_label_set"] == {"contempt": 1.0, "other": 2.0}
    v = df[[f"votes_{x}" for x in LABELS]]
    assert v.loc["MSP-PODCAST_0001_0008"].tolist() == [5, 0, 0, 0]
    assert v.loc["MSP-PODCAST_0003_0001"].tolist() == [2, 1, 0, 2]
    assert v.loc["MSP-PODCAST_0005_0001"].tolist() == [1, 1, 1, 4]
    for utt in KEPT:
        assert df.loc[utt, "entropy_bits"] == pytest.approx(scipy_entropy(v.loc[utt].to_numpy(float), base=2))
    assert df["ambiguity"].tolist() == ["clear", "high", "high", "low"]  # 0, 1.522, 1.664, 0.971 bits
    assert df["majority"].tolist() == ["neutral", "", "sad", "neutral"]
    assert df.loc["MSP-PODCAST_0006_0010", ["speaker", "gender"]].tolist() == ["", ""]  # "Unknown" in the table
    assert df.loc["MSP-PODCAST_0003_0001", ["speaker", "gender", "split", "consensus"]].tolist() == [
        "58",
        "male",
        "Test1",
        "X",
    ]
    if release == "msp-podcast":
        assert df.loc["MSP-PODCAST_0005_0001", "transcript"] == "No, I don't think so, honestly."


def test_all_splits_and_six_labels():
    m = prepare_dataset("msp-podcast", params(FIXTURES / "msp-podcast", splits=None), allow_missing_audio=True)
    assert "MSP-PODCAST_0002_0033" in set(m.df["utt_id"]) and "split_not_selected" not in m.exclusions
    assert sorted(set(m.df["split"])) == ["Test1", "Train"]  # Test2's only segment votes Surprise
    six = prepare_dataset(
        "msp-podcast",
        params(FIXTURES / "msp-podcast", label_set="crema6", votes="drop_votes"),
        allow_missing_audio=True,
    )
    row = six.df.set_index("utt_id").loc["MSP-PODCAST_0001_0019"]
    assert [row[f"votes_{x}"] for x in six.labels] == [3, 0, 0, 0, 1, 0]  # Contempt dropped
    assert six.meta["dropped_votes"] == {"outside_label_set": 3.0}  # 1 Contempt + 2 Other


def test_audio_under_audios(tmp_path):
    import numpy as np
    import soundfile as sf

    root = tmp_path / "MSP-Podcast"
    shutil.copytree(FIXTURES / "msp-podcast", root)
    (root / "Audios").mkdir()
    for utt in KEPT:
        sf.write(str(root / "Audios" / f"{utt}.wav"), np.zeros(16000, np.float32), 16000)
    m = prepare_dataset("msp-podcast", params(root))
    assert m.df["duration_s"].tolist() == [1.0] * 4
    assert all(p.endswith(f"Audios/{u}.wav") for p, u in zip(m.df["audio_path"], KEPT, strict=True))


def _copy(tmp_path, release="msp-podcast"):
    root = tmp_path / release
    shutil.copytree(FIXTURES / release, root)
    return root


def test_unknown_label_names_file_and_line(tmp_path):
    root = _copy(tmp_path)
    path = root / "Labels" / "labels_detailed.csv"
    lines = path.read_text().splitlines()
    lines[7] = lines[7].replace(",Angry,", ",Bored,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels_detailed.csv:8: unknown MSP-Podcast emotion 'Bored'"):
        prepare_dataset("msp-podcast", params(root), allow_missing_audio=True)


def test_unknown_label_in_json_names_segment_and_worker(tmp_path):
    root = _copy(tmp_path, "msp-podcast-v1")
    path = root / "Labels" / "labels_detailed.json"
    path.write_text(path.read_text().replace('"Contempt"', '"Bored"', 1))
    with pytest.raises(DataError, match=r"labels_detailed.json: MSP-PODCAST_0001_0019.wav WORKER\d+: unknown"):
        prepare_dataset("msp-podcast", params(root), allow_missing_audio=True)


def test_bad_params_and_layout(tmp_path):
    with pytest.raises(
        DataError, match=r"splits has \['Test9'\], not a Split_Set .*present: \['Test1', 'Test2', 'Train'\]"
    ):
        prepare_dataset("msp-podcast", params(FIXTURES / "msp-podcast", splits=["Test9"]), allow_missing_audio=True)
    with pytest.raises(DataError, match="no labels_consensus.csv or labels_concensus.csv in Labels/, labels/, label/"):
        prepare_dataset("msp-podcast", params(tmp_path), allow_missing_audio=True)
    root = _copy(tmp_path)
    (root / "Labels" / "labels_detailed.csv").unlink()
    with pytest.raises(DataError, match="no per-annotator labels"):
        prepare_dataset("msp-podcast", params(root), allow_missing_audio=True)
