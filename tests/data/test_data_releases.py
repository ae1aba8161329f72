"""Every release variant of IEMOCAP and MSP-Podcast, from fixtures in the forms the releases ship.

tests/fixtures/iemocap-variants: one dialog with a self-evaluation whose category field is
empty (``C-F2:<TAB>;<TAB>()``), an external rater with an empty field, raters E1, E2, E6,
multi-category lines, ``Other;`` with its comment, ``Happiness; Excited;`` (one label after
the merge), irregular ``A-`` lines, a ``._*`` resource fork and the ``Categorical/``,
``Attribute/``, ``Self-evaluation/`` subfolders.

tests/fixtures/msp-podcast-{1.6,1.9,2.0}: the same twelve ratings of four segments in three
layouts (``label/`` per-column, ``labels/`` EmoDetail, ``Labels/`` WorkerID columns plus the
JSON copy); 1.9 and 2.0 list WORKER00001 twice for 0101_0001. The expected votes below are
worked out by hand from the fixture text.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ambiemo.data import DataError, get_loader, prepare_dataset
from ambiemo.data.labels import LabelSet, tally_votes
from ambiemo.data.manifest import ManifestError, read_manifest
from ambiemo.data.msp_podcast import parse_emo_detail
from ambiemo.data.ratings import COLUMNS, read_ratings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LABELS = ["neutral", "happy", "angry", "sad"]
MSP = ["msp-podcast-1.6", "msp-podcast-1.9", "msp-podcast-2.0"]


def params(name, root, **spec):
    return {
        "label_sets": {"four": {"labels": LABELS, "merge": {"excited": "happy"}}},
        "datasets": {name: {"loader": name, "root": str(root), "label_set": "four", "votes": "drop_utterance", **spec}},
        "ambiguity": {"method": "fixed", "bins": ["low", "medium", "high"], "edges_bits": [1.0, 1.5]},
    }


def votes(m):
    return {u: m.votes()[i].tolist() for i, u in enumerate(m.df["utt_id"])}


def _msp_with_audio(tmp_path, release, without=("MSP-PODCAST_0103_0001",)):
    root = tmp_path / release
    shutil.copytree(FIXTURES / release, root)
    (root / "Audios").mkdir()
    for stem in ("MSP-PODCAST_0101_0001", "MSP-PODCAST_0101_0002", "MSP-PODCAST_0102_0001", "MSP-PODCAST_0103_0001"):
        if stem not in without:
            sf.write(str(root / "Audios" / f"{stem}.wav"), np.zeros(8000, np.float32), 16000)
    return root


# --------------------------------------------------------------------------- IEMOCAP


def test_iemocap_release_variants_hand_computed():
    m = prepare_dataset("iemocap", params("iemocap", FIXTURES / "iemocap-variants"), allow_missing_audio=True)
    assert votes(m) == {"Ses03F_impro02_F000": [0, 0, 1, 2], "Ses03F_impro02_M000": [2, 0, 0, 0]}
    assert m.df["n_raters"].tolist() == [3, 2]
    assert m.df["entropy_bits"].round(6).tolist() == [0.918296, 0.0]
    assert m.meta["excluded_ids"] == {"votes_outside_label_set": ["Ses03F_impro02_F001"]}  # Other; (confused)
    # C-F2 (empty) and C-M2 skipped unread; C-E2 of M000 gave no category
    assert m.meta["dropped_votes"] == {"ratings_without_category": 1.0, "self_evaluations": 2.0}
    assert m.meta["categories_outside_label_set"] == {"other": 1.0}
    src = m.meta["source"]
    assert src["files_read"] == 1 and src["files_ignored"] == 1  # the ._* fork
    assert src["subfolders_not_read"] == ["Attribute", "Categorical", "Self-evaluation"]
    r = m.ratings
    assert len(r) == 7 and set(r["rater"]) == {"E1", "E2", "E6"}


def test_iemocap_self_evaluations_on_and_empty_fields():
    m = prepare_dataset(
        "iemocap", params("iemocap", FIXTURES / "iemocap-variants", self_evaluations=True), allow_missing_audio=True
    )
    assert votes(m)["Ses03F_impro02_M000"] == [3, 0, 0, 0]
    assert m.meta["dropped_votes"] == {"ratings_without_category": 2.0}  # now C-F2's empty field too
    r = m.ratings.set_index(["utt_id", "rater"])
    assert (
        bool(r.loc[("Ses03F_impro02_M000", "M2"), "self_eval"])
        and not r["self_eval"].drop(("Ses03F_impro02_M000", "M2")).any()
    )


def test_iemocap_merged_spellings_share_one_vote():
    m = prepare_dataset(
        "iemocap", params("iemocap", FIXTURES / "iemocap-variants", votes="drop_votes"), allow_missing_audio=True
    )
    assert votes(m)["Ses03F_impro02_F001"] == [1, 1, 0, 0]
    rows = m.ratings[(m.ratings["utt_id"] == "Ses03F_impro02_F001")].set_index(["rater", "category"])
    assert rows.loc[("E2", "Happiness"), "weight"] == 0.5 and rows.loc[("E2", "Excited"), "weight"] == 0.5
    assert rows.loc[("E1", "Other (confused)"), "label"] is None
    assert m.meta["dropped_votes"]["outside_label_set"] == 1.0


# --------------------------------------------------------------------------- MSP-Podcast


@pytest.mark.parametrize("release", MSP)
def test_msp_podcast_every_layout_hand_computed(tmp_path, release):
    root = _msp_with_audio(tmp_path, release)
    m = prepare_dataset("msp-podcast", params("msp-podcast", root, splits=None, max_missing_audio=0.5))
    assert votes(m) == {"MSP-PODCAST_0101_0001": [0, 0, 2, 1], "MSP-PODCAST_0101_0002": [2, 1, 0, 0]}
    assert m.df["n_raters"].tolist() == [3, 3]
    assert m.meta["excluded_ids"] == {
        "audio_missing": ["MSP-PODCAST_0103_0001"],
        "votes_outside_label_set": ["MSP-PODCAST_0102_0001"],  # Contempt
    }
    duplicates = {} if release == "msp-podcast-1.6" else {"duplicate_rater": 1.0}  # WORKER00001 twice
    assert m.meta["dropped_votes"] == duplicates
    assert m.meta["categories_outside_label_set"] == {"contempt": 1.0}
    src = m.meta["source"]
    folder = {"msp-podcast-1.6": "label", "msp-podcast-1.9": "labels", "msp-podcast-2.0": "Labels"}[release]
    assert src["files_read"][0].startswith(f"{folder}/labels_con")
    if release == "msp-podcast-2.0":
        # CSV read; the JSON differs on 0102_0001 (Sad for Neutral) and cannot hold the repeated worker
        assert src["choice"] == "CSV read; JSON compared" and src["csv_json_disagreements"] == 2
    assert m.df["duration_s"].tolist() == [0.5, 0.5]


def test_msp_podcast_secondary_emotions_counted_with_their_weight(tmp_path):
    root = _msp_with_audio(tmp_path, "msp-podcast-1.9")
    m = prepare_dataset(
        "msp-podcast", params("msp-podcast", root, splits=None, max_missing_audio=0.5, secondary_weight=0.5)
    )
    # W2's secondary Sad adds 0.5; W4's "Amused,Neutral" shares 0.5: neutral gets 0.25 (amused is outside)
    assert votes(m) == {"MSP-PODCAST_0101_0001": [0, 0, 2, 1.5], "MSP-PODCAST_0101_0002": [2.25, 1, 0, 0]}
    sec = m.ratings[m.ratings["kind"] == "secondary"].set_index(["utt_id", "rater", "category"])["weight"]
    assert sec[("MSP-PODCAST_0101_0001", "WORKER00001", "Frustrated")] == 0.25
    assert sec[("MSP-PODCAST_0101_0002", "WORKER00004", "Amused")] == 0.25


def test_missing_audio_above_the_share_stops_prepare(tmp_path):
    root = _msp_with_audio(tmp_path, "msp-podcast-2.0")
    with pytest.raises(DataError, match=r"audio missing for 1 of 3 utterances \(33.3%, more than .*max_missing_audio"):
        prepare_dataset("msp-podcast", params("msp-podcast", root, splits=None, max_missing_audio=0.25))


def test_split_sets_of_old_and_new_releases(tmp_path):
    old = prepare_dataset(
        "msp-podcast",
        params("msp-podcast", FIXTURES / "msp-podcast-1.9", splits=["Validation"]),
        allow_missing_audio=True,
    )
    new = prepare_dataset(
        "msp-podcast",
        params("msp-podcast", FIXTURES / "msp-podcast-2.0", splits=["Development"]),
        allow_missing_audio=True,
    )
    for m in (old, new):
        assert m.exclusions == {"split_not_selected": 3, "votes_outside_label_set": 1}


@pytest.mark.parametrize(
    "cell, match",
    [
        ("WORKER00001", "is not 'WORKER; Primary"),
        ("WORKER00001; Angry; ; A:high; V:2.0; D:5.0;", "attribute 'A:high' is not"),
        ("WORKER00001; Bored; ; A:1.0;", "unknown MSP-Podcast emotion 'Bored'"),
    ],
)
def test_malformed_emo_detail_names_file_and_line(cell, match):
    with pytest.raises(DataError, match=f"labels_detailed.csv:7: .*{match}"):
        parse_emo_detail(cell, "labels_detailed.csv:7")


def test_malformed_row_in_a_release_file_names_its_line(tmp_path):
    root = tmp_path / "r"
    shutil.copytree(FIXTURES / "msp-podcast-1.9", root)
    path = root / "labels" / "labels_detailed.csv"
    lines = path.read_text().splitlines()
    lines[5] = 'MSP-PODCAST_0101_0002.wav,"WORKER00001; Neutral; ; A:3.0; V:x; D:4.0;"'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels_detailed.csv:6: EmoDetail attribute 'V:x'"):
        prepare_dataset("msp-podcast", params("msp-podcast", root, splits=None), allow_missing_audio=True)


# --------------------------------------------------------------------------- ratings table, audio paths


@pytest.mark.parametrize(
    "name, fixture, spec",
    [
        ("iemocap", "iemocap-variants", {}),
        ("iemocap", "iemocap", {"votes": "drop_votes", "self_evaluations": True}),
        ("msp-podcast", "msp-podcast-2.0", {"splits": None}),
        ("msp-podcast", "msp-podcast", {"splits": None, "votes": "other"}),
    ],
)
def test_manifest_counts_derive_from_the_ratings_table(tmp_path, name, fixture, spec):
    out = tmp_path / "prepared" / "manifest.parquet"
    m = prepare_dataset(name, params(name, FIXTURES / fixture, **spec), out=out, allow_missing_audio=True)
    ratings = read_ratings(tmp_path / "prepared" / "ratings.parquet")
    assert list(ratings.columns) == list(COLUMNS)
    assert set(ratings["utt_id"]) == set(m.df["utt_id"])
    # Recomputed from the table with a plain groupby, not with the code that built the manifest.
    counted = ratings[ratings["label"].notna()]
    table = counted.pivot_table(index="utt_id", columns="label", values="weight", aggfunc="sum", fill_value=0.0)
    table = table.reindex(index=m.df["utt_id"], columns=list(m.labels), fill_value=0.0)
    np.testing.assert_allclose(table.to_numpy(), m.votes())
    raters = counted[counted["weight"] > 0].groupby("utt_id")["rater"].nunique().reindex(m.df["utt_id"])
    assert raters.tolist() == m.df["n_raters"].tolist()
    # And the same as the long-standing per-utterance tally of the loader's own ratings.
    corpus = get_loader(name)(FIXTURES / fixture, {**params(name, FIXTURES / fixture, **spec)["datasets"][name]})
    by_id = {u.utt_id: u for u in corpus.utterances}
    ls = LabelSet(m.label_set, m.labels, {"excited": "happy"})
    own = []
    for u in m.df["utt_id"]:
        first: dict[str, tuple[str, ...]] = {}
        for r in by_id[u].ratings:
            if r.categories:
                first.setdefault(r.rater, r.categories)  # a worker listed twice counts once
        own.append(list(first.values()))
    policy = spec.get("votes", "drop_utterance")
    tally = tally_votes(own, ls, policy="drop_votes" if policy == "drop_utterance" else policy)
    np.testing.assert_allclose(tally.votes, m.votes())
    assert tally.n_raters.tolist() == m.df["n_raters"].tolist()


def test_audio_paths_are_relative_to_the_root_and_resolved_when_read(tmp_path):
    root = _msp_with_audio(tmp_path, "msp-podcast-2.0")
    out = tmp_path / "m.parquet"
    prepare_dataset("msp-podcast", params("msp-podcast", root, splits=None, max_missing_audio=0.5), out=out)
    stored = pd.read_parquet(out)["audio_path"].tolist()
    assert stored == ["Audios/MSP-PODCAST_0101_0001.wav", "Audios/MSP-PODCAST_0101_0002.wav"]
    assert read_manifest(out).df["audio_path"].tolist() == [str(root.resolve() / p) for p in stored]
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    with pytest.raises(ManifestError, match=rf"audio root {root.resolve()} does not exist; the corpus has moved"):
        read_manifest(out).require_audio()
    assert read_manifest(out, audio_root=moved).df["audio_path"].tolist() == [str(moved / p) for p in stored]
    (moved / stored[0]).unlink()  # one clip missing is that clip's failure, not a moved corpus
    assert read_manifest(out, audio_root=moved).require_audio() == ["MSP-PODCAST_0101_0001"]


def test_duplicate_rater_policy_and_bad_rule_params():
    root = FIXTURES / "msp-podcast-1.9"
    both = prepare_dataset(
        "msp-podcast", params("msp-podcast", root, splits=None, duplicate_raters="all"), allow_missing_audio=True
    )
    # WORKER00001's second rating (Neutral) counts too; n_raters counts distinct workers
    assert votes(both)["MSP-PODCAST_0101_0001"] == [1, 0, 2, 1]
    assert both.df.set_index("utt_id").loc["MSP-PODCAST_0101_0001", "n_raters"] == 3
    assert "duplicate_rater" not in both.meta["dropped_votes"]
    for key, value, match in [
        ("duplicate_raters", "last", r"datasets.msp-podcast.duplicate_raters must be one of \['first', 'all'\]"),
        ("secondary_weight", 2, r"datasets.msp-podcast.secondary_weight must be a number in \[0, 1\], got 2"),
        ("max_missing_audio", -0.1, r"datasets.msp-podcast.max_missing_audio must be a share in \[0, 1\]"),
    ]:
        with pytest.raises(DataError, match=match):
            prepare_dataset("msp-podcast", params("msp-podcast", root, splits=None, **{key: value}))
