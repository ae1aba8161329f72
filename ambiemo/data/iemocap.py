"""IEMOCAP (Busso et al. 2008), from the layout of ``IEMOCAP_full_release``.

    <root>/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt        evaluations of every turn
    <root>/Session{1..5}/dialog/transcriptions/<dialog>.txt       transcripts (optional)
    <root>/Session{1..5}/sentences/wav/<dialog>/<utt_id>.wav      audio

An evaluation file is a sequence of turns separated by blank lines::

    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
    C-E2:<TAB>Neutral;<TAB>()
    C-E3:<TAB>Frustration; Anger;<TAB>(annoyed)
    C-F1:<TAB>Neutral;<TAB>(curious)
    A-E3:<TAB>val 3; act 2; dom  2;<TAB>()

The header carries the turn's time span, id, the consensus label (``xxx`` when the raters
did not agree) and mean valence/activation/dominance. ``C-E*`` lines are the external
raters' categorical labels, several ``;``-separated categories possible; ``C-F*`` and
``C-M*`` are the actors' own evaluations of themselves (counted only with params
``self_evaluations: true``, otherwise skipped before they are read); ``A-*`` lines are
dimensional ratings (not used here; their spacing varies). What the real release also
holds, and how it is read:

- an empty category field (``C-F2:<TAB>;<TAB>()``): a rating without a category, counted
  as ``ratings_without_category`` and not a vote;
- ``Other;`` with its free text in the comment (``(confused)``): category ``other``; the
  ratings table keeps ``Other (confused)`` as given;
- raters not numbered consecutively (``C-E1``, ``C-E2``, ``C-E6``): ids kept as given (``E6``);
- ``Categorical/``, ``Attribute/``, ``Self-evaluation/`` subfolders (per-rater copies of the
  same judgements): not read, named in the manifest's ``source``;
- ``._*`` resource forks from Mac copies, and any other non-``.txt`` file: ignored, counted.

A line that is none of these (no rater field, an unknown category) is an error naming
file and line.

Categories become lowercase words: Neutral (state) -> neutral, Happiness -> happy, Excited
-> excited (the label set ``four`` merges it into happy; AER-LLM's recipe, the label set ``aer-llm``
with ``votes: drop_votes``, drops it as "others" and renormalises), Anger -> angry, Sadness -> sad,
Frustration -> frustrated, Surprise -> surprised, Fear -> fear, Disgust -> disgust,
Other (with or without a description) -> other. IEMOCAP has no acted emotion per
utterance, so ``intended`` is empty; the header's consensus code is kept as ``consensus``.
``split`` is the session (``Session1`` ... ``Session5``), the usual cross-validation fold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ambiemo.data import Corpus, DataError, Rating, Utterance, register_dataset
from ambiemo.data.corpus import check_exclusions

CATEGORIES = {
    "neutral": "neutral",
    "neutral state": "neutral",
    "happiness": "happy",
    "excited": "excited",
    "anger": "angry",
    "sadness": "sad",
    "frustration": "frustrated",
    "surprise": "surprised",
    "fear": "fear",
    "disgust": "disgust",
    "other": "other",
}
HEADER = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<utt>\S+)\s+(?P<emo>\S+)\s+\[[^\]]*\]\s*$"
)
RATER = re.compile(r"^C-(?P<rater>[EFM]\d+):$")
TRANSCRIPT = re.compile(r"^(?P<utt>Ses\d\d[FM]_\S+_[FM]\d+)\s+\[[\d.]+-[\d.]+\]:\s*(?P<text>.*)$")


def parse_category(raw: str, where: str) -> str:
    name = raw.strip().lower()
    if name.startswith("other"):  # "Other" or "Other: <free text>"
        return "other"
    if name not in CATEGORIES:
        raise DataError(
            f"{where}: unknown IEMOCAP category {raw.strip()!r}; known: {sorted({k.title() for k in CATEGORIES})}"
        )
    return CATEGORIES[name]


def _rating(fields: list[str], line: str, where: str, self_evaluations: bool) -> Rating | None:
    """One ``C-`` line as a rating; None for a self-evaluation skipped (before its categories are read)."""
    m = RATER.match(fields[0].strip())
    if not m or len(fields) < 2:
        raise DataError(f"{where}: malformed categorical line {line!r}; expected 'C-E1:<TAB>Cat; Cat;<TAB>(comment)'")
    rater = m["rater"]
    self_eval = rater[0] != "E"
    if self_eval and not self_evaluations:
        return None
    given = tuple(c.strip() for c in fields[1].split(";") if c.strip())
    comment = fields[2].strip().strip("()").strip() if len(fields) > 2 else ""
    # "Other;" carries its free text in the comment: keep it with the category as given.
    given = tuple(f"{g} ({comment})" if g.lower() == "other" and comment else g for g in given)
    cats = tuple(parse_category(c, where) for c in given)
    return Rating(rater, cats, given=given, self_eval=self_eval)  # no category: counted by prepare


def parse_evaluation(path: Path, self_evaluations: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Turns of one EmoEvaluation file: [{utt_id, consensus, ratings}], and self-evaluations skipped.

    A rater's line with an empty category field (``C-F2:<TAB>;<TAB>()``) is a rating without a
    category, passed on for ``prepare_dataset`` to count; a self-evaluation is skipped before its
    categories are read when ``self_evaluations`` is off.
    """
    turns: list[dict[str, Any]] = []
    skipped_self = 0
    current: dict[str, Any] | None = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        where = f"{path}:{lineno}"
        if not line.strip() or line.startswith("%"):
            continue
        if line.startswith("["):
            m = HEADER.match(line)
            if not m:
                raise DataError(
                    f"{where}: malformed turn header {line!r}; expected "
                    "'[start - end]<TAB>utt_id<TAB>emo<TAB>[V, A, D]'"
                )
            current = {"utt_id": m["utt"], "consensus": m["emo"], "ratings": [], "where": where}
            turns.append(current)
        elif line.startswith("C-"):
            if current is None:
                raise DataError(f"{where}: categorical line before any turn header")
            rating = _rating(line.split("\t"), line, where, self_evaluations)
            if rating is None:
                skipped_self += 1
            else:
                current["ratings"].append(rating)
        elif line.startswith("A-"):
            continue  # dimensional ratings, spacing irregular across files: not read
        else:
            raise DataError(f"{where}: unexpected line {line!r} (not a turn header, C- or A- line)")
    return turns, skipped_self


def evaluation_files(root: Path) -> tuple[list[Path], dict[str, Any]]:
    """The per-dialog EmoEvaluation files, and what was found beside them (ignored, counted)."""
    sessions = sorted(p for p in root.glob("Session*") if p.is_dir())
    files, ignored, subfolders = [], 0, set()
    for s in sessions:
        folder = s / "dialog" / "EmoEvaluation"
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            if p.is_dir():
                subfolders.add(p.name)  # Categorical/, Attribute/, Self-evaluation/: per-rater copies
            elif p.suffix == ".txt" and not p.name.startswith("."):
                files.append(p)
            else:
                ignored += 1  # ._* resource forks of Mac copies, editor backups ...
    source = {
        "layout": "IEMOCAP_full_release: Session*/dialog/EmoEvaluation/<dialog>.txt",
        "sessions": [s.name for s in sessions],
        "files_read": len(files),
        "files_ignored": ignored,
        "subfolders_not_read": sorted(subfolders),
    }
    return files, source


def read_transcripts(path: Path) -> dict[str, str]:
    """utt_id -> text from a transcriptions file; lines for other ids (MX*, FX*) are skipped."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = TRANSCRIPT.match(line.strip())
        if m:
            out[m["utt"]] = m["text"].strip()
    return out


@register_dataset("iemocap")
def load_iemocap(root: Path, spec: Mapping[str, Any]) -> Corpus:
    """params ``datasets.iemocap``: ``self_evaluations`` (bool), ``exclude`` (utterance ids)."""
    self_eval = bool(spec.get("self_evaluations", False))
    exclude = {str(x) for x in spec.get("exclude") or []}
    files, source = evaluation_files(root)
    if not files:
        raise DataError(
            f"{root}: no Session*/dialog/EmoEvaluation/*.txt; root should be the IEMOCAP_full_release folder"
        )
    utterances: list[Utterance] = []
    excluded: list[str] = []
    skipped = 0
    for path in files:
        session = path.parents[2].name
        dialog = path.stem
        transcripts = read_transcripts(path.parents[1] / "transcriptions" / f"{dialog}.txt")
        turns, n_self = parse_evaluation(path, self_eval)
        skipped += n_self
        for t in turns:
            utt = t["utt_id"]
            if not utt.startswith(dialog + "_"):
                raise DataError(f"{t['where']}: turn {utt} does not belong to dialog {dialog}")
            if utt in exclude:
                excluded.append(utt)
                continue
            letter = utt.rsplit("_", 1)[1][0]  # F000 / M012: who speaks this turn
            utterances.append(
                Utterance(
                    utt_id=utt,
                    ratings=t["ratings"],
                    audio_path=str(root / session / "sentences" / "wav" / dialog / f"{utt}.wav"),
                    speaker=f"{utt[:5]}{letter}",
                    gender={"F": "female", "M": "male"}.get(letter, ""),
                    split=session,
                    transcript=transcripts.get(utt, ""),
                    extra={"consensus": t["consensus"]},
                )
            )
    check_exclusions("iemocap", exclude, utterances, excluded, f"utterance(s) not in {root}")
    return Corpus(
        utterances,
        vocabulary=frozenset(CATEGORIES.values()),
        excluded={"excluded_in_params": excluded},
        dropped_votes={"self_evaluations": float(skipped)} if skipped else {},
        source=source,
    )
