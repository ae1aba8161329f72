"""The manifest: one parquet per dataset, one row per utterance, the ground truth of every stage.

Columns, in this order:

    utt_id        unique id (the corpus's own)
    dataset       params key of the dataset (``iemocap``, ``crema-d``, ``demo`` ...)
    audio_path    the audio, relative to the corpus root (metadata ``audio_root``) on disk and
                  absolute once read; "" in a labels-only manifest
    duration_s    seconds (NaN when the audio is absent)
    speaker       speaker id;  gender: ``female`` | ``male`` | ""
    split         official split, session or fold ("" where the corpus has none)
    transcript    "" where unknown
    intended      the acted / designed emotion, "" where the corpus has none
    votes_<L>     annotators' votes for label L (float: a rater naming k labels gives 1/k each)
    p_<L>         votes_<L> / sum of votes: the soft label, rows sum to 1
    n_raters      raters whose vote counted
    majority      label with most votes, "" on a tie;  majority_tie: bool
    entropy_bits  Shannon entropy of p in bits;  max_share: max of p;  n_distinct: labels with votes
    ambiguity     bin name: ``clear`` (unanimous), then e.g. ``low``, ``medium``, ``high``

A loader may add columns after these (CREMA-D's ``intensity``, the demo's ``blend``).
Parquet metadata (``ambiemo.core.tables``): ``label_set`` {name, labels}, ``ambiguity``
{method, edges, bins}, ``exclusions`` {reason: count}, ``excluded_ids`` {reason: [ids]},
``dropped_votes``, ``audio`` {missing, labels_only}, ``vote_policy``, ``multi_label``,
``provenance``, ``audio_root`` (the corpus root, relative to the working directory where it
lies inside it), ``source`` (what the loader read). ``read_manifest`` is the one reader; it
checks all of this (a ``votes_``/``p_`` column of a label outside the label set is refused) and
resolves the audio paths against the root (or one passed to it, when the corpus has moved).
Reading looks at no audio file; ``Manifest.require_audio`` checks every clip a run needs,
whatever its row: none there means the corpus has moved or is not mounted, some missing are
named (``N of M clips missing: ...``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambiemo.core.tables import LabelledTable, read_table, row_check, write_table
from ambiemo.data.labels import CLEAR, AmbiguityBins, LabelSet, describe_votes

log = logging.getLogger(__name__)

# Text columns describing an utterance; a loader fills what its corpus knows, "" otherwise.
INFO_COLUMNS = ("utt_id", "dataset", "audio_path", "duration_s", "speaker", "gender", "split", "transcript", "intended")
STATS_COLUMNS = ("n_raters", "majority", "majority_tie", "entropy_bits", "max_share", "n_distinct", "ambiguity")
TEXT_COLUMNS = (
    "utt_id",
    "dataset",
    "audio_path",
    "speaker",
    "gender",
    "split",
    "transcript",
    "intended",
    "majority",
    "ambiguity",
)


def manifest_columns(labels: Sequence[str]) -> list[str]:
    """The required columns, in order, for a label set."""
    return [*INFO_COLUMNS, *(f"votes_{x}" for x in labels), *(f"p_{x}" for x in labels), *STATS_COLUMNS]


class ManifestError(ValueError):
    """A manifest that does not follow the schema above."""


class Manifest(LabelledTable):
    """A manifest read and checked by ``read_manifest``. ``ratings``: the ratings table
    (``ambiemo.data.ratings``) where the manifest was just built in memory."""

    ratings: pd.DataFrame | None = None
    # The corpus root its audio paths were resolved against (None: absolute paths or labels-only).
    audio_root: Path | None = None

    @property
    def dataset(self) -> str:
        return str(self.df["dataset"].iloc[0]) if len(self.df) else str(self.meta.get("dataset", ""))

    @property
    def exclusions(self) -> dict[str, int]:
        return dict(self.meta.get("exclusions", {}))

    def votes(self) -> np.ndarray:
        return self.matrix("votes_")

    def ambiguity_order(self) -> list[str]:
        """Bin names from least to most ambiguous."""
        return list(self.meta["ambiguity"]["bins"])

    def missing_audio(self, rows: int | None = None) -> tuple[list[str], int]:
        """(utt_ids whose audio file is not there, clips looked for) over the first ``rows`` rows (all:
        None), every row checked whatever its position; rows without audio (a labels-only manifest) are
        not looked for."""
        paths = self.df["audio_path"].astype(str).iloc[:rows]
        wanted = paths != ""
        gone = [not os.path.isfile(p) for p in paths[wanted]]
        return self.df["utt_id"].astype(str).iloc[:rows][wanted][gone].tolist(), int(wanted.sum())

    def require_audio(self, rows: int | None = None) -> list[str]:
        """Check every clip a run will need (the first ``rows`` rows): when none is there, the corpus has
        moved or is not mounted (``ManifestError`` naming the root); when some are missing, a warning
        names each (``N of M clips missing: ...``) and their ids are returned, so that the run records
        each as a failure of its utterance wherever it lies in the manifest."""
        missing, looked = self.missing_audio(rows)
        where = self.path if self.path is not None else "manifest"
        if looked and len(missing) == looked and (rows is None or len(self.missing_audio()[0]) == looked_all(self)):
            root = self.audio_root
            state = (
                "does not exist"
                if root is not None and not root.is_dir()
                else f"holds none of its {looked_all(self)} clips"
            )
            raise ManifestError(
                f"{where}: audio root {root} {state}; the corpus has moved or is not mounted: set params.yaml "
                "datasets.<name>.root to where it is now and prepare again, or pass its new root to "
                "read_manifest(audio_root=...)"
            )
        if missing:
            log.warning("%s: %s", where, describe_missing(missing, looked))
        return missing


def looked_all(manifest: Manifest) -> int:
    """How many rows of ``manifest`` name an audio file."""
    return int((manifest.df["audio_path"].astype(str) != "").sum())


def describe_missing(missing: Sequence[str], looked: int, n: int = 10) -> str:
    """``N of M clips missing: a, b, ...`` (the first ``n`` named)."""
    more = f" ... ({len(missing) - n} more)" if len(missing) > n else ""
    return f"{len(missing)} of {looked} clips missing: {', '.join(missing[:n])}{more}"


def build_manifest(
    info: pd.DataFrame, votes: np.ndarray, n_raters: np.ndarray, label_set: LabelSet, bins: AmbiguityBins
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Assemble the manifest's rows from utterance info and vote counts.

    ``info`` has the ``INFO_COLUMNS`` (missing ones are filled with "" / NaN) and any extra
    columns, one row per utterance, aligned with ``votes`` (n, n_labels) and ``n_raters``.
    Returns the frame and the ``ambiguity`` metadata (with the edges actually used).
    """
    info = info.reset_index(drop=True).copy()
    if len(info) != len(votes) or len(info) != len(n_raters):
        raise ValueError(f"{len(info)} utterances but {len(votes)} vote rows and {len(n_raters)} rater counts")
    labels = label_set.labels
    for col in INFO_COLUMNS:
        if col not in info:
            info[col] = np.nan if col == "duration_s" else ""
    derived = describe_votes(votes, labels) if len(info) else {c: [] for c in manifest_columns(labels)}
    ambiguity, edges = bins.assign(np.asarray(derived["entropy_bits"], dtype=float))
    cols: dict[str, Any] = {c: info[c] for c in INFO_COLUMNS}
    cols.update({f"votes_{x}": np.asarray(votes, dtype=float)[:, j] for j, x in enumerate(labels)})
    cols.update({f"p_{x}": derived[f"p_{x}"] for x in labels})
    cols.update(
        n_raters=np.asarray(n_raters, dtype="int64"),
        majority=derived["majority"],
        majority_tie=derived["majority_tie"],
        entropy_bits=derived["entropy_bits"],
        max_share=derived["max_share"],
        n_distinct=derived["n_distinct"],
        ambiguity=ambiguity,
    )
    df = pd.DataFrame(cols)
    extras = [c for c in info.columns if c not in df.columns]
    for c in extras:
        df[c] = info[c].to_numpy()
    return _coerce(df, labels), bins.to_meta(edges)


def _coerce(df: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Fixed dtypes, so that parquet files of equal content are byte-identical."""
    df = df.copy()
    for c in TEXT_COLUMNS:
        df[c] = df[c].fillna("").astype(str).astype(object)
    for c in ("duration_s", "entropy_bits", "max_share", *(f"votes_{x}" for x in labels), *(f"p_{x}" for x in labels)):
        df[c] = df[c].astype("float64")
    for c in ("n_raters", "n_distinct"):
        df[c] = df[c].astype("int64")
    df["majority_tie"] = df["majority_tie"].astype(bool)
    return df


def write_manifest(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    label_set: LabelSet,
    ambiguity: Mapping[str, Any],
    exclusions: Mapping[str, int],
    provenance: Mapping[str, Any] | None = None,
    **meta: Any,
) -> Path:
    """Check ``df`` against the schema and write it with its metadata (atomically).

    ``exclusions`` maps each reason an utterance was left out to how many were; further
    keyword arguments (``excluded_ids``, ``dropped_votes``, ``audio`` ...) go into the metadata.
    """
    full_meta = {
        "label_set": label_set.to_meta(),
        "ambiguity": dict(ambiguity),
        "exclusions": {str(k): int(v) for k, v in sorted(exclusions.items())},
        "provenance": dict(provenance or {}),
        **meta,
    }
    df = _coerce(df, label_set.labels)
    validate(df, full_meta, where=str(path))
    return write_table(df, path, full_meta)


def read_manifest(path: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> Manifest:
    """Read a manifest and check its schema; the one way stages read manifests.

    Audio paths come back absolute: each stored path joined to ``audio_root`` (default: the
    root recorded at prepare time; a relative one is taken from the working directory).
    Reading checks no audio file (scoring needs none); a stage that does calls
    ``Manifest.require_audio``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no manifest here; build it with `ambiemo data prepare <dataset> --out {path}`"
        )
    df, meta = read_table(path)
    validate(df, meta, where=str(path))
    manifest = Manifest(resolve_audio(df, meta, where=str(path), audio_root=audio_root), meta, path)
    given = audio_root if audio_root is not None else meta.get("audio_root")
    manifest.audio_root = None if given is None else Path(given).absolute()
    return manifest


def resolve_audio(
    df: pd.DataFrame, meta: Mapping[str, Any], where: str, audio_root: str | os.PathLike | None = None
) -> pd.DataFrame:
    """``df`` with its relative ``audio_path`` values joined to the corpus root (no file is checked
    here: ``Manifest.missing_audio`` does that). Manifests from before relative paths (absolute
    paths, no ``audio_root``) are returned as they are."""
    given = audio_root if audio_root is not None else meta.get("audio_root")
    stored = df["audio_path"].astype(str)
    relative = (stored != "") & ~stored.map(lambda p: Path(p).is_absolute())
    if not relative.any():
        return df
    if given is None:
        raise ManifestError(f"{where}: audio paths are relative but the metadata names no audio_root")
    root = Path(given).absolute()
    df = df.copy()
    df.loc[relative, "audio_path"] = [str(root / p) for p in stored[relative]]
    return df


def validate(df: pd.DataFrame, meta: Mapping[str, Any], where: str = "manifest") -> None:
    """Raise ``ManifestError`` naming the file, the column and the utterance ids at fault."""
    ls = meta.get("label_set")
    if not isinstance(ls, Mapping) or not ls.get("name") or not ls.get("labels"):
        raise ManifestError(
            f"{where}: metadata has no label_set {{name, labels}}; rebuild it with `ambiemo data prepare`"
        )
    labels = list(ls["labels"])
    amb = meta.get("ambiguity")
    if not isinstance(amb, Mapping) or "bins" not in amb or "edges" not in amb:
        raise ManifestError(f"{where}: metadata has no ambiguity {{method, edges, bins}}")
    missing = [c for c in manifest_columns(labels) if c not in df.columns]
    if missing:
        raise ManifestError(f"{where}: missing column(s) {missing} for label set {ls['name']!r} {labels}")
    expected = set(manifest_columns(labels))
    extra = [c for c in df.columns if str(c).startswith(("votes_", "p_")) and c not in expected]
    if extra:
        raise ManifestError(
            f"{where}: column(s) {extra} are for label(s) outside the label set {ls['name']!r} {labels}: their "
            "votes would be ignored. Rebuild the manifest with `ambiemo data prepare` under the label set that "
            "has them, or drop the columns"
        )
    if len(df) == 0:
        return

    bad = row_check(df, ["utt_id"], where, ManifestError, noun="utterance")

    ids = df["utt_id"].astype(str)
    bad(ids.str.len() == 0, "have an empty utt_id")
    bad(ids.duplicated(keep=False), "share a utt_id")
    votes = df[[f"votes_{x}" for x in labels]].to_numpy(dtype=float)
    p = df[[f"p_{x}" for x in labels]].to_numpy(dtype=float)
    bad(~np.isfinite(votes).all(axis=1) | (votes < 0).any(axis=1), "have negative or missing votes")
    bad(votes.sum(axis=1) <= 0, "have no votes")
    bad(~np.isclose(p.sum(axis=1), 1.0, atol=1e-6), "have p_* not summing to 1")
    bad(
        ~np.isclose(p, votes / votes.sum(axis=1, keepdims=True), atol=1e-6).all(axis=1),
        "have p_* that are not their normalised votes_*",
    )
    bad(~df["majority"].isin([*labels, ""]), f"have a majority outside the label set {labels}")
    bins = list(amb["bins"])
    bad(~df["ambiguity"].isin(bins), f"have an ambiguity bin outside {bins}")
    bad(
        (df["ambiguity"] == CLEAR).to_numpy() != (df["entropy_bits"].to_numpy() <= 1e-9),
        "are `clear` without zero entropy (or the reverse)",
    )
