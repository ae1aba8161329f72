"""Corpora -> manifests.

Each corpus has a loader module registered by name in ``DATASETS`` (``iemocap``,
``msp-podcast``, ``crema-d``, ``demo``). A loader reads the corpus in the layout its owners
distribute and returns a ``Corpus``: one ``Utterance`` per clip with its raters' categories
as lowercase English words, plus what the loader itself left out and why. It knows nothing
about label sets. ``prepare_dataset`` does the rest, the same way for every corpus:

    loader(root, spec) -> Corpus
      -> label set and vote policy (params)   -> votes per label, exclusions counted
      -> audio checked (missing / unreadable) -> durations
      -> manifest written (``ambiemo.manifest``)

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

from ambiemo.labels import MULTI_LABEL_RULES, OTHER, VOTE_POLICIES, AmbiguityBins, label_set_from_params, tally_votes
from ambiemo.manifest import Manifest, build_manifest, read_manifest, validate, write_manifest
from ambiemo.registry import Registry


@dataclass
class Utterance:
    """One clip as a loader sees it. ``ratings`` has one tuple of categories per rater."""

    utt_id: str
    ratings: list[tuple[str, ...]]
    audio_path: str = ""  # where the audio should be (checked later)
    speaker: str = ""
    gender: str = ""  # "female" | "male" | ""
    split: str = ""
    transcript: str = ""
    intended: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Corpus:
    """What a loader returns.

    ``vocabulary``: every category the corpus can produce (so that a label set naming
    something the corpus never uses is caught). ``excluded``: reason -> utterance ids the
    loader left out. ``filtered``: reason -> how many utterances a selection in params
    left out, where listing their ids would say nothing (MSP-Podcast's other splits).
    ``dropped_votes``: reason -> votes the loader did not pass on (for example IEMOCAP
    self-evaluations).
    """

    utterances: list[Utterance]
    vocabulary: frozenset[str]
    excluded: dict[str, list[str]] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    dropped_votes: dict[str, float] = field(default_factory=dict)


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


def prepare_dataset(  # noqa: C901 -- split up by the corpora work (issue 9)
    name: str,
    params: Mapping[str, Any],
    root: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    label_set: str | None = None,
    allow_missing_audio: bool = False,
    base_dir: str | os.PathLike | None = None,
) -> Manifest:
    """Build (and with ``out``, write) the manifest of dataset ``name`` from params.

    ``params`` is the whole params.yaml (this reads ``datasets.<name>``, ``label_sets``,
    ``ambiguity`` and ``seed``). ``root`` overrides ``datasets.<name>.root``; a relative root
    is taken relative to ``base_dir`` (default: the working directory, the repository root
    for DVC). ``label_set`` overrides ``datasets.<name>.label_set``. Missing audio is an
    error unless ``allow_missing_audio``, which builds a labels-only manifest.
    """
    from ambiemo.provenance import provenance

    spec = dataset_spec(params, name)
    loader = get_loader(spec["loader"])
    root_path = Path(root if root is not None else spec.get("root", ""))
    if not root_path.is_absolute():
        root_path = Path(base_dir or Path.cwd()) / root_path
    if not getattr(loader, "creates_root", False) and not root_path.is_dir():
        raise DataError(
            f"{root_path}: dataset root for {name!r} does not exist; set params.yaml "
            f"datasets.{name}.root to where the corpus is, or pass --root"
        )
    if spec.get("seed") is None:  # a dataset's own seed, else the study's
        spec["seed"] = params.get("seed")

    ls_name = label_set or spec.get("label_set")
    if not ls_name:
        raise DataError(
            f"params.yaml datasets.{name} needs `label_set:` (one of {sorted(params.get('label_sets') or {})})"
        )
    ls = label_set_from_params(params, ls_name)
    policy = spec.get("votes", "drop_utterance")
    multi = spec.get("multi_label", "split")
    if policy not in VOTE_POLICIES:
        raise DataError(f"params.yaml datasets.{name}.votes must be one of {list(VOTE_POLICIES)}, got {policy!r}")
    if multi not in MULTI_LABEL_RULES:
        raise DataError(
            f"params.yaml datasets.{name}.multi_label must be one of {list(MULTI_LABEL_RULES)}, got {multi!r}"
        )
    if policy == OTHER:
        ls = ls.with_other()

    corpus = loader(root_path.resolve(), spec)
    excluded: dict[str, list[str]] = {k: list(v) for k, v in corpus.excluded.items() if v}
    dropped_votes = {k: float(v) for k, v in corpus.dropped_votes.items() if v}

    never_used = [
        x
        for x in ls.labels
        if x != OTHER and x not in corpus.vocabulary and not any(ls.canonical(c) == x for c in corpus.vocabulary)
    ]
    if never_used:
        raise DataError(
            f"label set {ls.name!r} {list(ls.labels)} has label(s) {never_used} that dataset {name!r} "
            f"never uses; its categories are {sorted(corpus.vocabulary)}"
        )

    ids = [u.utt_id for u in corpus.utterances]
    dupes = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dupes:
        raise DataError(f"dataset {name!r}: {len(dupes)} duplicate utterance id(s): {_first(dupes)}")

    utts = sorted(corpus.utterances, key=lambda u: u.utt_id)
    tally = tally_votes([u.ratings for u in utts], ls, policy=policy, multi_label=multi)
    if tally.dropped_votes:
        dropped_votes["outside_label_set"] = dropped_votes.get("outside_label_set", 0.0) + tally.dropped_votes
    keep = np.ones(len(utts), dtype=bool)
    for i, u in enumerate(utts):
        if not u.ratings:
            reason = "no_ratings"
        elif policy == "drop_utterance" and tally.out_of_set[i]:
            reason = "votes_outside_label_set"
        elif tally.votes[i].sum() <= 0:
            reason = "all_votes_outside_label_set"
        else:
            continue
        keep[i] = False
        excluded.setdefault(reason, []).append(u.utt_id)
    kept = [u for u, k in zip(utts, keep, strict=True) if k]

    # Out-of-set categories seen, whatever the policy did with them (for the stats report).
    outside: Counter[str] = Counter()
    for seen in tally.out_of_set:
        outside.update(seen)

    audio_paths, durations, missing = _check_audio(kept, name, root_path, allow_missing_audio)
    info = pd.DataFrame(
        {
            "utt_id": [u.utt_id for u in kept],
            "dataset": name,
            "audio_path": audio_paths,
            "duration_s": durations,
            "speaker": [u.speaker for u in kept],
            "gender": [u.gender for u in kept],
            "split": [u.split for u in kept],
            "transcript": [u.transcript for u in kept],
            "intended": [u.intended for u in kept],
        }
    )
    for key in sorted({k for u in kept for k in u.extra}):
        info[key] = [u.extra.get(key, "") for u in kept]
    bins = AmbiguityBins.from_params({**(params.get("ambiguity") or {}), **(spec.get("ambiguity") or {})})
    df, amb_meta = build_manifest(info, tally.votes[keep], tally.n_raters[keep], ls, bins)

    used_params = {
        "datasets": {name: dict(params["datasets"][name])},
        "label_sets": {ls_name: params["label_sets"][ls_name]},
        "ambiguity": params.get("ambiguity") or {},
    }
    meta = {
        "dataset": name,
        "vote_policy": policy,
        "multi_label": multi,
        "excluded_ids": {k: sorted(v) for k, v in sorted(excluded.items())},
        "dropped_votes": {k: round(v, 6) for k, v in sorted(dropped_votes.items())},
        "categories_outside_label_set": {k: round(v, 6) for k, v in sorted(outside.items())},
        "audio": {"missing": len(missing), "labels_only": bool(missing)},
    }
    exclusions = {**{k: len(v) for k, v in excluded.items()}, **{k: int(v) for k, v in corpus.filtered.items() if v}}
    prov = provenance(used_params, seed=spec.get("seed"), root=_portable(root_path))
    full_meta = {
        "label_set": ls.to_meta(),
        "ambiguity": amb_meta,
        "exclusions": dict(sorted(exclusions.items())),
        "provenance": prov,
        **meta,
    }
    if out is None:
        validate(df, full_meta, where=f"dataset {name!r}")
        return Manifest(df, full_meta)
    write_manifest(df, out, label_set=ls, ambiguity=amb_meta, exclusions=exclusions, provenance=prov, **meta)
    return read_manifest(out)


def _check_audio(
    kept: list[Utterance], name: str, root: Path, allow_missing: bool
) -> tuple[list[str], np.ndarray, list[str]]:
    """Absolute audio paths ("" where missing), durations from the headers, and missing ids.

    Missing files are an error unless ``allow_missing``; unreadable files always are.
    """
    from ambiemo.audio import AudioError, audio_duration

    exists = [bool(u.audio_path) and os.path.isfile(u.audio_path) for u in kept]
    missing = [u.utt_id for u, ok in zip(kept, exists, strict=True) if not ok]
    if missing and not allow_missing:
        example = next(u.audio_path for u in kept if u.utt_id == missing[0])
        raise DataError(
            f"dataset {name!r}: audio missing for {len(missing)} of {len(kept)} utterances under "
            f"{root} (first: {_first(missing)}; expected e.g. {example}). Fix the root, or pass "
            "--allow-missing-audio to build a labels-only manifest for annotation statistics"
        )
    durations = np.full(len(kept), np.nan)
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
    paths = [str(Path(u.audio_path).resolve()) if ok else "" for u, ok in zip(kept, exists, strict=True)]
    return paths, durations, missing


def _portable(path: Path) -> str:
    """A root inside the working directory is recorded relative to it, so that a manifest's
    provenance does not differ between two checkouts of the same repository."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
