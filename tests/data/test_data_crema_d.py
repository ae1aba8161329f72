"""CREMA-D: the real vote tables from ../shared, and a small copy of its layout with audio."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.stats import entropy as scipy_entropy

from ambiemo.data import DataError, prepare_dataset
from ambiemo.data.crema_d import parse_clip_name

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad"]
LETTERS = dict(zip("ADFHNS", LABELS, strict=True))
BAD = ["1064_IEO_DIS_MD", "1064_TIE_SAD_XX", "1076_MTI_NEU_XX", "1076_MTI_SAD_XX"]


def params(root, **spec):
    return {
        "label_sets": {"crema6": {"labels": LABELS}},
        "datasets": {
            "crema-d": {
                "loader": "crema-d",
                "root": str(root),
                "label_set": "crema6",
                "modality": "voice",
                "exclude": BAD,
                **spec,
            }
        },
        "ambiguity": {"method": "fixed", "bins": ["low", "medium", "high"], "edges_bits": [1.0, 1.5]},
    }


@pytest.fixture(scope="session")
def crema_root(shared_dir):
    root = shared_dir / "data" / "crema-d"
    if not (root / "processedResults" / "tabulatedVotes.csv").is_file():
        pytest.skip("shared/data/crema-d has no processedResults/tabulatedVotes.csv")
    return root


@pytest.fixture(scope="session")
def crema(crema_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("crema") / "crema-d.parquet"
    start = time.perf_counter()
    m = prepare_dataset("crema-d", params(crema_root), out=out, allow_missing_audio=True)
    m.seconds = time.perf_counter() - start
    return m


def test_real_tables_voice_only(crema, crema_root):
    df = crema.df.set_index("utt_id")
    assert len(df) == 7442 - 4 and crema.exclusions == {"excluded_in_params": 4}
    assert sorted(crema.meta["excluded_ids"]["excluded_in_params"]) == BAD
    assert crema.seconds < 10, f"preparing CREMA-D took {crema.seconds:.1f} s (target < 5 s)"
    assert df["speaker"].nunique() == 91 and (df["audio_path"] == "").all()
    assert crema.meta["audio"] == {"missing": 7438, "labels_only": True}
    # First row of tabulatedVotes.csv: "100001",0,0,0,1,10,0,"1001_IEO_NEU_XX",11,...
    row = df.loc["1001_IEO_NEU_XX"]
    assert [row[f"votes_{x}"] for x in LABELS] == [0, 0, 0, 1, 10, 0] and row["n_raters"] == 11
    assert row["p_neutral"] == pytest.approx(10 / 11)
    assert row["entropy_bits"] == pytest.approx(scipy_entropy([1, 10], base=2))
    assert (row["intended"], row["intensity"], row["gender"]) == ("neutral", "unspecified", "male")
    assert row["transcript"] == "It's eleven o'clock."
    # Against the corpus's own voice-only majority (summaryTable.csv VoiceVote; ties as "A:N").
    summary = pd.read_csv(crema_root / "processedResults" / "summaryTable.csv", index_col=0).set_index("FileName")
    expected = summary.loc[df.index, "VoiceVote"].map(lambda v: "" if ":" in v else LETTERS[v])
    agree = (expected == df["majority"]).mean()
    assert agree > 0.995, f"majority agrees with summaryTable.csv on {agree:.2%}"
    tied = summary.loc[df.index, "VoiceVote"].str.contains(":")
    assert (tied == df["majority_tie"]).mean() > 0.995


def test_real_tables_other_modalities_differ(crema_root):
    voice = prepare_dataset("crema-d", params(crema_root), allow_missing_audio=True)
    face = prepare_dataset("crema-d", params(crema_root, modality="face"), allow_missing_audio=True)
    # Raters agree more on faces than on voices (CREMA-D paper); the tables must show it.
    assert face.df["entropy_bits"].mean() < voice.df["entropy_bits"].mean()


def test_missing_audio_is_an_error_that_says_what_to_do(crema_root):
    with pytest.raises(DataError, match=r"audio missing for 7438 of 7438 .*1001_DFA_ANG_XX.*--allow-missing-audio"):
        prepare_dataset("crema-d", params(crema_root))


# ------------------------------------------------------------------ a small corpus in the same layout

HEADER = '"","A","D","F","H","N","S","fileName","numResponses"\n'


def _layout(root, rows, wavs=()):
    (root / "processedResults").mkdir(parents=True)
    (root / "processedResults" / "tabulatedVotes.csv").write_text(HEADER + "".join(rows))
    (root / "VideoDemographics.csv").write_text('"ActorID","Age","Sex"\n1001,51,"Male"\n1002,21,"Female"\n')
    (root / "AudioWAV").mkdir()
    for name in wavs:
        sf.write(str(root / "AudioWAV" / f"{name}.wav"), np.zeros(8000, np.float32), 16000)
    return root


ROWS = [
    '"100001",0,0,0,1,10,0,"1001_IEO_NEU_XX",11\n',
    '"100002",3,3,0,0,0,0,"1002_DFA_ANG_HI",6\n',
    '"200001",0,0,0,0,9,0,"1001_IEO_NEU_XX",9\n',
]


def test_small_layout_with_audio(tmp_path):
    root = _layout(tmp_path / "c", ROWS, wavs=["1001_IEO_NEU_XX", "1002_DFA_ANG_HI"])
    m = prepare_dataset("crema-d", params(root, exclude=[]))
    df = m.df.set_index("utt_id")
    assert len(df) == 2  # the face-only row (index 200001) is not read
    assert df.loc["1002_DFA_ANG_HI", "majority"] == "" and df.loc["1002_DFA_ANG_HI", "majority_tie"]
    assert df.loc["1002_DFA_ANG_HI", "gender"] == "female" and df.loc["1002_DFA_ANG_HI", "intensity"] == "high"
    assert df["duration_s"].tolist() == [0.5, 0.5]
    assert all(p.endswith(".wav") and p.startswith("/") for p in df["audio_path"])


def test_unreadable_audio_names_the_clip(tmp_path):
    root = _layout(tmp_path / "c", ROWS, wavs=["1001_IEO_NEU_XX"])
    (root / "AudioWAV" / "1002_DFA_ANG_HI.wav").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n"
    )
    with pytest.raises(DataError, match=r"1 audio file\(s\) cannot be read: 1002_DFA_ANG_HI"):
        prepare_dataset("crema-d", params(root, exclude=[]))


@pytest.mark.parametrize(
    "row, match",
    [
        ('"100003",0,0,0,1,2,0,"1001_XYZ_NEU_XX",3\n', r"tabulatedVotes.csv:4: clip name '1001_XYZ_NEU_XX'"),
        ('"100003",0,0,0,1.5,2,0,"1001_IEO_NEU_XX",3\n', r"tabulatedVotes.csv:4: vote counts must be whole numbers"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, match):
    root = _layout(tmp_path / "c", [*ROWS[:2], row])
    with pytest.raises(DataError, match=match):
        prepare_dataset("crema-d", params(root, exclude=[]), allow_missing_audio=True)


def test_exclude_must_name_real_clips(tmp_path):
    root = _layout(tmp_path / "c", ROWS)
    with pytest.raises(DataError, match=r"exclude names clip\(s\) not in .*\['1099_IEO_NEU_XX'\]"):
        prepare_dataset("crema-d", params(root, exclude=["1099_IEO_NEU_XX"]), allow_missing_audio=True)


def test_parse_clip_name():
    assert parse_clip_name("1091_WSI_SAD_LO") == {
        "speaker": "1091",
        "transcript": "We'll stop in a couple of minutes.",
        "intended": "sad",
        "intensity": "low",
    }
    with pytest.raises(DataError, match="not <actor>"):
        parse_clip_name("1091_WSI_SAD")


# --------------------------------------------------------------------------- raw responses

RESPONSES = Path(__file__).resolve().parents[1] / "fixtures" / "crema-d-responses"


def test_votes_rebuilt_from_raw_responses_hand_computed():
    """Fixture: three raters; one voice response with a first click after 12 s, one practice clip,
    one face-only response. Expected by hand: NEU clip N, N, S; HAP clip H, H."""
    m = prepare_dataset("crema-d", params(RESPONSES, exclude=[], source="responses"), allow_missing_audio=True)
    v = m.df.set_index("utt_id")[[f"votes_{x}" for x in LABELS]]
    assert v.loc["1001_IEO_NEU_XX"].tolist() == [0, 0, 0, 0, 2, 1]
    assert v.loc["1001_IEO_HAP_LO"].tolist() == [0, 0, 0, 2, 0, 0]
    assert m.meta["dropped_votes"] == {"responses_first_click_over_10s": 1.0, "responses_to_practice_clips": 1.0}
    src = m.meta["source"]
    assert src["clips_matching_tabulated_counts"] == 2 and src["clips_differing_from_tabulated"] == 0
    assert src["files_read"] == ["finishedResponses.csv", "finishedEmoResponses.csv"]
    raters = m.ratings.groupby("utt_id")["rater"].apply(sorted).to_dict()
    assert raters == {"1001_IEO_HAP_LO": ["0001", "0003"], "1001_IEO_NEU_XX": ["0001", "0002", "0003"]}


def test_responses_without_first_click_table_say_the_filter_was_not_applied(tmp_path):
    root = tmp_path / "c"
    shutil.copytree(RESPONSES, root)
    (root / "finishedEmoResponses.csv").unlink()
    m = prepare_dataset("crema-d", params(root, exclude=[], source="responses"), allow_missing_audio=True)
    assert m.df.set_index("utt_id").loc["1001_IEO_HAP_LO", "votes_neutral"] == 1  # the slow response counts now
    assert m.meta["source"]["clips_differing_from_tabulated"] == 1
    assert any("NOT applied" in rule for rule in m.meta["source"]["filtering_rules"])


def test_unknown_response_names_file_and_line(tmp_path):
    root = tmp_path / "c"
    shutil.copytree(RESPONSES, root)
    path = root / "finishedResponses.csv"
    path.write_text(path.read_text().replace('"1001_IEO_HAP_LO",3,"H"', '"1001_IEO_HAP_LO",3,"X"'))
    with pytest.raises(DataError, match=r"finishedResponses.csv:8: respEmo 'X' is not one of"):
        prepare_dataset("crema-d", params(root, exclude=[], source="responses"), allow_missing_audio=True)
    with pytest.raises(DataError, match=r"source must be one of \['tabulated', 'responses'\]"):
        prepare_dataset("crema-d", params(root, source="raw"), allow_missing_audio=True)
