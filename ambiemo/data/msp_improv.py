"""MSP-IMPROV (Busso et al. 2017), from the layout its release is publicly described in.

    <root>/Evaluation.txt                                   per-rater evaluations of every turn
    <root>/session<k>/<scenario>/<type>/MSP-IMPROV-<id>.wav  audio

``Evaluation.txt`` is a sequence of blocks: a turn line with the video name, the consensus
code (A, H, S, N, O, X = no agreement) and the mean attributes, then one line per rater::

    UTD-IMPROV-S01A-F01-R-MM01.avi; A; A:4.0; V:2.0; D:3.0 ; N:3.0;
    rater-7; Angry; Frustrated, Annoyed; A:4.0; V:2.0; D:3.0; N:3.0;

A rater line is: rater id; primary (Angry, Happy, Sad, Neutral, Other); secondary emotions
(free text, comma-separated; kept in the ratings table); activation, valence, dominance,
naturalness. The turn id ``S01A-F01-R-MM01`` gives the scenario sentence (``S01``), the
target emotion of the scenario (``A`` angry, ``H`` happy, ``S`` sad, ``N`` neutral: the
``intended`` column), the speaker (``F01``: gender and session), the recording type
(``R`` read, ``P`` improvised target sentence, ``S`` spontaneous, ``T`` natural
interaction; kept as ``recording``) and the audio is looked for at
``session<k>/S01A/<type>/MSP-IMPROV-S01A-F01-R-MM01.wav``. ``split`` is the session.

Not verified from public sources (this loader was written from code that reads the
release, not from the release): the exact spacing around ``;`` (any is accepted); whether
every rater line carries all four attributes (missing ones are accepted, an unreadable
number is an error naming file and line); the set of secondary-emotion words (kept as
given); the name of the secondary field's "none" value (an empty field is no secondary
emotion). Raters repeated within a turn are known to occur (copied lines); params
``duplicate_raters`` decides (``ambiemo.data``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ambiemo.data import Corpus, DataError, Rating, Utterance, register_dataset
from ambiemo.data.corpus import check_exclusions

EVALUATION_FILE = "Evaluation.txt"
CATEGORIES = {"angry": "angry", "happy": "happy", "sad": "sad", "neutral": "neutral", "other": "other"}
TARGETS = {"A": "angry", "H": "happy", "S": "sad", "N": "neutral"}
TURN = re.compile(
    r"^UTD-IMPROV-(?P<id>S(?P<sentence>\d\d)(?P<target>[AHSN])-(?P<spk>[FM]\d\d)-(?P<type>[PRST])-\w+)\.avi\s*;(?P<rest>.*)$"
)
ATTRIBUTE = re.compile(r"^[AVDN]:\s*(?P<value>\S+)$")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_rater_line(line: str, where: str) -> Rating:
    parts = [p.strip() for p in line.split(";")]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DataError(f"{where}: rater line {line!r} is not 'rater; Primary; secondary; A:x; V:x; D:x; N:x;'")
    primary = parts[1]
    if primary.lower() not in CATEGORIES:
        raise DataError(
            f"{where}: unknown MSP-IMPROV emotion {primary!r}; known: {sorted(k.title() for k in CATEGORIES)}"
        )
    has_secondary = len(parts) > 2 and not ATTRIBUTE.match(parts[2])
    for attr in parts[3 if has_secondary else 2 :]:
        m = ATTRIBUTE.match(attr)
        if not m or not (_number(m["value"]) or m["value"] == "NaN"):
            raise DataError(f"{where}: attribute {attr!r} is not A:/V:/D:/N: with a number")
    given = tuple(x.strip() for x in parts[2].split(",") if x.strip()) if has_secondary else ()
    words = tuple(CATEGORIES.get(g.lower(), g.lower()) for g in given)
    return Rating(parts[0], (CATEGORIES[primary.lower()],), given=(primary,), secondary=words, secondary_given=given)


def parse_evaluation(path: Path) -> list[dict[str, Any]]:
    """The turns of ``Evaluation.txt``: [{id, match, consensus, ratings, where}]."""
    turns: list[dict[str, Any]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        where = f"{path}:{lineno}"
        text = line.strip()
        if not text:
            continue
        m = TURN.match(text)
        if m:
            consensus = m["rest"].split(";")[0].strip()
            turns.append({"m": m, "consensus": consensus, "ratings": [], "where": where})
        elif text.startswith("UTD-"):
            raise DataError(f"{where}: malformed turn line {text!r}; expected 'UTD-IMPROV-S01A-F01-R-MM01.avi; A; ...'")
        elif not turns:
            raise DataError(f"{where}: rater line before any turn line")
        else:
            turns[-1]["ratings"].append(parse_rater_line(text, where))
    return turns


@register_dataset("msp-improv")
def load_msp_improv(root: Path, spec: Mapping[str, Any]) -> Corpus:
    """params ``datasets.msp-improv``: ``exclude`` (turn ids, ``MSP-IMPROV-S01A-F01-R-MM01``)."""
    path = root / EVALUATION_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; root should be the MSP-IMPROV folder holding Evaluation.txt and session*/")
    exclude = {str(x) for x in spec.get("exclude") or []}
    utterances, excluded = [], []
    for t in parse_evaluation(path):
        m = t["m"]
        utt = f"MSP-IMPROV-{m['id']}"
        if utt in exclude:
            excluded.append(utt)
            continue
        scenario = f"S{m['sentence']}{m['target']}"
        session = f"session{int(m['spk'][1:])}"
        utterances.append(
            Utterance(
                utt_id=utt,
                ratings=t["ratings"],
                audio_path=str(root / session / scenario / m["type"] / f"{utt}.wav"),
                speaker=m["spk"],
                gender={"F": "female", "M": "male"}[m["spk"][0]],
                split=session,
                intended=TARGETS[m["target"]],
                extra={"consensus": t["consensus"], "recording": m["type"]},
            )
        )
    check_exclusions("msp-improv", exclude, utterances, excluded, f"turn(s) not in {path}")
    return Corpus(
        utterances,
        vocabulary=frozenset(CATEGORIES.values()),
        excluded={"excluded_in_params": excluded},
        source={
            "layout": "MSP-IMPROV: Evaluation.txt + session*/<scenario>/<type>/*.wav",
            "files_read": [EVALUATION_FILE],
        },
    )
