"""CREMA-D (Cao et al. 2014), from the layout of its public repository.

    <root>/processedResults/tabulatedVotes.csv   vote counts per clip and rating modality
    <root>/VideoDemographics.csv                 actor sex (optional: gender is left empty without it)
    <root>/AudioWAV/<clip>.wav                   audio (16 kHz mono)

``tabulatedVotes.csv`` has one row per clip and modality; the row index encodes the
modality: index // 100000 is 1 for voice only, 2 for face only, 3 for audio-visual.
Speech emotion uses the voice-only rows (params ``modality: voice``). Its columns A, D, F,
H, N, S count the raters who chose anger, disgust, fear, happiness, neutral and sadness;
each count becomes that many one-category raters. A clip's name,
``<actor>_<sentence>_<emotion>_<level>`` (``1001_IEO_NEU_XX``), gives the speaker, the
sentence (its transcript), the intended emotion and its intensity (``LO``, ``MD``,
``HI``, or ``XX`` for unspecified), kept as the extra column ``intensity``.

With params ``source: responses`` the votes are rebuilt from the raw responses instead
(the tabulated table stays the default): ``finishedResponses.csv`` has one row per
response (``localid`` the rater, ``sessionNums``, ``queryType`` 1 voice / 2 face / 3
audio-visual, ``questNum``, ``respEmo`` one of A D F H N S, ``clipName``), repeated and
practice questions already removed by the corpus's owners. The same filter their
``processFinishedResponses.R`` applies to build ``tabulatedVotes.csv`` is applied here:
a response whose first emotion click (``finishedEmoResponses.csv``, ``ttr`` in ms) came
more than 10 s after the clip is dropped, matched on (session, query type, question).
Each response becomes one rating with the rater's id. Practice clips (names that are not
clip names) are counted and skipped; where ``tabulatedVotes.csv`` is present too, the
manifest's ``source`` says how many clips match its counts exactly.

CREMA-D has no official split: ``split`` is empty (split by actor for cross-validation).
Clips listed under ``exclude`` in params (by default the four with broken audio upstream)
are counted as excluded with the reason ``excluded_in_params``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.data import Corpus, DataError, Rating, Utterance, register_dataset

VOTES_FILE = Path("processedResults/tabulatedVotes.csv")
RESPONSES_FILE = Path("finishedResponses.csv")
FIRST_CLICK_FILE = Path("finishedEmoResponses.csv")
SLOW_FIRST_CLICK_MS = 10_000  # processFinishedResponses.R: "filter responses that took over 10 seconds"
SOURCES = ("tabulated", "responses")
DEMOGRAPHICS_FILE = Path("VideoDemographics.csv")
AUDIO_DIR = Path("AudioWAV")

VOTE_COLUMNS = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}
EMOTION_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
INTENSITY_CODES = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
MODALITIES = {"voice": 1, "face": 2, "audiovisual": 3}
# The twelve sentences, by the code in the clip name (from the corpus's documentation).
SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
CLIP_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")


def parse_clip_name(name: str, where: str = "") -> dict[str, str]:
    """Speaker, sentence, intended emotion and intensity from a clip name."""
    m = CLIP_NAME.match(name)
    bad = (
        not m
        or m["sentence"] not in SENTENCES
        or m["emotion"] not in EMOTION_CODES
        or m["level"] not in INTENSITY_CODES
    )
    if bad:
        raise DataError(
            f"{where}: clip name {name!r} is not <actor>_<sentence>_<emotion>_<level> with sentence in "
            f"{sorted(SENTENCES)}, emotion in {sorted(EMOTION_CODES)}, level in {sorted(INTENSITY_CODES)}"
        )
    return {
        "speaker": m["actor"],
        "transcript": SENTENCES[m["sentence"]],
        "intended": EMOTION_CODES[m["emotion"]],
        "intensity": INTENSITY_CODES[m["level"]],
    }


def read_demographics(root: Path) -> dict[str, str]:
    """Actor id -> "female" | "male" (empty when the table is absent)."""
    path = root / DEMOGRAPHICS_FILE
    if not path.is_file():
        return {}
    demo = pd.read_csv(path, dtype=str)
    missing = {"ActorID", "Sex"} - set(demo.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {sorted(missing)}")
    sex = demo["Sex"].str.strip().str.lower()
    unknown = sorted(set(sex) - {"female", "male"})
    if unknown:
        raise DataError(f"{path}: unknown Sex value(s) {unknown}; expected Female or Male")
    return dict(zip(demo["ActorID"].str.strip(), sex, strict=True))


def _question_keys(table: pd.DataFrame) -> pd.Series:
    """(session, query type, question) as one key, as the corpus's own R script builds it."""
    return (
        table["sessionNums"].astype("int64") * 1000
        + table["queryType"].astype("int64") * 100
        + table["questNum"].astype("int64")
    )


def _read_responses_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; has {list(table.columns)}")
    table["line"] = range(2, len(table) + 2)
    for c in ("sessionNums", "queryType", "questNum"):
        bad = ~table[c].str.strip().str.fullmatch(r"\d+")
        if bad.any():
            row = table[bad].iloc[0]
            raise DataError(f"{path}:{row['line']}: {c} {row[c]!r} is not a whole number")
    return table


def load_responses(root: Path, modality: str) -> tuple[dict[str, list[Rating]], dict[str, float], dict[str, Any]]:
    """Clip -> one rating per kept response, responses dropped per reason, and what was read."""
    path = root / RESPONSES_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; params datasets.crema-d.source: responses needs the raw responses")
    table = _read_responses_table(path, ("localid", "sessionNums", "queryType", "questNum", "respEmo", "clipName"))
    dropped: dict[str, float] = {}
    info: dict[str, Any] = {"files_read": [RESPONSES_FILE.as_posix()]}
    rules = ["repeated and practice questions: removed upstream (finishedResponses.csv)"]
    table = table[table["queryType"].astype(int) == MODALITIES[modality]]
    first = root / FIRST_CLICK_FILE
    if first.is_file():
        emo = _read_responses_table(first, ("sessionNums", "queryType", "questNum", "ttr"))
        slow = emo[pd.to_numeric(emo["ttr"], errors="coerce") > SLOW_FIRST_CLICK_MS]
        is_slow = _question_keys(table).isin(set(_question_keys(slow)))
        dropped["responses_first_click_over_10s"] = float(is_slow.sum())
        table = table[~is_slow]
        info["files_read"].append(FIRST_CLICK_FILE.as_posix())
        rules.append(f"first emotion click over {SLOW_FIRST_CLICK_MS} ms (finishedEmoResponses.csv): dropped")
    else:
        rules.append("finishedEmoResponses.csv absent: the 10 s first-click filter was NOT applied")
    ratings: dict[str, list[Rating]] = {}
    practice = 0
    for rater, emo_code, clip, line in zip(
        table["localid"], table["respEmo"], table["clipName"], table["line"], strict=True
    ):
        clip = clip.strip()
        if not CLIP_NAME.match(clip):
            practice += 1
            continue
        code = emo_code.strip().upper()
        if code not in VOTE_COLUMNS:
            raise DataError(f"{path}:{line}: respEmo {emo_code!r} is not one of {sorted(VOTE_COLUMNS)}")
        ratings.setdefault(clip, []).append(Rating(rater.strip(), (VOTE_COLUMNS[code],), given=(code,)))
    if practice:
        dropped["responses_to_practice_clips"] = float(practice)
    info["filtering_rules"] = rules
    return ratings, dropped, info


def _compare_with_tabulated(ratings: dict[str, list[Rating]], rows: pd.DataFrame) -> dict[str, Any]:
    tab = {
        str(n).strip(): [int(rows.at[i, c]) for c in VOTE_COLUMNS]
        for i, n in zip(rows.index, rows["fileName"], strict=True)
    }
    order = list(VOTE_COLUMNS.values())
    rebuilt = {}
    for clip, rs in ratings.items():
        counts = [0] * len(order)
        for r in rs:
            counts[order.index(r.categories[0])] += 1
        rebuilt[clip] = counts
    same = sum(rebuilt.get(c) == v for c, v in tab.items())
    return {
        "clips_tabulated": len(tab),
        "clips_matching_tabulated_counts": same,
        "clips_differing_from_tabulated": len(tab) - same,
        "clips_only_in_responses": len(set(rebuilt) - set(tab)),
    }


@register_dataset("crema-d")
def load_crema_d(root: Path, spec: Mapping[str, Any]) -> Corpus:
    """params ``datasets.crema-d``: ``modality`` (voice | face | audiovisual), ``source`` (tabulated |
    responses), ``exclude`` (clip names)."""
    source = spec.get("source", "tabulated")
    if source not in SOURCES:
        raise DataError(f"params datasets.crema-d.source must be one of {list(SOURCES)}, got {source!r}")
    modality = spec.get("modality", "voice")
    if modality not in MODALITIES:
        raise DataError(f"params datasets.crema-d.modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    if source == "responses":
        return _load_from_responses(root, spec, modality)
    return _load_tabulated(root, spec, modality)


def _load_from_responses(root: Path, spec: Mapping[str, Any], modality: str) -> Corpus:
    ratings, dropped, info = load_responses(root, modality)
    if (root / VOTES_FILE).is_file():
        rows = _tabulated_rows(root / VOTES_FILE, modality)
        info.update(_compare_with_tabulated(ratings, rows))
    gender = read_demographics(root)
    exclude = {str(x) for x in spec.get("exclude") or []}
    utterances, excluded = [], []
    for name in sorted(ratings):
        if name in exclude:
            excluded.append(name)
            continue
        utterances.append(_utterance(root, name, ratings[name], gender, f"{root / RESPONSES_FILE}: clip {name}"))
    unknown = sorted(exclude - set(ratings))
    if unknown:
        raise DataError(f"params datasets.crema-d.exclude names clip(s) without responses: {unknown}")
    return Corpus(
        utterances,
        vocabulary=frozenset(VOTE_COLUMNS.values()),
        excluded={"excluded_in_params": excluded},
        dropped_votes=dropped,
        source={"layout": f"CREMA-D raw responses ({modality} only), rater ids kept", **info},
    )


def _utterance(root: Path, name: str, ratings: list, gender: dict[str, str], where: str) -> Utterance:
    info = parse_clip_name(name, where)
    return Utterance(
        utt_id=name,
        ratings=ratings,
        audio_path=str(root / AUDIO_DIR / f"{name}.wav"),
        speaker=info["speaker"],
        gender=gender.get(info["speaker"], ""),
        transcript=info["transcript"],
        intended=info["intended"],
        extra={"intensity": info["intensity"]},
    )


def _tabulated_rows(path: Path, modality: str) -> pd.DataFrame:
    table = pd.read_csv(path, index_col=0)
    missing = [c for c in (*VOTE_COLUMNS, "fileName") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    table["line"] = range(2, len(table) + 2)  # file line of each row, for error messages
    rows = table[table.index // 100000 == MODALITIES[modality]]
    if rows.empty:
        raise DataError(f"{path}: no {modality} rows (row index // 100000 == {MODALITIES[modality]})")
    counts = rows[list(VOTE_COLUMNS)]
    not_counts = ~counts.map(lambda v: float(v).is_integer() and v >= 0 if pd.notna(v) else False).all(axis=1)
    if not_counts.any():
        first = rows[not_counts].iloc[0]
        raise DataError(
            f"{path}:{first['line']}: vote counts must be whole numbers >= 0, got "
            f"{first[list(VOTE_COLUMNS)].to_dict()} for {first['fileName']}"
        )
    return rows


def _load_tabulated(root: Path, spec: Mapping[str, Any], modality: str) -> Corpus:
    path = root / VOTES_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: CREMA-D vote table not found; root should be a clone of the CREMA-D "
            "repository (or run `ambiemo data fetch crema-d --dest DIR`)"
        )
    rows = _tabulated_rows(path, modality)
    counts = rows[list(VOTE_COLUMNS)]
    gender = read_demographics(root)
    exclude = {str(x) for x in spec.get("exclude") or []}
    utterances, excluded = [], []
    for name, line, *votes in zip(rows["fileName"], rows["line"], *(counts[c] for c in VOTE_COLUMNS), strict=True):
        name = str(name).strip()
        parse_clip_name(name, f"{path}:{line}")  # a bad name is an error even when excluded
        if name in exclude:
            excluded.append(name)
            continue
        ratings = [(label,) for label, n in zip(VOTE_COLUMNS.values(), votes, strict=True) for _ in range(int(n))]
        utterances.append(_utterance(root, name, ratings, gender, f"{path}:{line}"))
    unknown_excludes = sorted(exclude - set(rows["fileName"].astype(str)))
    if unknown_excludes:
        raise DataError(f"params datasets.crema-d.exclude names clip(s) not in {path}: {unknown_excludes}")
    return Corpus(
        utterances,
        vocabulary=frozenset(VOTE_COLUMNS.values()),
        excluded={"excluded_in_params": excluded},
        source={
            "layout": f"CREMA-D processedResults/tabulatedVotes.csv ({modality} rows)",
            "files_read": [VOTES_FILE.as_posix()],
        },
    )
