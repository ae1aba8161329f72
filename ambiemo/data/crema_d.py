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

from ambiemo.data import Corpus, DataError, Utterance, register_dataset

VOTES_FILE = Path("processedResults/tabulatedVotes.csv")
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


@register_dataset("crema-d")
def load_crema_d(root: Path, spec: Mapping[str, Any]) -> Corpus:
    """params ``datasets.crema-d``: ``modality`` (voice | face | audiovisual), ``exclude`` (clip names)."""
    path = root / VOTES_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: CREMA-D vote table not found; root should be a clone of the CREMA-D "
            "repository (or run `ambiemo data fetch crema-d --dest DIR`)"
        )
    modality = spec.get("modality", "voice")
    if modality not in MODALITIES:
        raise DataError(f"params datasets.crema-d.modality must be one of {sorted(MODALITIES)}, got {modality!r}")
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

    gender = read_demographics(root)
    exclude = {str(x) for x in spec.get("exclude") or []}
    utterances, excluded = [], []
    for name, line, *votes in zip(rows["fileName"], rows["line"], *(counts[c] for c in VOTE_COLUMNS), strict=True):
        name = str(name).strip()
        info = parse_clip_name(name, f"{path}:{line}")
        if name in exclude:
            excluded.append(name)
            continue
        ratings = [(label,) for label, n in zip(VOTE_COLUMNS.values(), votes, strict=True) for _ in range(int(n))]
        utterances.append(
            Utterance(
                utt_id=name,
                ratings=ratings,
                audio_path=str(root / AUDIO_DIR / f"{name}.wav"),
                speaker=info["speaker"],
                gender=gender.get(info["speaker"], ""),
                transcript=info["transcript"],
                intended=info["intended"],
                extra={"intensity": info["intensity"]},
            )
        )
    unknown_excludes = sorted(exclude - set(rows["fileName"].astype(str)))
    if unknown_excludes:
        raise DataError(f"params datasets.crema-d.exclude names clip(s) not in {path}: {unknown_excludes}")
    return Corpus(utterances, vocabulary=frozenset(VOTE_COLUMNS.values()), excluded={"excluded_in_params": excluded})
