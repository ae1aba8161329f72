"""Every number and setting the manuscript quotes comes from a generated macro: the sources hold no
literal number in their prose, outside an allow-list (layout and citation keys)."""

from __future__ import annotations

import re
from pathlib import Path

from ambiemo.report.paper import MACROS, setting_macros

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "paper").glob("*.tex")) + sorted((ROOT / "paper" / "sections").glob("*.tex"))
# What may hold digits: commands' arguments that are not prose (keys, labels, files, layout options),
# math, and the names of models and corpora, whose digits are part of the name.
STRIP = [
    r"(?<!\\)%.*",  # comments (an escaped \% is text)
    r"\\(cite|citep|citet|ref|label|input|include|includegraphics|bibliography|bibliographystyle)(\[[^\]]*\])?\{[^}]*\}",
    r"\\(documentclass|usepackage)(\[[^\]]*\])?\{[^}]*\}",
    r"\[[^\]]*(pt|cm|mm|in|linewidth|textwidth)[^\]]*\]",  # sizes in options
    r"\$[^$]*\$",  # math
    r"\b[A-Za-z][\w.]*-?\d+(\.\d+)?[A-Za-z]*\b",  # names with digits: Qwen2-Audio-7B, F1, MSP-IMPROV v1
]
NUMBER = re.compile(r"(?<![\w\\])\d+(?:[.,]\d+)?%?")


def prose_numbers(text: str) -> list[str]:
    for pattern in STRIP:
        text = re.sub(pattern, " ", text)
    return NUMBER.findall(text)


def test_the_scanner_finds_a_typed_number() -> None:
    assert prose_numbers("a CI of 95\\% over 1,000 resamples") == ["95", "1,000"]
    assert prose_numbers("Qwen2-Audio-7B~\\cite{chu2024qwen2} in $R^2$, \\CILevel\\%") == []


def test_no_literal_numbers_in_the_manuscript() -> None:
    found = {str(p.relative_to(ROOT)): prose_numbers(p.read_text()) for p in SOURCES}
    assert SOURCES and {k: v for k, v in found.items() if v} == {}


def test_every_macro_the_text_uses_is_generated() -> None:
    used = set()
    for p in SOURCES:
        used |= set(re.findall(r"\\([A-Z][A-Za-z]+)", p.read_text()))
    latex = {"LaTeX", "TeX"}
    assert used - latex <= set(MACROS), sorted(used - latex - set(MACROS))


def test_settings_follow_params() -> None:
    m = setting_macros(
        {"scoring": {"ci_level": 0.9, "bootstrap_resamples": 2000, "js_base": 2}, "parsing": {"on_failure": "nan"}}
    )
    assert m == {
        "CILevel": "90",
        "BootstrapResamples": "2,000",
        "JSLog": "base-2",
        "ParseFailureRule": "is left out of the distributional metrics (and is wrong for accuracy)",
    }
    assert setting_macros({})["CILevel"] == "95"  # the schema's default level
