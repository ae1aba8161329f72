"""MSP-Podcast (Lotfian & Busso 2019), from the layout of its releases.

    <root>/Labels/labels_consensus.csv     one row per segment (older releases: labels_concensus.csv)
    <root>/Labels/labels_detailed.csv      one row per segment x annotator (or labels_detailed.json)
    <root>/Audios/<FileName>               audio
    <root>/Transcripts/<stem>.txt          transcripts, where the release has them

``labels_consensus.csv`` has ``FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
Split_Set``: the segments, their speaker, gender and official split (Train, Development,
Test1, Test2, Test3 ...); EmoClass (A, H, S, N, U, F, D, C, O, X = no agreement) is kept
as the extra column ``consensus``. Per-annotator labels come from
``labels_detailed.csv`` (columns ``FileName`` and ``EmoClass_Major``, or ``EmoClass`` in
some releases; a worker column is not needed) or ``labels_detailed.json``
(``{FileName: {worker: {"EmoClass_Major": ..., ...}}}``). A primary label is one category:
Angry -> angry, Sad -> sad, Happy -> happy, Neutral -> neutral, Surprise -> surprised,
Fear -> fear, Disgust -> disgust, Contempt -> contempt, ``Other`` or ``Other-<free text>``
-> other. An unknown label is an error naming file and line.

params ``splits`` keeps only the listed ``Split_Set`` values (null keeps all); segments of
other splits are counted under ``split_not_selected``. MSP-Podcast has no acted emotion:
``intended`` is empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.data import Corpus, DataError, Utterance, register_dataset

CONSENSUS_FILES = ("Labels/labels_consensus.csv", "Labels/labels_concensus.csv")
DETAILED_FILES = ("Labels/labels_detailed.csv", "Labels/labels_detailed.json")
CATEGORIES = {
    "angry": "angry",
    "anger": "angry",
    "sad": "sad",
    "sadness": "sad",
    "happy": "happy",
    "happiness": "happy",
    "neutral": "neutral",
    "surprise": "surprised",
    "fear": "fear",
    "disgust": "disgust",
    "contempt": "contempt",
    "other": "other",
}
CONSENSUS_COLUMNS = ("FileName", "SpkrID", "Gender", "Split_Set")


def parse_category(raw: Any, where: str) -> str:
    name = str(raw).strip().lower()
    if name.startswith("other"):  # "Other" or "Other-Concerned"
        return "other"
    if name not in CATEGORIES:
        raise DataError(
            f"{where}: unknown MSP-Podcast emotion {str(raw).strip()!r}; known: "
            f"{sorted({k.title() for k in CATEGORIES})} and Other-<text>"
        )
    return CATEGORIES[name]


def _first_existing(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no {what} ({' or '.join(names)}); root should be the MSP-Podcast folder holding Labels/")


def read_detailed(path: Path) -> dict[str, list[tuple[str, ...]]]:
    """FileName -> one single-category tuple per annotator."""
    ratings: dict[str, list[tuple[str, ...]]] = {}
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected {{FileName: {{worker: {{EmoClass_Major: ...}}}}}}")
        for file, workers in data.items():
            if not isinstance(workers, dict):
                raise DataError(f"{path}: entry {file!r} is not a mapping of workers")
            for worker, rating in workers.items():
                label = rating.get("EmoClass_Major") if isinstance(rating, dict) else None
                if label is None:
                    raise DataError(f"{path}: {file!r} worker {worker!r} has no EmoClass_Major")
                ratings.setdefault(str(file), []).append((parse_category(label, f"{path}: {file} {worker}"),))
        return ratings
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    column = next((c for c in ("EmoClass_Major", "EmoClass") if c in table.columns), None)
    if "FileName" not in table.columns or column is None:
        raise DataError(f"{path}: needs columns FileName and EmoClass_Major (or EmoClass); has {list(table.columns)}")
    # Map each distinct raw label once (hundreds of thousands of rows, a handful of values).
    labels = {}
    for raw in table[column].unique():
        first = int((table[column] == raw).to_numpy().argmax())
        labels[raw] = parse_category(raw, f"{path}:{first + 2}")
    for file, label in zip(table["FileName"], table[column].map(labels), strict=True):
        ratings.setdefault(file, []).append((label,))
    return ratings


def _norm_gender(raw: str) -> str:
    g = str(raw).strip().lower()
    return g if g in ("female", "male") else ""


@register_dataset("msp-podcast")
def load_msp_podcast(root: Path, spec: Mapping[str, Any]) -> Corpus:
    """params ``datasets.msp-podcast``: ``splits`` (Split_Set values, null = all), ``exclude`` (ids)."""
    consensus_path = _first_existing(root, CONSENSUS_FILES, "consensus labels")
    detailed_path = _first_existing(root, DETAILED_FILES, "per-annotator labels")
    table = pd.read_csv(consensus_path, dtype=str, keep_default_na=False)
    missing = [c for c in CONSENSUS_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{consensus_path}: missing column(s) {missing}")
    splits = spec.get("splits")
    if splits is not None:
        unknown = sorted(set(map(str, splits)) - set(table["Split_Set"]))
        if unknown:
            raise DataError(
                f"params datasets.msp-podcast.splits has {unknown}, not a Split_Set of {consensus_path}; "
                f"present: {sorted(set(table['Split_Set']))}"
            )
        keep = table["Split_Set"].isin([str(s) for s in splits])
        not_selected = int((~keep).sum())
        table = table[keep]
    else:
        not_selected = 0
    ratings = read_detailed(detailed_path)
    exclude = {str(x) for x in spec.get("exclude") or []}
    transcripts = root / "Transcripts"
    utterances, excluded = [], []
    for row in table.itertuples(index=False):
        file = str(row.FileName).strip()
        stem = file[:-4] if file.lower().endswith(".wav") else file
        if stem in exclude:
            excluded.append(stem)
            continue
        text_path = transcripts / f"{stem}.txt"
        speaker = str(row.SpkrID).strip()
        utterances.append(
            Utterance(
                utt_id=stem,
                ratings=ratings.get(file, ratings.get(stem, [])),
                audio_path=str(root / "Audios" / (file if file.lower().endswith(".wav") else f"{file}.wav")),
                speaker="" if speaker.lower() == "unknown" else speaker,
                gender=_norm_gender(row.Gender),
                split=str(row.Split_Set),
                transcript=text_path.read_text(errors="replace").strip() if text_path.is_file() else "",
                extra={"consensus": str(getattr(row, "EmoClass", ""))},
            )
        )
    unknown_ex = sorted(exclude - {u.utt_id for u in utterances} - set(excluded))
    if unknown_ex:
        raise DataError(
            f"params datasets.msp-podcast.exclude names segment(s) not in the selected splits: {unknown_ex[:5]}"
        )
    return Corpus(
        utterances,
        vocabulary=frozenset(CATEGORIES.values()),
        excluded={"excluded_in_params": excluded},
        filtered={"split_not_selected": not_selected} if not_selected else {},
    )
