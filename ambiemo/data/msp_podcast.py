"""MSP-Podcast (Lotfian & Busso 2019), from the layout of its releases, detected from the files.

    <root>/<labels folder>/labels_consensus.csv   one row per segment
    <root>/<labels folder>/labels_detailed.csv    one row per segment x annotator (and/or .json)
    <root>/Audios/<FileName>                      audio
    <root>/Transcripts/<stem>.txt                 transcripts, where the release has them

The labels folder is ``Labels/`` (release 1.9: ``labels/``, 1.6: ``label/``); the consensus
table is ``labels_consensus.csv`` (``labels_concensus.csv`` up to 1.9), with ``FileName,
EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set``: the segments, their speaker,
gender and official split (Train, Development, Test1, Test2, Test3; older releases:
Validation); EmoClass (A, H, S, N, U, F, D, C, O, X = no agreement) is kept as the extra
column ``consensus``. Per-annotator labels come in one of these forms:

- ``labels_detailed.csv`` with ``FileName, WorkerID, EmoClass_Major, EmoClass_Second, EmoAct,
  EmoVal, EmoDom`` (release 2.0; spaces after the commas are allowed);
- ``labels_detailed.csv`` with ``FileName, EmoDetail`` (releases 1.7 to 1.12), each EmoDetail
  ``"WORKER00014; Angry; Frustrated,Annoyed; A:4.0; V:2.0; D:5.0;"`` (worker; primary;
  comma-separated secondary emotions; attributes);
- ``labels_detailed.csv`` with separate columns and no worker id (release 1.6 as this loader
  knows it: ``FileName`` and ``EmoClass_Major`` or ``EmoClass``; raters become ``r0``, ``r1`` ...);
- ``labels_detailed.json``: ``{FileName: {worker: {"EmoClass_Major": ..., "EmoClass_Second": ...}}}``.

Where a release ships both the CSV and the JSON, the CSV is read (it is the form every
release has) and the JSON is compared with it: segments whose (worker, primary) ratings
differ are counted in the manifest's ``source`` as ``csv_json_disagreements``.

A primary label is one category: Angry -> angry, Sad -> sad, Happy -> happy, Neutral ->
neutral, Surprise -> surprised, Fear -> fear, Disgust -> disgust, Contempt -> contempt,
``Other`` or ``Other-<free text>`` -> other; an unknown primary label is an error naming
file and line. Secondary emotions are an open list (Frustrated, Annoyed, Amused ...): kept
as lowercase words, mapped where they name a primary category. A worker listed twice for a
segment is resolved by params ``duplicate_raters`` (``ambiemo.data``). A listed segment
without its audio file is an exclusion (``audio_missing``) within params ``max_missing_audio``.

params ``splits`` keeps only the listed ``Split_Set`` values (null keeps all); segments of
other splits are counted under ``split_not_selected``. MSP-Podcast has no acted emotion:
``intended`` is empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ambiemo.data import Corpus, DataError, Rating, Utterance, register_dataset
from ambiemo.data.corpus import check_exclusions

LABEL_FOLDERS = ("Labels", "labels", "label")
CONSENSUS_NAMES = ("labels_consensus.csv", "labels_concensus.csv")
DETAILED_NAMES = ("labels_detailed.csv", "labels_detailed.json")
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
ATTRIBUTE = re.compile(r"^[AVD]:\s*(?P<value>\S+)$")


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


def parse_secondary(raw: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Secondary emotions as words and as given, from ``"Frustrated,Annoyed"`` (open vocabulary)."""
    given = tuple(x.strip() for x in str(raw or "").split(",") if x.strip())
    words = tuple("other" if g.lower().startswith("other") else CATEGORIES.get(g.lower(), g.lower()) for g in given)
    return words, given


def _rating(worker: str, primary: Any, secondary: Any, where: str) -> Rating:
    words, given = parse_secondary(secondary)
    raw = str(primary).strip()
    return Rating(worker, (parse_category(raw, where),), given=(raw,), secondary=words, secondary_given=given)


def find_labels(root: Path) -> tuple[Path, Path, list[Path]]:
    """The labels folder, its consensus table and its per-annotator files (CSV first)."""
    for folder in (root / f for f in LABEL_FOLDERS):
        consensus = next((folder / n for n in CONSENSUS_NAMES if (folder / n).is_file()), None)
        if consensus is not None:
            detailed = [folder / n for n in DETAILED_NAMES if (folder / n).is_file()]
            if not detailed:
                raise DataError(f"{folder}: no per-annotator labels ({' or '.join(DETAILED_NAMES)})")
            return folder, consensus, detailed
    raise DataError(
        f"{root}: no {' or '.join(CONSENSUS_NAMES)} in {', '.join(f + '/' for f in LABEL_FOLDERS)}; "
        "root should be the MSP-Podcast folder holding the labels folder and Audios/"
    )


def read_detailed_json(path: Path) -> dict[str, list[Rating]]:
    """FileName -> ratings, from ``labels_detailed.json``."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected {{FileName: {{worker: {{EmoClass_Major: ...}}}}}}")
    ratings: dict[str, list[Rating]] = {}
    for file, workers in data.items():
        if not isinstance(workers, dict):
            raise DataError(f"{path}: entry {file!r} is not a mapping of workers")
        for worker, rating in workers.items():
            label = rating.get("EmoClass_Major") if isinstance(rating, dict) else None
            if label is None:
                raise DataError(f"{path}: {file!r} worker {worker!r} has no EmoClass_Major")
            second = rating.get("EmoClass_Second", "")
            ratings.setdefault(str(file), []).append(_rating(str(worker), label, second, f"{path}: {file} {worker}"))
    return ratings


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_emo_detail(detail: str, where: str) -> Rating:
    """One ``EmoDetail`` cell: ``WORKER; Primary; Second,Second; A:x; V:x; D:x;``."""
    parts = [p.strip() for p in str(detail).split(";")]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DataError(f"{where}: EmoDetail {detail!r} is not 'WORKER; Primary; Secondary; A:x; V:x; D:x;'")
    for attr in parts[3:]:
        m = ATTRIBUTE.match(attr)
        if not m or not _is_number(m["value"]):
            raise DataError(f"{where}: EmoDetail attribute {attr!r} is not A:/V:/D: with a number")
    return _rating(parts[0], parts[1], parts[2] if len(parts) > 2 else "", where)


def read_detailed_csv(path: Path) -> tuple[dict[str, list[Rating]], str]:
    """FileName -> ratings from ``labels_detailed.csv``, and the form it was in."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    ratings: dict[str, list[Rating]] = {}
    lines = range(2, len(table) + 2)
    if "FileName" not in table.columns:
        raise DataError(f"{path}: needs a FileName column; has {list(table.columns)}")
    files = table["FileName"].str.strip()
    if "EmoDetail" in table.columns:
        for file, detail, line in zip(files, table["EmoDetail"], lines, strict=True):
            ratings.setdefault(file, []).append(parse_emo_detail(detail, f"{path}:{line}"))
        return ratings, "FileName,EmoDetail (releases 1.7-1.12)"
    column = next((c for c in ("EmoClass_Major", "EmoClass") if c in table.columns), None)
    if column is None:
        raise DataError(
            f"{path}: needs columns FileName and EmoDetail, or EmoClass_Major (or EmoClass); has {list(table.columns)}"
        )
    workers = table["WorkerID"].str.strip() if "WorkerID" in table.columns else None
    second = table["EmoClass_Second"] if "EmoClass_Second" in table.columns else pd.Series([""] * len(table))
    # Map each distinct raw label once (hundreds of thousands of rows, a handful of values).
    labels = {}
    for raw in table[column].unique():
        first = int((table[column] == raw).to_numpy().argmax())
        labels[raw] = parse_category(raw, f"{path}:{first + 2}")
    for i, (file, raw, sec) in enumerate(zip(files, table[column], second, strict=True)):
        worker = workers.iat[i] if workers is not None else f"r{len(ratings.get(file, []))}"
        words, given = parse_secondary(sec)
        rating = Rating(worker, (labels[raw],), given=(raw.strip(),), secondary=words, secondary_given=given)
        ratings.setdefault(file, []).append(rating)
    form = "WorkerID, EmoClass_Major, EmoClass_Second (release 2.0)" if workers is not None else "per-column, no worker"
    return ratings, form


def _disagreements(a: dict[str, list[Rating]], b: dict[str, list[Rating]]) -> int:
    """Segments whose (worker, primary) ratings differ between two copies of the votes."""

    def key(rs: list[Rating]) -> list[tuple[str, tuple[str, ...]]]:
        return sorted((r.rater, r.categories) for r in rs)

    return sum(key(a.get(f, [])) != key(b.get(f, [])) for f in set(a) | set(b))


def read_detailed(paths: list[Path]) -> tuple[dict[str, list[Rating]], dict[str, Any]]:
    """The per-annotator ratings (CSV where present, else JSON) and what was read."""
    csv = next((p for p in paths if p.suffix == ".csv"), None)
    js = next((p for p in paths if p.suffix == ".json"), None)
    if csv is None:
        return read_detailed_json(js), {"detailed": js.name, "detailed_form": "JSON {file: {worker: {...}}}"}
    ratings, form = read_detailed_csv(csv)
    info: dict[str, Any] = {"detailed": csv.name, "detailed_form": form}
    if js is not None:
        info["also_present"] = js.name
        info["choice"] = "CSV read; JSON compared"
        info["csv_json_disagreements"] = _disagreements(ratings, read_detailed_json(js))
    return ratings, info


def _norm_gender(raw: str) -> str:
    g = str(raw).strip().lower()
    return g if g in ("female", "male") else ""


@register_dataset("msp-podcast")
def load_msp_podcast(root: Path, spec: Mapping[str, Any]) -> Corpus:
    """params ``datasets.msp-podcast``: ``splits`` (Split_Set values, null = all), ``exclude`` (ids)."""
    folder, consensus_path, detailed_paths = find_labels(root)
    table = pd.read_csv(consensus_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
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
    ratings, detailed_info = read_detailed(detailed_paths)
    source = {
        "layout": f"MSP-Podcast: {folder.name}/{consensus_path.name} + {folder.name}/{detailed_info['detailed']}",
        "files_read": [f"{folder.name}/{consensus_path.name}", f"{folder.name}/{detailed_info['detailed']}"],
        **detailed_info,
        "split_sets": sorted(set(table["Split_Set"])),
    }
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
    check_exclusions("msp-podcast", exclude, utterances, excluded, "segment(s) not in the selected splits")
    return Corpus(
        utterances,
        vocabulary=frozenset(CATEGORIES.values()),
        excluded={"excluded_in_params": excluded},
        filtered={"split_not_selected": not_selected} if not_selected else {},
        source=source,
    )
