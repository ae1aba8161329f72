"""The corpus contract: what a loader returns (``Corpus`` of ``Utterance`` of ``Rating``), the loader
registry (``DATASETS``, ``register_dataset``) and ``DataError``. See ``ambiemo.data`` for the flow."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambiemo.core.registry import Registry


@dataclass(frozen=True)
class Rating:
    """One rater's judgement of one utterance.

    ``categories``: the primary categories as lowercase words (several where the corpus
    allows it; empty for a rater who gave none, which ``prepare_dataset`` counts and drops);
    ``given``: the same as the corpus spells them (default: ``categories``); ``secondary``
    and ``secondary_given``: secondary emotions (MSP-Podcast ``EmoClass_Second``), kept in
    the ratings table and counted in the distribution only with params ``secondary_weight``.
    """

    rater: str
    categories: tuple[str, ...]
    given: tuple[str, ...] = ()
    secondary: tuple[str, ...] = ()
    secondary_given: tuple[str, ...] = ()
    self_eval: bool = False

    def __post_init__(self) -> None:
        for name, spelled, words in (
            ("given", self.given, self.categories),
            ("secondary_given", self.secondary_given, self.secondary),
        ):
            if not spelled:
                object.__setattr__(self, name, tuple(words))
            elif len(spelled) != len(words):
                raise ValueError(f"rating of {self.rater}: {name} {spelled} does not match {words}")


@dataclass
class Utterance:
    """One clip as a loader sees it. ``ratings`` has one ``Rating`` per rater; a plain tuple of
    categories is accepted for corpora without rater ids and becomes rater ``r<i>``."""

    utt_id: str
    ratings: list[Rating]
    audio_path: str = ""  # where the audio should be (checked later)
    speaker: str = ""
    gender: str = ""  # "female" | "male" | ""
    split: str = ""
    transcript: str = ""
    intended: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ratings = [r if isinstance(r, Rating) else Rating(f"r{i}", tuple(r)) for i, r in enumerate(self.ratings)]


@dataclass
class Corpus:
    """What a loader returns.

    ``vocabulary``: every category the corpus can produce (so that a label set naming
    something the corpus never uses is caught). ``excluded``: reason -> utterance ids the
    loader left out. ``filtered``: reason -> how many utterances a selection in params
    left out, where listing their ids would say nothing (MSP-Podcast's other splits).
    ``dropped_votes``: reason -> votes the loader did not pass on (for example IEMOCAP
    self-evaluations). ``source``: what the loader read (release layout detected, files,
    the choice between two copies of the same votes and their disagreements), recorded in
    the manifest metadata and shown by ``ambiemo data stats``.
    """

    utterances: list[Utterance]
    vocabulary: frozenset[str]
    excluded: dict[str, list[str]] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    dropped_votes: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[Path, Mapping[str, Any]], Corpus]
DATASETS: Registry[Loader] = Registry("dataset")
register_dataset = DATASETS.register


def _import_loaders() -> None:
    """Import every module of this package, so that each loader registers itself (a new corpus
    module needs no list to be added to)."""
    import pkgutil

    package = importlib.import_module("ambiemo.data")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"ambiemo.data.{info.name}")


def get_loader(name: str) -> Loader:
    _import_loaders()
    return DATASETS.get(name)


class DataError(ValueError):
    """A corpus or a params entry that cannot be turned into a manifest as it is."""


def check_exclusions(
    dataset: str, exclude: set[str], utterances: list[Utterance], excluded: list[str], where: str
) -> None:
    """Refuse params ``datasets.<dataset>.exclude`` ids that name no utterance the loader met (kept
    or excluded): a typo would otherwise exclude nothing, silently. ``where``: what was searched."""
    unknown = sorted(exclude - {u.utt_id for u in utterances} - set(excluded))
    if unknown:
        raise DataError(f"params datasets.{dataset}.exclude names {where}: {unknown[:5]}")


def _first(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")
