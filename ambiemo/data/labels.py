"""Label sets, soft labels from annotators' votes, and ambiguity.

The study's ground truth for an utterance is the *distribution* of its annotators' votes,
not one label. This module turns per-rater ratings into that distribution and describes it:

    ratings (one tuple of categories per rater)
      -> tally_votes        votes per label (a rater with k categories splits one vote)
      -> soft_labels        votes / total, rows summing to 1
      -> entropy_bits, majority, max_share, n_distinct
      -> ambiguity_bins     `clear` (unanimous), then low / medium / high by entropy

Everything here is corpus-independent: the loaders in ``ambiemo.data`` translate each
corpus's own category names into lowercase English words first (``"Neutral state"`` ->
``neutral``), and a label set decides which of those words it keeps and which it merges
(IEMOCAP's ``excited`` -> ``happy``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# How out-of-set votes are handled (params ``datasets.<name>.votes``):
#   drop_utterance  keep only utterances whose every vote falls in the label set (AER-LLM's choice)
#   drop_votes      discard the out-of-set votes and keep the rest of the utterance
#   other           count them under an extra label "other", appended to the label set
VOTE_POLICIES = ("drop_utterance", "drop_votes", "other")

# How a rater who names several categories is counted (params ``datasets.<name>.multi_label``):
#   split  one vote shared equally among the categories (1/k each)
#   first  only the first category named counts
#   full   every category named gets a whole vote (the rater then weighs more than others)
MULTI_LABEL_RULES = ("split", "first", "full")

OTHER = "other"
# Entropies below this are treated as zero (unanimous); sums of split votes are not exact.
EPS = 1e-9


@dataclass(frozen=True)
class LabelSet:
    """A named, ordered set of labels, plus the corpus categories merged into them."""

    name: str
    labels: tuple[str, ...]
    merge: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"label set {self.name!r} repeats a label: {list(self.labels)}")
        for src, dst in self.merge.items():
            if dst not in self.labels:
                raise ValueError(
                    f"label set {self.name!r} merges {src!r} into {dst!r}, "
                    f"which is not one of its labels {list(self.labels)}"
                )

    def canonical(self, category: str) -> str:
        """The label a corpus category counts as (after merging); may be out of the set."""
        return self.merge.get(category, category)

    def with_other(self) -> LabelSet:
        """This set with an ``other`` label appended (vote policy ``other``)."""
        if OTHER in self.labels:
            return self
        return LabelSet(f"{self.name}+{OTHER}", (*self.labels, OTHER), dict(self.merge))

    def to_meta(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels)}


def label_set_from_params(params: Mapping[str, Any], name: str) -> LabelSet:
    """The label set ``name`` from params ``label_sets``."""
    sets = params.get("label_sets") or {}
    if name not in sets:
        known = ", ".join(sorted(sets)) or "(none)"
        raise KeyError(f"params.yaml label_sets has no {name!r}; defined: {known}")
    spec = sets[name]
    if not isinstance(spec, Mapping) or "labels" not in spec:
        raise ValueError(f"params.yaml label_sets.{name} needs a `labels:` list")
    labels = tuple(str(x).strip().lower() for x in spec["labels"])
    merge = {str(k).strip().lower(): str(v).strip().lower() for k, v in (spec.get("merge") or {}).items()}
    return LabelSet(name, labels, merge)


# --------------------------------------------------------------------------- votes -> counts


@dataclass
class Tally:
    """Votes of many utterances over one label set, and what the vote policy left out."""

    votes: np.ndarray  # (n_utterances, n_labels), float: split votes are fractional
    n_raters: np.ndarray  # (n_utterances,), raters whose vote counted
    out_of_set: list[dict[str, float]]  # per utterance: out-of-set category -> vote weight seen
    dropped_votes: float  # total vote weight discarded under `drop_votes`


def rater_weights(categories: Sequence[str], multi_label: str = "split") -> dict[str, float]:
    """How one rater's vote is shared among the categories they named.

    >>> rater_weights(["angry", "sad"])
    {'angry': 0.5, 'sad': 0.5}
    """
    if multi_label not in MULTI_LABEL_RULES:
        raise ValueError(f"multi_label must be one of {MULTI_LABEL_RULES}, got {multi_label!r}")
    # A rater naming the same category twice still names it once.
    cats = list(dict.fromkeys(categories))
    if not cats:
        return {}
    if multi_label == "first":
        return {cats[0]: 1.0}
    weight = 1.0 / len(cats) if multi_label == "split" else 1.0
    return {c: weight for c in cats}


def tally_votes(
    ratings: Sequence[Sequence[Sequence[str]]],
    label_set: LabelSet,
    policy: str = "drop_votes",
    multi_label: str = "split",
) -> Tally:
    """Count the votes of each utterance over ``label_set``.

    ``ratings[i]`` is utterance i's list of raters, each a sequence of category names
    (already lowercase words from the loader). Categories merged by the label set count
    as their target. Under policy ``other`` pass ``label_set.with_other()``; under
    ``drop_votes`` the out-of-set part of a rater's vote is discarded (a rater left with
    nothing does not count in ``n_raters``); under ``drop_utterance`` the votes are kept
    out of the counts and ``out_of_set`` tells the caller which utterances to drop.
    """
    if policy not in VOTE_POLICIES:
        raise ValueError(f"vote policy must be one of {VOTE_POLICIES}, got {policy!r}")
    if policy == OTHER and OTHER not in label_set.labels:
        raise ValueError("vote policy 'other' needs a label set with an 'other' label: use label_set.with_other()")
    index = {label: j for j, label in enumerate(label_set.labels)}
    votes = np.zeros((len(ratings), len(index)), dtype=float)
    n_raters = np.zeros(len(ratings), dtype=int)
    out_of_set: list[dict[str, float]] = []
    dropped = 0.0
    for i, raters in enumerate(ratings):
        seen: dict[str, float] = {}
        for categories in raters:
            shares = rater_weights([label_set.canonical(c) for c in categories], multi_label)
            counted = False
            for label, w in shares.items():
                j = index.get(label)
                if j is None and policy == OTHER:
                    j = index[OTHER]
                if j is None:
                    seen[label] = seen.get(label, 0.0) + w
                    dropped += w if policy == "drop_votes" else 0.0
                    continue
                votes[i, j] += w
                counted = True
            n_raters[i] += counted
        out_of_set.append(seen)
    return Tally(votes, n_raters, out_of_set, dropped)


# --------------------------------------------------------------------------- counts -> distribution


def soft_labels(votes: np.ndarray) -> np.ndarray:
    """Normalise vote counts row-wise into distributions. Rows with no votes are an error."""
    votes = np.asarray(votes, dtype=float)
    if votes.ndim != 2:
        raise ValueError(f"votes must be (n_utterances, n_labels), got shape {votes.shape}")
    if (votes < 0).any():
        raise ValueError("votes must be non-negative")
    totals = votes.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        empty = np.flatnonzero(totals[:, 0] <= 0)
        raise ValueError(
            f"{len(empty)} utterance(s) have no votes (rows {empty[:5].tolist()}); drop them before normalising"
        )
    return votes / totals


def entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row of ``p`` (0·log 0 = 0)."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    h = terms.sum(axis=-1)
    # Rounding can leave -1e-16 for a unanimous row; entropy is never negative.
    return np.where(h < EPS, 0.0, h)


def majority(votes: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The label with the most votes per row, and whether that maximum is tied.

    Returns (labels as an object array, "" where tied; tie flags). Fractional votes are
    compared with a tolerance so that 0.5 + 0.5 ties with 1.0.
    """
    votes = np.asarray(votes, dtype=float)
    top = votes.max(axis=1, keepdims=True)
    at_top = np.isclose(votes, top, rtol=0.0, atol=1e-9)
    tie = at_top.sum(axis=1) > 1
    names = np.asarray(labels, dtype=object)[votes.argmax(axis=1)]
    names[tie] = ""
    return names, tie


def describe_votes(votes: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """The per-utterance columns a manifest derives from its vote counts."""
    p = soft_labels(votes)
    maj, tie = majority(votes, labels)
    return {
        "majority": maj.astype(str),
        "majority_tie": tie,
        "entropy_bits": entropy_bits(p),
        "max_share": p.max(axis=1),
        "n_distinct": (np.asarray(votes) > EPS).sum(axis=1),
        **{f"p_{label}": p[:, j] for j, label in enumerate(labels)},
    }


# --------------------------------------------------------------------------- ambiguity

CLEAR = "clear"
DEFAULT_BINS = ("low", "medium", "high")
# Edges in bits between low|medium and medium|high, for four labels (maximum 2 bits).
# With three raters (IEMOCAP) the entropies are 0, 0.918 and 1.585 bits; with five
# (AER-LLM's MSP-Podcast) 0.722 (4-1), 1.371 (3-1-1) and 1.522 (2-2-1) fall one per bin.
DEFAULT_EDGES_BITS = (1.0, 1.5)


@dataclass(frozen=True)
class AmbiguityBins:
    """Entropy bins: ``clear`` for unanimous utterances, then one bin per interval.

    ``method`` is ``fixed`` (``edges`` in bits from params) or ``quantile`` (``quantiles``
    of the non-unanimous utterances' entropies; the edges found are recorded). An
    entropy ``h > 0`` falls in bin k when ``edges[k-1] < h <= edges[k]``.
    """

    method: str = "fixed"
    edges: tuple[float, ...] = DEFAULT_EDGES_BITS
    names: tuple[str, ...] = DEFAULT_BINS
    quantiles: tuple[float, ...] = (1 / 3, 2 / 3)

    @classmethod
    def from_params(cls, spec: Mapping[str, Any] | None) -> AmbiguityBins:
        spec = dict(spec or {})
        method = spec.get("method", "fixed")
        if method not in ("fixed", "quantile"):
            raise ValueError(f"params ambiguity.method must be 'fixed' or 'quantile', got {method!r}")
        names = tuple(spec.get("bins", DEFAULT_BINS))
        edges = tuple(float(x) for x in spec.get("edges_bits", DEFAULT_EDGES_BITS))
        quantiles = tuple(float(x) for x in spec.get("quantiles", (1 / 3, 2 / 3)))
        n_edges = len(edges) if method == "fixed" else len(quantiles)
        if len(names) != n_edges + 1:
            raise ValueError(
                f"params ambiguity: {len(names)} bins {list(names)} need {len(names) - 1} "
                f"{'edges_bits' if method == 'fixed' else 'quantiles'}, got {n_edges}"
            )
        if CLEAR in names:
            raise ValueError(f"params ambiguity.bins must not contain {CLEAR!r}: it is the unanimous bin")
        if method == "fixed" and (any(e <= 0 for e in edges) or list(edges) != sorted(set(edges))):
            raise ValueError(f"params ambiguity.edges_bits must be positive and increasing, got {list(edges)}")
        if method == "quantile" and (
            any(not 0 < q < 1 for q in quantiles) or list(quantiles) != sorted(set(quantiles))
        ):
            raise ValueError(f"params ambiguity.quantiles must be increasing, in (0, 1), got {list(quantiles)}")
        return cls(method, edges, names, quantiles)

    def resolve_edges(self, entropy: np.ndarray) -> tuple[float, ...]:
        """The edges actually used: fixed ones, or quantiles of the non-zero entropies."""
        if self.method == "fixed":
            return self.edges
        h = np.asarray(entropy, dtype=float)
        h = h[h > EPS]
        if h.size == 0:
            return tuple(np.nan for _ in self.quantiles)
        return tuple(float(x) for x in np.quantile(h, self.quantiles))

    def assign(self, entropy: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
        """Bin names per utterance, and the edges used."""
        h = np.asarray(entropy, dtype=float)
        edges = self.resolve_edges(h)
        # side='left': an entropy equal to an edge belongs to the lower bin.
        k = np.searchsorted(np.asarray(edges, dtype=float), h, side="left") if h.size else np.zeros(0, int)
        names = np.asarray(self.names, dtype=object)[np.minimum(k, len(self.names) - 1)]
        names[h <= EPS] = CLEAR
        return names.astype(str), edges

    def order(self) -> tuple[str, ...]:
        """Bin names from least to most ambiguous, ``clear`` first."""
        return (CLEAR, *self.names)

    def to_meta(self, edges: Iterable[float]) -> dict[str, Any]:
        meta: dict[str, Any] = {"method": self.method, "edges": [float(e) for e in edges], "bins": list(self.order())}
        if self.method == "quantile":
            meta["quantiles"] = list(self.quantiles)
        return meta
