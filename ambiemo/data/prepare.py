"""Preparation: a corpus and its params entry -> ratings table and manifest, the same way for every
corpus (see ``ambiemo.data`` for the flow)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.data.clips import check_audio
from ambiemo.data.corpus import DATASETS, DataError, Loader, Rating, Utterance, _first, get_loader
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
    audio = check_audio(kept, name, root_path, allow_missing_audio, float(spec.get("max_missing_audio", 0.0)))
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


def _info_frame(kept: list[Utterance], name: str, audio: Any) -> pd.DataFrame:
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
        root = Path(meta["audio_root"]).absolute()
        m = Manifest(resolve_audio(df, full_meta, where, root), full_meta)
        m.ratings, m.audio_root = ratings, root
        return m
    out = Path(out)
    write_manifest(df, out, label_set=ls, ambiguity=amb_meta, exclusions=exclusions, provenance=prov, **meta)
    write_ratings(ratings, ratings_out or default_ratings_path(out))
    return read_manifest(out)


def default_ratings_path(manifest_path: str | os.PathLike) -> Path:
    """Where the ratings table of a manifest goes: ``ratings.parquet`` beside ``manifest.parquet``."""
    p = Path(manifest_path)
    return p.with_name(RATINGS_FILE) if p.name == "manifest.parquet" else p.with_name(f"{p.stem}.{RATINGS_FILE}")


def _portable(path: Path) -> str:
    """A root inside the working directory is recorded relative to it, so that a manifest's
    provenance does not differ between two checkouts of the same repository."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
