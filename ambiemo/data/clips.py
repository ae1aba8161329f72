"""The audio of a corpus at preparation: every clip present (or counted missing), readable and with
at least one sample (or named, with the other corrupt ones), its path relative to the corpus root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ambiemo.data.corpus import DataError, Utterance, _first


@dataclass
class _Audio:
    """Audio of the kept utterances: ids with their stored path ("" when labels-only) and duration,
    ``missing`` (ids without a file), ``excluded`` (those of them left out)."""

    ids: list[str]
    paths: list[str]
    durations: list[float]
    missing: list[str]
    excluded: list[str]


def check_audio(kept: list[Utterance], name: str, root: Path, allow_missing: bool, max_share: float) -> _Audio:
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
            except AudioError as e:
                why = "no samples" if "no samples" in str(e) else "unreadable header"
                unreadable.append(f"{u.utt_id} ({why}: {u.audio_path})")
    if unreadable:
        raise DataError(
            f"dataset {name!r}: {len(unreadable)} audio file(s) cannot be read: {_first(unreadable)}; replace "
            "them (a clip without a single sample is as corrupt as one whose header cannot be read), or list them "
            "under the dataset's `exclude:` in params.yaml"
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
