"""One visual encoding per strategy, readout and reference predictor, the same in every figure.

Colour names the **family** (what kind of test-time scaling), marker and line style name the
**variant** within it (plain, weighted, vote readout), so that a reader who has learnt one figure
reads the others, and no two strategies look alike even in grey scale:

    family             colour (Okabe & Ito)    members: marker, line style
    baseline           black                   baseline: o, solid
    reasoning          orange   #E69F00        cot: s, solid
    best-of-n          sky blue #56B4E9        bon: ^, solid;  w-bon: v, dashed
    verifier           green    #009E73        alm-v: D, solid;  w-alm-v: d, dashed
    self-consistency   blue     #0072B2        self-consistency: P, solid;  -vote: X, dotted
    label scoring      vermilion #D55E00       label-scoring: *, solid
    prompt ensemble    purple   #CC79A7        prompt-ensemble: h, solid
    reference          grey     #666666        uniform: none, dotted; label-prior: none, dashdot;
                                               hard-oracle: none, dashed; human-*: none, solid (thin)

Model **families** (the capacity ladders of figure 3, params ``models.<key>.family``) get their
own encoding from ``model_family_encodings``: one Okabe & Ito colour and one marker per family,
in name order, with a line style that changes once the colours are used up, so that no two
families look alike (up to 24; beyond, colour and marker repeat with another line style).

The palette is Okabe & Ito (2008), "Color Universal Design", distinguishable under the common
colour-vision deficiencies. A strategy this table does not know gets a unique grey-scale-safe
fallback (yellow #F0E442 or the palette's last colours, markers not used above), still distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OKABE_ITO = {
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermilion": "#D55E00",
    "reddish purple": "#CC79A7",
    "black": "#000000",
}
REFERENCE_COLOUR = "#666666"

FAMILY_COLOUR = {
    "baseline": OKABE_ITO["black"],
    "reasoning": OKABE_ITO["orange"],
    "best-of-n": OKABE_ITO["sky blue"],
    "verifier": OKABE_ITO["bluish green"],
    "self-consistency": OKABE_ITO["blue"],
    "label scoring": OKABE_ITO["vermilion"],
    "prompt ensemble": OKABE_ITO["reddish purple"],
    "reference": REFERENCE_COLOUR,
}

# name: (family, marker, line style)
ENCODINGS: dict[str, tuple[str, str, str]] = {
    "baseline": ("baseline", "o", "-"),
    "cot": ("reasoning", "s", "-"),
    "bon": ("best-of-n", "^", "-"),
    "w-bon": ("best-of-n", "v", "--"),
    "alm-v": ("verifier", "D", "-"),
    "w-alm-v": ("verifier", "d", "--"),
    "self-consistency": ("self-consistency", "P", "-"),
    "self-consistency-vote": ("self-consistency", "X", ":"),
    "label-scoring": ("label scoring", "*", "-"),
    "prompt-ensemble": ("prompt ensemble", "h", "-"),
    "uniform": ("reference", "", ":"),
    "label-prior": ("reference", "", "-."),
    "hard-oracle": ("reference", "", "--"),
    "human-loo": ("reference", "", "-"),
    "human-split-half": ("reference", "", (0, (5, 1, 1, 1))),
    "human-loo-counts": ("reference", "", (0, (1, 2))),
}
REFERENCES = tuple(k for k, v in ENCODINGS.items() if v[0] == "reference")

_FALLBACK_COLOURS = (OKABE_ITO["yellow"], "#999999", "#882255", "#44AA99")
_FALLBACK_MARKERS = ("<", ">", "p", "8", "H", "1", "2", "3")
_FALLBACK_STYLES = ("-", "--", "-.", ":")


def family(name: str) -> str:
    return ENCODINGS[name][0] if name in ENCODINGS else "other"


def encoding(name: str) -> dict[str, Any]:
    """matplotlib keyword arguments (color, marker, linestyle) of a known strategy or reference."""
    fam, marker, ls = ENCODINGS[name]
    out: dict[str, Any] = {"color": FAMILY_COLOUR[fam], "marker": marker or None, "linestyle": ls}
    if fam == "baseline":
        out["linewidth"] = 1.6
    if fam == "reference":
        out["linewidth"] = 0.9
    return out


def encodings(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Encodings for ``names``: the table's where known, unique fallbacks (in name order) otherwise."""
    out = {n: encoding(n) for n in names if n in ENCODINGS}
    unknown = sorted(n for n in set(names) if n not in ENCODINGS)
    for i, n in enumerate(unknown):
        out[n] = {
            "color": _FALLBACK_COLOURS[i % len(_FALLBACK_COLOURS)],
            "marker": _FALLBACK_MARKERS[i % len(_FALLBACK_MARKERS)],
            "linestyle": _FALLBACK_STYLES[(i // len(_FALLBACK_MARKERS)) % len(_FALLBACK_STYLES)],
        }
    return out


# Family markers: filled shapes that stay apart at small sizes.
_FAMILY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
_FAMILY_COLOURS = (
    OKABE_ITO["black"],
    OKABE_ITO["orange"],
    OKABE_ITO["sky blue"],
    OKABE_ITO["bluish green"],
    OKABE_ITO["vermilion"],
    OKABE_ITO["blue"],
    OKABE_ITO["reddish purple"],
    OKABE_ITO["yellow"],
)


def model_family_encodings(families: Sequence[str]) -> dict[str, dict[str, Any]]:
    """matplotlib keyword arguments (color, marker, linestyle) per model family, in name order:
    the same family gets the same look in every figure of one run."""
    out = {}
    for i, name in enumerate(sorted(set(families))):
        out[name] = {
            "color": _FAMILY_COLOURS[i % len(_FAMILY_COLOURS)],
            "marker": _FAMILY_MARKERS[i % len(_FAMILY_MARKERS)],
            "linestyle": _FALLBACK_STYLES[(i // 24) % len(_FALLBACK_STYLES)],
        }
    return out


def legend_table() -> list[dict[str, str]]:
    """The encodings as rows (name, family, colour, marker, line style), for captions and the paper."""
    return [
        {"name": n, "family": f, "colour": FAMILY_COLOUR[f], "marker": m or "none", "linestyle": str(ls)}
        for n, (f, m, ls) in ENCODINGS.items()
    ]
