"""Corpora -> manifests.

Each corpus has a loader module registered by name in ``DATASETS`` (``iemocap``,
``msp-podcast``, ``crema-d``, ``demo``). A loader reads the corpus in the layout its owners
distribute and returns a ``Corpus``: one ``Utterance`` per clip with its raters' categories
as lowercase English words, plus what the loader itself left out and why. It knows nothing
about label sets. ``prepare_dataset`` does the rest, the same way for every corpus:

    loader(root, spec) -> Corpus (one ``Rating`` per rater: id, categories as given, secondaries)
      -> ratings without a category, repeated raters        -> dropped, counted
      -> label set and vote rules (params)                  -> ratings table (``ambiemo.data.ratings``)
      -> votes = sums of the table's weights                -> exclusions counted
      -> audio checked (missing / unreadable)               -> durations, paths relative to the root
      -> manifest and ratings.parquet written (``ambiemo.data.manifest``)

To add a corpus: write ``ambiemo/data/<name>.py`` with a function decorated
``@register_dataset("<name>")`` taking ``(root: Path, spec: dict)`` (``spec`` is the
dataset's params entry) and returning a ``Corpus``; add the module to ``_LOADER_MODULES``;
add an entry under ``datasets:`` in params.yaml. A loader that builds its corpus (the demo)
sets ``creates_root = True`` on the function, so that a missing root is not an error.
"""

from __future__ import annotations

import importlib
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.registry import Registry
from ambiemo.data.labels import (
    MULTI_LABEL_RULES,
    OTHER,
    VOTE_POLICIES,
    AmbiguityBins,
    LabelSet,
    label_set_from_params,
    rater_weights,
)
from ambiemo.data.manifest import Manifest, build_manifest, read_manifest, resolve_audio, validate, write_manifest
from ambiemo.data.ratings import COLUMNS as RATINGS_COLUMNS
from ambiemo.data.ratings import FILE_NAME as RATINGS_FILE
from ambiemo.data.ratings import coerce as coerce_ratings
from ambiemo.data.ratings import votes_from_ratings, write_ratings


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

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def get_loader(name: str) -> Loader:
    _import_loaders()
    return DATASETS.get(name)


class DataError(ValueError):
    """A corpus or a params entry that cannot be turned into a manifest as it is."""


def _first(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def dataset_spec(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    datasets = params.get("datasets") or {}
    if name not in datasets:
        known = ", ".join(sorted(datasets)) or "(none)"
        raise KeyError(f"params.yaml datasets has no {name!r}; defined: {known}")
    spec = dict(datasets[name] or {})
    if "loader" not in spec:
        known = ", ".join(DATASETS.names()) or "the registered loaders"
        raise DataError(f"params.yaml datasets.{name} needs `loader:` (one of {known})")
    return spec


DUPLICATE_RATERS = ("first", "all")


@dataclass(frozen=True)
class VoteRules:
    """How ratings become votes: params ``votes``, ``multi_label``, ``secondary_weight``, ``duplicate_raters``."""

    policy: str = "drop_utterance"
    multi_label: str = "split"
    secondary_weight: float = 0.0
    duplicate_raters: str = "first"

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any]) -> VoteRules:
        rules = cls(
            policy=spec.get("votes", "drop_utterance"),
            multi_label=spec.get("multi_label", "split"),
            secondary_weight=spec.get("secondary_weight", 0.0),
            duplicate_raters=spec.get("duplicate_raters", "first"),
        )
        for key, value, allowed in (
            ("votes", rules.policy, VOTE_POLICIES),
            ("multi_label", rules.multi_label, MULTI_LABEL_RULES),
            ("duplicate_raters", rules.duplicate_raters, DUPLICATE_RATERS),
        ):
            if value not in allowed:
                raise DataError(f"params.yaml datasets.{name}.{key} must be one of {list(allowed)}, got {value!r}")
        w = rules.secondary_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 1:
            raise DataError(f"params.yaml datasets.{name}.secondary_weight must be a number in [0, 1], got {w!r}")
        return rules


def _resolve_root(name: str, spec: Mapping[str, Any], loader: Loader, root: Any, base_dir: Any) -> Path:
    root_path = Path(root if root is not None else spec.get("root", ""))
    if not root_path.is_absolute():
        root_path = Path(base_dir or Path.cwd()) / root_path
    if not getattr(loader, "creates_root", False) and not root_path.is_dir():
        raise DataError(
            f"{root_path}: dataset root for {name!r} does not exist; set params.yaml "
            f"datasets.{name}.root to where the corpus is, or pass --root"
        )
    return root_path


def _label_set(name: str, params: Mapping[str, Any], spec: Mapping[str, Any], override: str | None) -> LabelSet:
    ls_name = override or spec.get("label_set")
    if not ls_name:
        raise DataError(
            f"params.yaml datasets.{name} needs `label_set:` (one of {sorted(params.get('label_sets') or {})})"
        )
    return label_set_from_params(params, ls_name)


def _check_vocabulary(name: str, ls: LabelSet, vocabulary: frozenset[str]) -> None:
    never_used = [
        x for x in ls.labels if x != OTHER and x not in vocabulary and not any(ls.canonical(c) == x for c in vocabulary)
    ]
    if never_used:
        raise DataError(
            f"label set {ls.name!r} {list(ls.labels)} has label(s) {never_used} that dataset {name!r} "
            f"never uses; its categories are {sorted(vocabulary)}"
        )


def clean_ratings(utts: list[Utterance], duplicate_raters: str) -> dict[str, float]:
    """Drop ratings without a category, and a rater's repeated ratings of one utterance (under
    ``duplicate_raters: first`` the first one counts); returns the ratings dropped per reason."""
    dropped: Counter[str] = Counter()
    for u in utts:
        seen: set[str] = set()
        kept = []
        for r in u.ratings:
            if not r.categories:
                dropped["ratings_without_category"] += 1
            elif duplicate_raters == "first" and r.rater in seen:
                dropped["duplicate_rater"] += 1
            else:
                seen.add(r.rater)
                kept.append(r)
        u.ratings = kept
    return {k: float(v) for k, v in dropped.items()}


def _rating_rows(u: Utterance, ls: LabelSet, rules: VoteRules) -> list[tuple[Any, ...]]:
    """The ratings-table rows of one utterance (see ``ambiemo.data.ratings``)."""

    def label_of(category: str) -> str | None:
        c = ls.canonical(category)
        if c in ls.labels:
            return c
        return OTHER if rules.policy == OTHER else None

    rows = []
    for r in u.ratings:
        shares = rater_weights([ls.canonical(c) for c in r.categories], rules.multi_label)
        per_canonical = Counter(ls.canonical(c) for c in r.categories)
        primary = set(shares)
        for c, spelled in zip(r.categories, r.given, strict=True):
            # A share split among the spellings that merge into one label (Happiness; Excited -> happy).
            w = shares.get(ls.canonical(c), 0.0) / per_canonical[ls.canonical(c)]
            rows.append(_row(u.utt_id, r, spelled, c, label_of(c), w, "primary"))
        extra = [c for c in dict.fromkeys(ls.canonical(c) for c in r.secondary) if c not in primary]
        for c, spelled in zip(r.secondary, r.secondary_given, strict=True):
            canonical = ls.canonical(c)
            first = canonical in extra and next(x for x in r.secondary if ls.canonical(x) == canonical) == c
            w = rules.secondary_weight / len(extra) if first else 0.0
            rows.append(_row(u.utt_id, r, spelled, c, label_of(c), w, "secondary"))
    return rows


def _row(utt: str, r: Rating, spelled: str, word: str, label: str | None, weight: float, kind: str) -> tuple[Any, ...]:
    """One ratings-table row, in ``RATINGS_COLUMNS`` order plus ``word`` (tuples: a corpus has millions)."""
    return (utt, r.rater, spelled, label, weight, kind, r.self_eval, word)


def ratings_table(utts: list[Utterance], ls: LabelSet, rules: VoteRules) -> pd.DataFrame:
    """The ratings table (``ambiemo.data.ratings``) of ``utts`` under a label set and vote rules, with
    one more column, ``word``: the loader's lowercase word for the category."""
    rows = [row for u in utts for row in _rating_rows(u, ls, rules)]
    return pd.DataFrame.from_records(rows, columns=[*RATINGS_COLUMNS, "word"])


def _outside(ratings: pd.DataFrame) -> pd.DataFrame:
    """Rows whose category is outside the label set and carries weight (the vote policy's business)."""
    return ratings[ratings["label"].isna() & (ratings["weight"] > 0)]


def _exclude_by_votes(
    utts: list[Utterance], ratings: pd.DataFrame, votes: np.ndarray, policy: str
) -> dict[str, list[str]]:
    """Utterances the vote policy leaves without a distribution, by reason."""
    out_primary = set(_outside(ratings[ratings["kind"] == "primary"])["utt_id"])
    excluded: dict[str, list[str]] = {}
    for i, u in enumerate(utts):
        if not u.ratings:
            reason = "no_ratings"
        elif policy == "drop_utterance" and u.utt_id in out_primary:
            reason = "votes_outside_label_set"
        elif votes[i].sum() <= 0:
            reason = "all_votes_outside_label_set"
        else:
            continue
        excluded.setdefault(reason, []).append(u.utt_id)
    return excluded


def prepare_dataset(
    name: str,
    params: Mapping[str, Any],
    root: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    label_set: str | None = None,
    allow_missing_audio: bool = False,
    base_dir: str | os.PathLike | None = None,
    ratings_out: str | os.PathLike | None = None,
) -> Manifest:
    """Build (and with ``out``, write) the manifest of dataset ``name`` from params.

    ``params`` is the whole params.yaml (this reads ``datasets.<name>``, ``label_sets``,
    ``ambiguity`` and ``seed``). ``root`` overrides ``datasets.<name>.root``; a relative root
    is taken relative to ``base_dir`` (default: the working directory, the repository root
    for DVC). ``label_set`` overrides ``datasets.<name>.label_set``. Utterances without
    audio are excluded and counted while their share is at most ``datasets.<name>.
    max_missing_audio`` (default 0), an error above it, unless ``allow_missing_audio``,
    which builds a labels-only manifest. With ``out``, the ratings table is written to
    ``ratings_out`` (default: ``ratings.parquet`` beside a ``manifest.parquet``, else
    ``<manifest stem>.ratings.parquet``).
    """
    spec = dataset_spec(params, name)
    loader = get_loader(spec["loader"])
    root_path = _resolve_root(name, spec, loader, root, base_dir)
    if spec.get("seed") is None:  # a dataset's own seed, else the study's
        spec["seed"] = params.get("seed")
    ls = _label_set(name, params, spec, label_set)
    rules = VoteRules.from_spec(name, spec)
    ls_name = ls.name
    if rules.policy == OTHER:
        ls = ls.with_other()

    corpus = loader(root_path.resolve(), spec)
    excluded: dict[str, list[str]] = {k: list(v) for k, v in corpus.excluded.items() if v}
    dropped_votes = {k: float(v) for k, v in corpus.dropped_votes.items() if v}
    _check_vocabulary(name, ls, corpus.vocabulary)
    ids = [u.utt_id for u in corpus.utterances]
    dupes = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dupes:
        raise DataError(f"dataset {name!r}: {len(dupes)} duplicate utterance id(s): {_first(dupes)}")

    utts = sorted(corpus.utterances, key=lambda u: u.utt_id)
    for reason, n in clean_ratings(utts, rules.duplicate_raters).items():
        dropped_votes[reason] = dropped_votes.get(reason, 0.0) + n
    ratings = ratings_table(utts, ls, rules)
    votes, n_raters = votes_from_ratings(ratings, [u.utt_id for u in utts], ls.labels)
    for reason, v in _exclude_by_votes(utts, ratings, votes, rules.policy).items():
        excluded.setdefault(reason, []).extend(v)
    gone = {x for v in excluded.values() for x in v}
    if rules.policy == "drop_votes":
        lost = float(_outside(ratings[ratings["utt_id"].isin({u.utt_id for u in utts} - gone)])["weight"].sum())
        if lost:
            dropped_votes["outside_label_set"] = dropped_votes.get("outside_label_set", 0.0) + lost
    # Out-of-set categories seen, whatever the policy did with them (for the stats report).
    outside = {str(k): float(v) for k, v in _outside(ratings).groupby("word")["weight"].sum().items()}

    keep = np.array([u.utt_id not in gone for u in utts], dtype=bool)
    kept = [u for u, k in zip(utts, keep, strict=True) if k]
    audio = _check_audio(kept, name, root_path, allow_missing_audio, float(spec.get("max_missing_audio", 0.0)))
    if audio.excluded:
        excluded["audio_missing"] = audio.excluded
        keep &= np.array([u.utt_id not in set(audio.excluded) for u in utts], dtype=bool)
        kept = [u for u, k in zip(utts, keep, strict=True) if k]
    df, amb_meta = build_manifest(_info_frame(kept, name, audio), votes[keep], n_raters[keep], ls, _bins(params, spec))
    ratings = coerce_ratings(ratings[ratings["utt_id"].isin(set(df["utt_id"]))])

    meta = {
        "dataset": name,
        "vote_policy": rules.policy,
        "multi_label": rules.multi_label,
        "secondary_weight": float(rules.secondary_weight),
        "duplicate_raters": rules.duplicate_raters,
        "excluded_ids": {k: sorted(v) for k, v in sorted(excluded.items())},
        "dropped_votes": {k: round(v, 6) for k, v in sorted(dropped_votes.items())},
        "categories_outside_label_set": {k: round(v, 6) for k, v in sorted(outside.items())},
        "audio": {"missing": len(audio.missing), "labels_only": bool(audio.missing)},
        "audio_root": _portable(root_path),
        "source": corpus.source,
    }
    exclusions = {**{k: len(v) for k, v in excluded.items()}, **{k: int(v) for k, v in corpus.filtered.items() if v}}
    return _finish(
        df,
        ratings,
        meta,
        exclusions,
        ls,
        amb_meta,
        _provenance(params, name, ls_name, spec, root_path),
        out,
        ratings_out,
    )


def _bins(params: Mapping[str, Any], spec: Mapping[str, Any]) -> AmbiguityBins:
    return AmbiguityBins.from_params({**(params.get("ambiguity") or {}), **(spec.get("ambiguity") or {})})


def _provenance(params: Mapping[str, Any], name: str, ls_name: str, spec: Mapping[str, Any], root: Path) -> dict:
    from ambiemo.core.provenance import provenance

    used_params = {
        "datasets": {name: dict(params["datasets"][name])},
        "label_sets": {ls_name: params["label_sets"][ls_name]},
        "ambiguity": params.get("ambiguity") or {},
    }
    return provenance(used_params, seed=spec.get("seed"), root=_portable(root))


def _info_frame(kept: list[Utterance], name: str, audio: _Audio) -> pd.DataFrame:
    present = {u: i for i, u in enumerate(audio.ids)}
    info = pd.DataFrame(
        {
            "utt_id": [u.utt_id for u in kept],
            "dataset": name,
            "audio_path": [audio.paths[present[u.utt_id]] for u in kept],
            "duration_s": [audio.durations[present[u.utt_id]] for u in kept],
            "speaker": [u.speaker for u in kept],
            "gender": [u.gender for u in kept],
            "split": [u.split for u in kept],
            "transcript": [u.transcript for u in kept],
            "intended": [u.intended for u in kept],
        }
    )
    for key in sorted({k for u in kept for k in u.extra}):
        info[key] = [u.extra.get(key, "") for u in kept]
    return info


def _finish(
    df: pd.DataFrame,
    ratings: pd.DataFrame,
    meta: dict[str, Any],
    exclusions: dict[str, int],
    ls: LabelSet,
    amb_meta: dict[str, Any],
    prov: dict[str, Any],
    out: str | os.PathLike | None,
    ratings_out: str | os.PathLike | None,
) -> Manifest:
    full_meta = {
        "label_set": ls.to_meta(),
        "ambiguity": amb_meta,
        "exclusions": dict(sorted(exclusions.items())),
        "provenance": prov,
        **meta,
    }
    if out is None:
        where = f"dataset {meta['dataset']!r}"
        validate(df, full_meta, where=where)
        m = Manifest(resolve_audio(df, full_meta, where, Path(meta["audio_root"]).absolute()), full_meta)
        m.ratings = ratings
        return m
    out = Path(out)
    write_manifest(df, out, label_set=ls, ambiguity=amb_meta, exclusions=exclusions, provenance=prov, **meta)
    write_ratings(ratings, ratings_out or default_ratings_path(out))
    return read_manifest(out)


def default_ratings_path(manifest_path: str | os.PathLike) -> Path:
    """Where the ratings table of a manifest goes: ``ratings.parquet`` beside ``manifest.parquet``."""
    p = Path(manifest_path)
    return p.with_name(RATINGS_FILE) if p.name == "manifest.parquet" else p.with_name(f"{p.stem}.{RATINGS_FILE}")


@dataclass
class _Audio:
    """Audio of the kept utterances: ids with their stored path ("" when labels-only) and duration,
    ``missing`` (ids without a file), ``excluded`` (those of them left out)."""

    ids: list[str]
    paths: list[str]
    durations: list[float]
    missing: list[str]
    excluded: list[str]


def _check_audio(kept: list[Utterance], name: str, root: Path, allow_missing: bool, max_share: float) -> _Audio:
    """Paths relative to ``root``, durations from the headers, and the missing ids.

    Missing files are excluded (counted) while their share is at most ``max_share``, an error
    above it unless ``allow_missing`` (a labels-only manifest); unreadable files always are.
    """
    from ambiemo.data.audio import AudioError, audio_duration

    if not 0 <= max_share <= 1:
        raise DataError(f"params.yaml datasets.{name}.max_missing_audio must be a share in [0, 1], got {max_share}")
    exists = [bool(u.audio_path) and os.path.isfile(u.audio_path) for u in kept]
    missing = [u.utt_id for u, ok in zip(kept, exists, strict=True) if not ok]
    excluded: list[str] = []
    if missing and not allow_missing:
        share = len(missing) / len(kept)
        if share > max_share:
            example = next(u.audio_path for u in kept if u.utt_id == missing[0])
            raise DataError(
                f"dataset {name!r}: audio missing for {len(missing)} of {len(kept)} utterances ({share:.1%}, more "
                f"than datasets.{name}.max_missing_audio = {max_share:.1%}) under {root} (first: {_first(missing)}; "
                "expected e.g. "
                f"{example}). Fix the root, raise max_missing_audio, or pass --allow-missing-audio to build a "
                "labels-only manifest for annotation statistics"
            )
        excluded, missing = missing, []
    durations = [float("nan")] * len(kept)
    unreadable: list[str] = []
    for i, (u, ok) in enumerate(zip(kept, exists, strict=True)):
        if ok:
            try:
                durations[i] = audio_duration(u.audio_path)
            except AudioError:
                unreadable.append(u.utt_id)
    if unreadable:
        raise DataError(
            f"dataset {name!r}: {len(unreadable)} audio file(s) cannot be read: {_first(unreadable)}; "
            "replace them, or list them under the dataset's `exclude:` in params.yaml"
        )
    base = root.resolve()
    paths = [
        _relative(Path(u.audio_path).resolve(), base, name) if ok else "" for u, ok in zip(kept, exists, strict=True)
    ]
    return _Audio([u.utt_id for u in kept], paths, durations, missing, excluded)


def _relative(path: Path, root: Path, name: str) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise DataError(f"dataset {name!r}: audio file {path} lies outside the dataset root {root}") from None


def _portable(path: Path) -> str:
    """A root inside the working directory is recorded relative to it, so that a manifest's
    provenance does not differ between two checkouts of the same repository."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
