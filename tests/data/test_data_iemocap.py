"""IEMOCAP from a small hand-written fixture in the official EmoEvaluation format.

tests/fixtures/iemocap holds two dialogs: multi-category raters, actors' self-evaluations,
Other, merged Excited, ties, a four-way split and a turn with no categorical rating. The
expected votes and entropies below are worked out by hand from the fixture text.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambiemo.data import DataError, prepare_dataset
from ambiemo.data.iemocap import parse_category, parse_evaluation

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "iemocap"
LABELS = ["neutral", "happy", "angry", "sad"]
KEPT = [
    "Ses01F_impro01_F000",
    "Ses01F_impro01_F001",
    "Ses01F_impro01_F003",
    "Ses01F_impro01_M001",
    "Ses01F_impro01_M002",
    "Ses02M_script01_1_M000",
]


def params(root=FIXTURE, **spec):
    return {
        "label_sets": {"four": {"labels": LABELS, "merge": {"excited": "happy"}}},
        "datasets": {
            "iemocap": {
                "loader": "iemocap",
                "root": str(root),
                "label_set": "four",
                "votes": "drop_utterance",
                "multi_label": "split",
                "self_evaluations": False,
                **spec,
            }
        },
        "ambiguity": {"method": "fixed", "bins": ["low", "medium", "high"], "edges_bits": [1.0, 1.5]},
    }


def votes(m, utt):
    row = m.df.set_index("utt_id").loc[utt]
    return [row[f"votes_{x}"] for x in m.labels]


def test_default_policy_hand_computed():
    m = prepare_dataset("iemocap", params(), allow_missing_audio=True)
    df = m.df.set_index("utt_id")
    assert df.index.tolist() == KEPT
    assert m.exclusions == {"no_ratings": 1, "votes_outside_label_set": 2}
    assert m.meta["excluded_ids"] == {
        "no_ratings": ["Ses02M_script01_1_F000"],
        "votes_outside_label_set": ["Ses01F_impro01_F002", "Ses01F_impro01_M000"],
    }
    assert m.meta["dropped_votes"] == {"self_evaluations": 3.0}  # C-F1, C-M1, C-M2
    assert m.meta["categories_outside_label_set"] == {"frustrated": 1.5, "other": 1.0}
    assert votes(m, "Ses01F_impro01_F000") == [3, 0, 0, 0]  # the actor's "Sadness" ignored
    assert votes(m, "Ses01F_impro01_F001") == [1, 2, 0, 0]  # Excited merged into happy
    assert votes(m, "Ses01F_impro01_M002") == [1.5, 0, 0, 1.5]  # "Neutral; Sadness" split
    assert votes(m, "Ses02M_script01_1_M000") == [0, 3, 0, 0]
    assert df["entropy_bits"].round(6).to_dict() == {
        "Ses01F_impro01_F000": 0.0,
        "Ses01F_impro01_F001": 0.918296,
        "Ses01F_impro01_F003": 2.0,
        "Ses01F_impro01_M001": round(math.log2(3), 6),
        "Ses01F_impro01_M002": 1.0,
        "Ses02M_script01_1_M000": 0.0,
    }
    assert df["ambiguity"].tolist() == ["clear", "low", "high", "high", "low", "clear"]
    assert df["majority"].tolist() == ["neutral", "happy", "", "", "", "happy"]
    assert df.loc["Ses01F_impro01_M002", "n_raters"] == 3 and df.loc["Ses01F_impro01_F003", "n_raters"] == 4
    assert df.loc["Ses01F_impro01_M001", ["speaker", "gender", "split"]].tolist() == ["Ses01M", "male", "Session1"]
    assert df.loc["Ses01F_impro01_F000", "transcript"] == "Excuse me."
    assert df.loc["Ses02M_script01_1_M000", "transcript"] == ""  # no transcriptions file
    assert df.loc["Ses01F_impro01_M001", "consensus"] == "xxx" and (df["intended"] == "").all()


def test_self_evaluations_count_when_asked():
    m = prepare_dataset("iemocap", params(self_evaluations=True), allow_missing_audio=True)
    assert votes(m, "Ses01F_impro01_F000") == [3, 0, 0, 1]
    assert votes(m, "Ses02M_script01_1_M000") == [0, 4, 0, 0]
    assert "self_evaluations" not in m.meta["dropped_votes"]


def test_drop_votes_policy():
    m = prepare_dataset("iemocap", params(votes="drop_votes"), allow_missing_audio=True)
    assert votes(m, "Ses01F_impro01_M000") == [0, 0, 1.5, 0]  # E1 keeps its half Anger; E3 (Frustration) drops out
    assert m.df.set_index("utt_id").loc["Ses01F_impro01_M000", "n_raters"] == 2
    assert votes(m, "Ses01F_impro01_F002") == [1, 0, 0, 1]
    assert m.meta["dropped_votes"] == {"outside_label_set": 2.5, "self_evaluations": 3.0}
    assert m.exclusions == {"no_ratings": 1}


def test_other_policy_and_first_category_rule():
    m = prepare_dataset("iemocap", params(votes="other"), allow_missing_audio=True)
    assert m.labels == ("neutral", "happy", "angry", "sad", "other") and m.label_set == "four+other"
    assert votes(m, "Ses01F_impro01_M000") == [0, 0, 1.5, 0, 1.5]
    first = prepare_dataset("iemocap", params(multi_label="first"), allow_missing_audio=True)
    assert votes(first, "Ses01F_impro01_M002") == [2, 0, 0, 1]
    assert first.df.set_index("utt_id").loc["Ses01F_impro01_M002", "majority"] == "neutral"


def test_audio_paths_follow_the_official_layout(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(FIXTURE, root)
    for utt in KEPT:
        session = f"Session{int(utt[3:5])}"
        wav = root / session / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav), np.zeros(4000, np.float32), 16000)
    m = prepare_dataset("iemocap", params(root))
    assert m.df["duration_s"].tolist() == [0.25] * 6
    assert m.df["audio_path"].iloc[0].endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    (root / "Session2" / "sentences" / "wav" / "Ses02M_script01_1" / "Ses02M_script01_1_M000.wav").unlink()
    with pytest.raises(DataError, match=r"audio missing for 1 of 6 .*Ses02M_script01_1_M000"):
        prepare_dataset("iemocap", params(root))


def _broken(tmp_path, old, new):
    root = tmp_path / "iemocap"
    shutil.copytree(FIXTURE, root)
    path = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return root


@pytest.mark.parametrize(
    "old, new, match",
    [
        (
            "C-E3:\tNeutral;\t()",
            "C-E3:\tBoredom;\t()",
            r"Ses01F_impro01.txt:5: unknown IEMOCAP category 'Boredom'; known: \['Anger', ",
        ),
        (
            "[6.2901 - 8.2357]\tSes01F_impro01_F000",
            "[6.2901 8.2357]\tSes01F_impro01_F000",
            r"Ses01F_impro01.txt:3: malformed turn header",
        ),
        ("C-E2:\tNeutral;\t()", "C-E2: Neutral;", r"Ses01F_impro01.txt:4: malformed categorical line"),
        ("A-E3:\tval 3", "B-E3:\tval 3", r"Ses01F_impro01.txt:8: unexpected line"),
        ("Ses01F_impro01_F001\thap", "Ses01F_impro01_F000\thap", r"duplicate utterance id\(s\): Ses01F_impro01_F000"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, old, new, match):
    with pytest.raises(DataError, match=match):
        prepare_dataset("iemocap", params(_broken(tmp_path, old, new)), allow_missing_audio=True)


def test_label_set_with_a_label_iemocap_never_uses():
    p = params()
    p["label_sets"]["four"]["labels"] = ["neutral", "happy", "angry", "bored"]
    with pytest.raises(DataError, match=r"label\(s\) \['bored'\] that dataset 'iemocap' never uses"):
        prepare_dataset("iemocap", p, allow_missing_audio=True)


def test_bad_policy_params_are_named():
    with pytest.raises(DataError, match=r"datasets.iemocap.votes must be one of \['drop_utterance'"):
        prepare_dataset("iemocap", params(votes="keep"), allow_missing_audio=True)
    with pytest.raises(DataError, match=r"datasets.iemocap.multi_label must be one of"):
        prepare_dataset("iemocap", params(multi_label="half"), allow_missing_audio=True)


def test_root_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist; set params.yaml datasets.iemocap.root"):
        prepare_dataset("iemocap", params(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no Session"):
        prepare_dataset("iemocap", params(tmp_path))


def test_parse_evaluation_counts_self_evaluations():
    turns, skipped = parse_evaluation(FIXTURE / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt")
    assert len(turns) == 7 and skipped == 2
    assert [r.categories for r in turns[1]["ratings"]] == [("frustrated", "angry"), ("angry",), ("frustrated",)]
    assert [r.rater for r in turns[1]["ratings"]] == ["E1", "E2", "E3"]


RAW = ["Neutral", "Happiness", "Excited", "Anger", "Sadness", "Frustration", "Surprise", "Fear", "Disgust", "Other"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from("EEEFM"), st.lists(st.sampled_from(RAW), min_size=1, max_size=3)), max_size=5
        ),
        min_size=1,
        max_size=6,
    )
)
def test_parser_round_trips_generated_files(tmp_path, turns):
    """Any file written in the EmoEvaluation format parses back to the ratings that were written."""
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    expected, expected_self = [], 0
    for k, raters in enumerate(turns):
        lines.append(f"[{k}.0000 - {k}.5000]\tSes01F_impro01_F{k:03d}\txxx\t[2.5000, 2.5000, 2.5000]")
        kept = []
        for j, (kind, cats) in enumerate(raters):
            lines.append(f"C-{kind}{j + 1}:\t{'; '.join(cats)};\t(comment {j})")
            if kind == "E":
                kept.append(tuple(parse_category(c, "") for c in cats))
            else:
                expected_self += 1
        lines += [f"A-E{k}:\tval 3; act 2; dom  2;\t()", ""]
        expected.append(kept)
    path = tmp_path / "Ses01F_impro01.txt"
    path.write_text("\n".join(lines))
    parsed, skipped = parse_evaluation(path)
    assert [[r.categories for r in t["ratings"]] for t in parsed] == expected and skipped == expected_self
    assert [t["utt_id"] for t in parsed] == [f"Ses01F_impro01_F{k:03d}" for k in range(len(turns))]
