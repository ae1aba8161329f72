"""Reading a model's answer as a probability distribution over a label set.

``parse_distribution(text, labels)`` returns an array over ``labels`` (in that order, summing
to 1) or ``None``. It reads, in this order of preference *by position in the text* (the answer
that comes last wins, so a chain of thought that weighs several labels before its final answer
is read by that final answer):

1. an object ``{...}`` of ``label: value`` pairs: JSON, a Python dict, or unquoted keys;
2. a ``label: value`` list outside braces (``happy: 0.6, sad: 0.4``, one pair per line, bullets);
3. an explicit answer ``emotion: sad`` / ``The emotion is sad.`` / ``{"answer": "sad"}`` / a bare
   label (``Sad.``), read as one-hot.

Values may be probabilities, scores, percentages (``60%``, ``60 percent``) or simple number words
(``zero``, ``twenty-five``, ``half``). Keys may use another case, an inflection or a common
synonym of a label (``anger``/``mad`` -> ``angry``; see ``SYNONYM_GROUPS``). The values over the
label set are renormalised to sum to 1: a model answering ``0.9`` in total, or ``100``, is read
as it evidently meant.

What is *not* guessed (the answer is then ``None``, counted as a parse failure):
- an object or list that names the same label twice (``happy`` and ``joy``), has a negative,
  non-finite or unreadable value for a label, mixes percentages with plain numbers (``60%`` and
  ``0.4``), or whose label values sum to zero;
- a text mentioning labels only in prose (``it could be angry or sad``);
- empty output.
Keys outside the label set (``surprise: 0.2``) are left out and the rest renormalised: the
answer is read as the model's distribution *conditioned on the label set*, the same conditioning
that a manifest built with the ``drop_votes`` policy applies to the annotators' votes.

What a failed parse contributes to the metrics is one policy from params (``parsing.on_failure``),
applied by ``ambiemo.core.failures.apply_failure_policy``, the same for every model and strategy. No random fallback.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ambiemo.core.failures import one_hot

# Words read as a label, grouped by concept. A word maps to the label of its group that is in the
# label set; a word that is itself a label of the set always means that label (RAVDESS has both
# ``neutral`` and ``calm``), and a word whose group holds two labels of the set is ambiguous and
# not read at all.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("neutral", "neutrality", "calm", "neutral state"),
    ("happy", "happiness", "joy", "joyful", "glad"),
    ("angry", "anger", "mad", "angered"),
    ("sad", "sadness", "sorrow", "sorrowful"),
    ("fear", "fearful", "scared", "afraid", "fearfulness"),
    ("disgust", "disgusted", "disgusting"),
    ("surprise", "surprised"),
    ("contempt", "contemptuous"),
    ("frustrated", "frustration"),
    ("excited", "excitement"),
    ("other",),
)

# Keys whose value names the answer as a word: {"emotion": "sad"}, "Final answer: sad".
ANSWER_KEYS = frozenset(
    {
        "answer",
        "final answer",
        "emotion",
        "label",
        "prediction",
        "predicted emotion",
        "predicted label",
        "final emotion",
        "class",
    }
)

_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_FRACTIONS = {
    "half": 0.5,
    "a half": 0.5,
    "one half": 0.5,
    "quarter": 0.25,
    "a quarter": 0.25,
    "one quarter": 0.25,
    "hundred": 100.0,
    "a hundred": 100.0,
    "one hundred": 100.0,
    "none": 0.0,
}

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_WORDNUM = (
    r"(?:(?:" + "|".join(_TENS) + r")(?:[\s-](?:one|two|three|four|five|six|seven|eight|nine))?"
    r"|(?:a |one )?(?:half|quarter|hundred)|none|" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")"
)
_PCT = r"\s*(?:%|percent\b|per\s+cent\b)"
_VALUE_RE = re.compile(rf"(?P<num>{_NUM}|\b{_WORDNUM}\b)(?P<pct>{_PCT})?", re.IGNORECASE)

# A `key: value` pair in running text: a one-word key (optionally in markdown bold or quotes),
# `:` or `=`, then a numeric value.
_LIST_PAIR_RE = re.compile(
    rf"(?<![A-Za-z])[*_\"'`]*(?P<key>[A-Za-z]+)[*_\"'`]*\s*[:=]\s*[*_\"'`]*"
    rf"(?P<value>(?:{_NUM}|\b{_WORDNUM}\b)(?:{_PCT})?)(?!\s*/\s*\d)",  # "1/2" is no value we read
    re.IGNORECASE,
)
# What may separate two pairs of one list: spaces, commas, bullets, list numbers, "and", a short
# parenthetical ("happy: 0.6 (60%), sad: 0.4") or a dash comment to the end of the line
# ("happy: 0.6 - upbeat tone\nsad: 0.4"). Atomic groups keep the match linear on long gaps.
_LIST_GAP_RE = re.compile(
    r"(?:(?>[-–—]\s[^\n:=]{0,80}(?=\n)|\([^()\n]{0,80}\)|and\b|\d+[.)]|[\s,;|*•·\-–—\"'`]))*",
    re.IGNORECASE,
)
# "Answer: sad", "**Emotion:** Sad.", "The emotion is sad." -- the word must end its clause, so that
# "the emotion is angry or sad" and "the emotion is not sad" are not read.
_ANSWER_RE = re.compile(
    r"(?<![A-Za-z])(?P<key>final answer|predicted emotion|predicted label|final emotion|answer|emotion|label|"
    r"prediction|class)(?:[*_\s]*[:=][*_\s]*|\s+(?:is|would be)\s+)[\"'`]?(?P<word>[A-Za-z]+)[\"'`*_]*"
    r"(?=\s*(?:[.!,;]|$))",
    re.IGNORECASE | re.MULTILINE,
)
_STRIP_CHARS = " \t\r\n.!,;:*_`\"'()[]"
_VALUE_STRIP = " \t\r\n*_`\"'"


def _norm(word: str) -> str:
    """Lower case, markdown and quotes off, runs of spaces/underscores/hyphens as one space."""
    word = word.strip(_STRIP_CHARS).lower()
    return re.sub(r"[\s_\-]+", " ", word)


@lru_cache(maxsize=64)
def label_lookup(labels: tuple[str, ...]) -> dict[str, int]:
    """Every word read as a label of ``labels`` -> that label's index."""
    lookup = {_norm(x): i for i, x in enumerate(labels)}
    for group in SYNONYM_GROUPS:
        in_set = {lookup[w] for w in group if w in lookup}
        if len(in_set) != 1:  # no label of this concept, or two of them: the synonyms say nothing
            continue
        (index,) = in_set
        for word in group:
            lookup.setdefault(word, index)
    return lookup


def parse_number(text: str) -> float | None:
    """``0.4``, ``40%``, ``40 percent``, ``forty``, ``twenty-five``, ``half`` -> float; else None."""
    read = _read_value(text)
    if read is None:
        return None
    value, percent = read
    return value / 100.0 if percent else value


def _read_value(text: str) -> tuple[float, bool] | None:
    """(number, whether it was written as a percentage), or None."""
    m = _VALUE_RE.fullmatch(text.strip())
    if m is None:
        return None
    raw = m.group("num").lower()
    try:
        value = float(raw)
    except ValueError:
        value = _word_number(raw)
    return value, bool(m.group("pct"))


def _word_number(words: str) -> float:
    words = re.sub(r"\s+", " ", words.replace("-", " ")).strip()
    if words in _FRACTIONS:
        return _FRACTIONS[words]
    parts = words.split(" ")
    value = 0.0
    for part in parts:
        value += _TENS[part] if part in _TENS else _UNITS.index(part)
    return value


def _distribution(pairs: Sequence[tuple[str, str]], lookup: dict[str, int], n: int) -> np.ndarray | None:
    """Pairs of (key, value) text -> a normalised distribution, or None when not one.

    Keys outside the label set are left out; a label named twice, a value that is not a finite
    non-negative number, or percentages mixed with plain numbers make the whole answer unreadable.
    """
    p = np.zeros(n)
    seen, percents = set(), set()
    for key, raw in pairs:
        index = lookup.get(_norm(key))
        if index is None:
            continue
        read = _read_value(raw.strip(_VALUE_STRIP))
        if index in seen or read is None or not math.isfinite(read[0]) or read[0] < 0:
            return None
        seen.add(index)
        p[index], percent = read
        if read[0] > 0:
            percents.add(percent)
    if len(percents) > 1:
        return None  # "60%" beside "0.4" or "30": which scale is meant is a guess
    total = p.sum()
    if not seen or not math.isfinite(total) or total <= 0:
        return None
    return p / total


def _brace_spans(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(innermost ``{...}`` spans, spans to keep out of list reading), in text order.

    The second list holds every matched span (outer ones too) and, for a ``{`` never closed
    (an answer cut off by the token limit), everything from it to the end.
    """
    inner, masked = [], []
    stack: list[list] = []  # [start, whether a brace opened inside it]
    for i, ch in enumerate(text):
        if ch == "{":
            if stack:
                stack[-1][1] = True
            stack.append([i, False])
        elif ch == "}" and stack:
            start, has_inner = stack.pop()
            masked.append((start, i + 1))
            if not has_inner:
                inner.append((start, i + 1))
    if stack:
        masked.append((stack[0][0], len(text)))
    return inner, masked


def _object_items(body: str) -> list[tuple[str | None, str]]:
    """The ``(key, value)`` items of one ``{...}``: as JSON where it is JSON (string values may
    hold commas), else split on commas, semicolons and newlines (a key of None marks an item
    that is not ``key: value``)."""
    try:  # pairs, not a dict: a label given twice must stay visible (and unreadable)
        pairs = json.loads("{" + body + "}", object_pairs_hook=lambda kv: kv)
    except ValueError:
        pairs = None
    if isinstance(pairs, list):
        return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in pairs]
    items: list[tuple[str | None, str]] = []
    for item in re.split(r"[,;\n]", body):
        if not item.strip():
            continue  # a trailing comma
        m = re.match(r"\s*(?P<key>\"[^\"]*\"|'[^']*'|[^:=]+?)\s*[:=]\s*(?P<value>.*?)\s*$", item, re.DOTALL)
        items.append((None, item) if m is None else (m.group("key").strip("\"'"), m.group("value")))
    return items


def _read_object(body: str, lookup: dict[str, int], n: int) -> np.ndarray | None:
    """The inside of one ``{...}``: comma/newline-separated ``key: value`` items."""
    pairs, answers = [], []
    for key, value in _object_items(body):
        if key is None:
            return None  # not `key: value` (for example a decimal comma, 0,5): do not guess
        if _norm(key) in ANSWER_KEYS and _norm(value) in lookup:
            answers.append(lookup[_norm(value)])
        else:
            pairs.append((key, value))
    dist = _distribution(pairs, lookup, n)
    if dist is not None:
        return dist
    if len(set(answers)) == 1 and not any(lookup.get(_norm(k)) is not None for k, _ in pairs):
        return one_hot(answers[0], n)
    return None


def _list_runs(text: str) -> list[tuple[int, list[tuple[str, str]]]]:
    """Runs of consecutive ``key: number`` pairs in running text: (end position, pairs)."""
    runs: list[tuple[int, list[tuple[str, str]]]] = []
    last_end = None
    for m in _LIST_PAIR_RE.finditer(text):
        pair = (m.group("key"), m.group("value"))
        if last_end is not None and _LIST_GAP_RE.fullmatch(text, last_end, m.start()):
            runs[-1][1].append(pair)
            runs[-1] = (m.end(), runs[-1][1])
        else:
            runs.append((m.end(), [pair]))
        last_end = m.end()
    return runs


def _outside_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with every character inside one of ``spans`` (and every ``}``) blanked out."""
    depth = [0] * (len(text) + 1)  # how many spans start (+1) or end (-1) at each position
    for start, end in spans:
        depth[start] += 1
        depth[end] -= 1
    covered = 0
    outside = []
    for ch, d in zip(text, depth[: len(text)], strict=True):
        covered += d
        outside.append(" " if covered or ch == "}" else ch)
    return "".join(outside)


def parse_distribution(text: str | None, labels: Sequence[str]) -> np.ndarray | None:
    """The distribution over ``labels`` that ``text`` answers, or ``None`` (see the module doc)."""
    if not text or not text.strip():
        return None
    labels = tuple(labels)
    lookup = label_lookup(labels)
    n = len(labels)
    found: list[tuple[int, np.ndarray]] = []  # (end position in text, distribution)

    spans, masked = _brace_spans(text)
    for start, end in spans:
        dist = _read_object(text[start + 1 : end - 1], lookup, n)
        if dist is not None:
            found.append((end, dist))

    # Lists and answers are read outside braces only: a malformed or truncated object is not
    # rescued by reading its inside as a list.
    prose = _outside_spans(text, masked)
    for end, pairs in _list_runs(prose):
        dist = _distribution(pairs, lookup, n)
        if dist is not None:
            found.append((end, dist))
    for m in _ANSWER_RE.finditer(prose):
        index = lookup.get(_norm(m.group("word")))
        if index is not None:
            found.append((m.end(), one_hot(index, n)))

    if found:
        found.sort(key=lambda item: item[0])
        last = found[-1][1]
        # "... {"happy": 0.6, "sad": 0.4}. The predicted emotion is happy." restates the top label of
        # the distribution just given; the distribution is the answer, not a one-hot of it.
        earlier = [d for _, d in found[:-1] if np.count_nonzero(d) > 1]
        if np.count_nonzero(last) == 1 and earlier:
            top = earlier[-1]
            if np.count_nonzero(top == top.max()) == 1 and int(np.argmax(top)) == int(np.argmax(last)):
                return top
        return last
    index = lookup.get(_norm(text))  # the whole answer is one label: "Sad."
    return one_hot(index, n) if index is not None else None


# --------------------------------------------------------------------------- failure policy

# --------------------------------------------------------------------------- verifier replies

_RATING_RE = re.compile(r"(?<![\d.\-])(\d+(?:\.\d+)?)(?:\s*/\s*10)?")  # "-3" is no rating


def parse_rating(text: str) -> float | None:
    """The verifier's reply ``7`` / ``7/10`` / ``Score: 7.`` -> 0.7; None when it names no number in 0..10."""
    m = _RATING_RE.search(text or "")
    if m is None:
        return None
    value = float(m.group(1))
    return value / 10.0 if 0.0 <= value <= 10.0 else None
