"""The ratings table: one row per rating, the per-annotator record behind a manifest's votes.

``ambiemo data prepare`` writes it beside the manifest as
``results/prepared/<dataset>/ratings.parquet``, for the utterances the manifest keeps.
Columns:

    utt_id     str    the utterance (as in the manifest)
    rater      str    the corpus's rater id (``E2`` for IEMOCAP's ``C-E2``, ``WORKER00014``);
                      corpora without ids (CREMA-D's tabulated counts) get ``r0``, ``r1`` ...
    category   str    the category as the corpus spells it (``Neutral state``, ``Other-Concerned``)
    label      str    the label it counts as in the dataset's label set after merges
                      (``other`` under the vote policy ``other``); null when outside the set
    weight     float  this rating's share of the rater's vote after the multi-label rule
                      (primary; spellings that merge into one label share it), or its share of
                      params ``secondary_weight`` (secondary; 0 by default, and 0 for a secondary
                      that repeats the rater's primary); a row with a null label keeps its share
                      but counts for nothing
    kind       str    ``primary`` | ``secondary``
    self_eval  bool   an actor's evaluation of their own turn (IEMOCAP ``C-F*`` / ``C-M*``)

The manifest's vote counts are derived from it, nothing else: ``votes_<L>`` of an utterance
is the sum of ``weight`` over its rows with ``label == L``, and ``n_raters`` is the number
of distinct raters with a row of positive weight and a label (``votes_from_ratings``).
Ratings dropped before the table (no category, a rater listed twice) are counted in the
manifest's ``dropped_votes``, not listed here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("utt_id", "rater", "category", "label", "weight", "kind", "self_eval")
KINDS = ("primary", "secondary")
FILE_NAME = "ratings.parquet"


class RatingsError(ValueError):
    """A ratings table that does not follow the schema above."""


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the schema's columns, in order, and fixed dtypes."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RatingsError(f"ratings table misses column(s) {missing}; has {list(df.columns)}")
    out = pd.DataFrame(
        {
            "utt_id": df["utt_id"].astype(str),
            "rater": df["rater"].astype(str),
            "category": df["category"].astype(str),
            "label": df["label"].astype(object).where(df["label"].notna(), None),
            "weight": df["weight"].astype("float64"),
            "kind": df["kind"].astype(str),
            "self_eval": df["self_eval"].astype(bool),
        }
    )
    return out.reset_index(drop=True)


def validate(df: pd.DataFrame, where: str = "ratings") -> None:
    bad_kind = ~df["kind"].isin(KINDS)
    if bad_kind.any():
        raise RatingsError(f"{where}: kind must be one of {KINDS}; got {sorted(set(df.loc[bad_kind, 'kind']))}")
    w = df["weight"].to_numpy(dtype=float)
    if not np.isfinite(w).all() or (w < 0).any():
        raise RatingsError(f"{where}: weights must be finite and >= 0")


def write_ratings(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a ratings table (atomically: a crash leaves the old file or none)."""
    path = Path(path)
    df = coerce(df)
    validate(df, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a ratings table written by ``ambiemo data prepare``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ratings table here; build it with `ambiemo data prepare <dataset>`")
    df = coerce(pd.read_parquet(path))
    validate(df, str(path))
    return df


def votes_from_ratings(
    df: pd.DataFrame, utt_ids: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Vote counts (n_utterances, n_labels) and raters counted per utterance, from the table."""
    row = {u: i for i, u in enumerate(utt_ids)}
    col = {x: j for j, x in enumerate(labels)}
    votes = np.zeros((len(row), len(col)))
    counted = df[df["label"].notna() & (df["weight"] > 0) & df["utt_id"].isin(row)]
    if len(counted):
        i = counted["utt_id"].map(row).to_numpy()
        j = counted["label"].map(col)
        if j.isna().any():
            raise RatingsError(
                f"ratings name label(s) {sorted(set(counted['label'][j.isna()]))} outside {list(labels)}"
            )
        np.add.at(votes, (i, j.to_numpy(dtype=int)), counted["weight"].to_numpy(dtype=float))
    raters = counted.groupby("utt_id")["rater"].nunique()
    n_raters = np.array([int(raters.get(u, 0)) for u in utt_ids], dtype=int)
    return votes, n_raters
