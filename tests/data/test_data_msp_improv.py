"""MSP-IMPROV from a hand-written fixture in the publicly described Evaluation.txt form.

tests/fixtures/msp-improv/Evaluation.txt: three turns; a rater line copied twice (rater-3),
an ``Other`` primary, secondary emotions, an empty secondary field. Votes worked out by hand.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ambiemo.data import DataError, prepare_dataset
from ambiemo.data.msp_improv import parse_rater_line

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "msp-improv"
LABELS = ["neutral", "happy", "angry", "sad"]


def params(root=FIXTURE, **spec):
    return {
        "label_sets": {"four": {"labels": LABELS}},
        "datasets": {"msp-improv": {"loader": "msp-improv", "root": str(root), "label_set": "four", **spec}},
        "ambiguity": {"method": "fixed", "bins": ["low", "medium", "high"], "edges_bits": [1.0, 1.5]},
    }


def test_hand_computed_votes_and_turn_fields():
    m = prepare_dataset("msp-improv", params(votes="drop_votes"), allow_missing_audio=True)
    df = m.df.set_index("utt_id")
    v = {u: m.votes()[i].tolist() for i, u in enumerate(m.df["utt_id"])}
    assert v == {
        "MSP-IMPROV-S01A-F01-R-MM01": [0, 0, 2, 1],
        "MSP-IMPROV-S02H-M03-P-FM02": [1, 1, 0, 0],  # rater-5's Other dropped
        "MSP-IMPROV-S03N-F01-S-MM01": [2, 0, 0, 0],
    }
    assert m.meta["dropped_votes"] == {"duplicate_rater": 1.0, "outside_label_set": 1.0}
    assert df.loc["MSP-IMPROV-S02H-M03-P-FM02", ["speaker", "gender", "split", "intended", "recording"]].tolist() == [
        "M03",
        "male",
        "session3",
        "happy",
        "P",
    ]
    sec = m.ratings[m.ratings["kind"] == "secondary"]
    assert sorted(sec["category"]) == ["Amused", "Annoyed", "Disappointed", "Frustrated", "Surprised"]
    strict = prepare_dataset("msp-improv", params(), allow_missing_audio=True)
    assert strict.meta["excluded_ids"] == {"votes_outside_label_set": ["MSP-IMPROV-S02H-M03-P-FM02"]}


def test_audio_layout(tmp_path):
    root = tmp_path / "MSP-IMPROV"
    shutil.copytree(FIXTURE, root)
    wav = root / "session1" / "S01A" / "R" / "MSP-IMPROV-S01A-F01-R-MM01.wav"
    wav.parent.mkdir(parents=True)
    sf.write(str(wav), np.zeros(1600, np.float32), 16000)
    m = prepare_dataset("msp-improv", params(root, max_missing_audio=0.5), allow_missing_audio=False)
    assert m.df["audio_path"].tolist() == [str(wav.resolve())]
    assert m.meta["excluded_ids"]["audio_missing"] == ["MSP-IMPROV-S03N-F01-S-MM01"]


@pytest.mark.parametrize(
    "line, match",
    [
        ("rater-1", "is not 'rater; Primary"),
        ("rater-1; Bored; ; A:1.0;", "unknown MSP-IMPROV emotion 'Bored'"),
        ("rater-1; Sad; ; A:x; V:1.0;", "attribute 'A:x' is not"),
    ],
)
def test_malformed_rater_lines_name_file_and_line(line, match):
    with pytest.raises(DataError, match=f"Evaluation.txt:3: .*{match}"):
        parse_rater_line(line, "Evaluation.txt:3")
