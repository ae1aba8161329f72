"""Download CREMA-D from its public repository and verify it (``ambiemo data fetch crema-d``).

CREMA-D (github.com/CheyneyComputerScience/CREMA-D, Open Database License) keeps its vote
tables as plain files and its audio in Git LFS. Fetching therefore takes two routes:

- tables (``processedResults/*.csv``, ``SentenceFilenames.csv``, ``VideoDemographics.csv``,
  ``LICENSE.txt``) from raw.githubusercontent.com; their layout is checked (columns, the
  three rating modalities, every clip name parseable, the clip list matching the votes);
- audio (``AudioWAV/<clip>.wav``, 7,442 files, about 600 MB): raw.githubusercontent.com
  serves each file's Git LFS *pointer* (``oid sha256:<hash>``, ``size <bytes>``), which
  gives the official checksum; media.githubusercontent.com serves the content, which is
  streamed to a temporary file, checked against the pointer's size and SHA-256, and only
  then moved into place. A file already present with the right checksum is not fetched
  again, so an interrupted download resumes.

``AudioWAV.sha256`` (``sha256sum`` format) records the verified checksums; ``--verify-only``
checks a copy against it. IEMOCAP and MSP-Podcast are licensed per user and cannot be
fetched.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = "CheyneyComputerScience/CREMA-D"
RAW_BASE = f"https://raw.githubusercontent.com/{REPOSITORY}/master/"
MEDIA_BASE = f"https://media.githubusercontent.com/media/{REPOSITORY}/master/"
TABLES = (
    "processedResults/tabulatedVotes.csv",
    "processedResults/summaryTable.csv",
    "SentenceFilenames.csv",
    "VideoDemographics.csv",
    "LICENSE.txt",
)
CHECKSUM_FILE = "AudioWAV.sha256"
# SHA-256 of the tables ambiemo was developed against. A different hash is reported, not
# refused: upstream may have fixed something; the layout check is what must pass.
KNOWN_TABLES = {
    "processedResults/tabulatedVotes.csv": "774d9d759cb5caf2542758a39eca8c0f1d2777f9987ff5d5adf8066d192f377b",
    "processedResults/summaryTable.csv": "fb0e382700d32c0d9adc0c6815292215a36bcf912f2657048862c91e3bd2b317",
    "SentenceFilenames.csv": "d88cb50e84bbc30b2e159cdfc25e1cf87777ad97c7c41d6ab8f75d3383b8f740",
    "VideoDemographics.csv": "e33ddc8b60bedf98541735801127cbb67098b5957271adbdd5dea8a44294eec3",
}
N_CLIPS = 7442
LFS_POINTER = re.compile(
    rb"^version https://git-lfs\.github\.com/spec/v1\s+oid sha256:(?P<oid>[0-9a-f]{64})\s+"
    rb"size (?P<size>\d+)\s*$"
)
CHUNK = 1 << 16


class FetchError(RuntimeError):
    """A download or a layout that cannot be used."""


@dataclass
class FetchReport:
    """What a fetch or verification found."""

    dest: Path
    tables: dict[str, str] = field(default_factory=dict)  # path -> "ok" | "differs from known version"
    downloaded: int = 0
    already_present: int = 0
    verified: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # clip or file -> reason
    expected_audio: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [f"CREMA-D at {self.dest}"]
        lines += [f"  {path:<40} {state}" for path, state in self.tables.items()]
        if self.expected_audio:
            lines.append(
                f"  audio: {self.expected_audio} clips; downloaded {self.downloaded}, already present "
                f"{self.already_present}, verified {self.verified}, failed {len(self.failed)}"
            )
        for name, reason in sorted(self.failed.items())[:20]:
            lines.append(f"    {name}: {reason}")
        if len(self.failed) > 20:
            lines.append(f"    ... and {len(self.failed) - 20} more")
        lines.append("OK" if self.ok else "INCOMPLETE: run the same command again to retry the failed files")
        return "\n".join(lines)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def parse_lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """(sha256, size) of a Git LFS pointer file; None if ``data`` is not one."""
    m = LFS_POINTER.match(data.strip() + b"\n") if len(data) < 1024 else None
    return (m["oid"].decode(), int(m["size"])) if m else None


def verify_tables(dest: Path) -> dict[str, str]:
    """Check the tables' layout; returns path -> state. Raises ``FetchError`` if unusable."""
    import pandas as pd

    from ambiemo.data import DataError
    from ambiemo.data.crema_d import VOTE_COLUMNS, parse_clip_name

    states = {}
    for rel in TABLES:
        path = dest / rel
        if not path.is_file():
            raise FetchError(f"{path}: missing")
        known = KNOWN_TABLES.get(rel)
        states[rel] = (
            "ok"
            if known is None or sha256_file(path) == known
            else "ok (differs from the version ambiemo was tested with)"
        )
    votes_path = dest / "processedResults" / "tabulatedVotes.csv"
    votes = pd.read_csv(votes_path, index_col=0)
    missing = [c for c in (*VOTE_COLUMNS, "fileName") if c not in votes.columns]
    if missing:
        raise FetchError(f"{votes_path}: missing column(s) {missing}")
    modality = pd.Series(votes.index // 100000).value_counts().to_dict()
    if sorted(modality) != [1, 2, 3] or len(set(modality.values())) != 1:
        raise FetchError(
            f"{votes_path}: expected the same number of rows for modalities 1, 2, 3 "
            f"(row index // 100000), got {modality}"
        )
    try:
        for line, name in enumerate(votes["fileName"], start=2):
            parse_clip_name(str(name), f"{votes_path}:{line}")
    except DataError as e:
        raise FetchError(str(e)) from e
    clips = set(pd.read_csv(dest / "SentenceFilenames.csv")["Filename"].astype(str))
    voice = set(votes.loc[votes.index // 100000 == 1, "fileName"].astype(str))
    if clips != voice:
        raise FetchError(
            f"{dest / 'SentenceFilenames.csv'}: its {len(clips)} clips differ from the "
            f"{len(voice)} voice-only rows of {votes_path} (e.g. {sorted(clips ^ voice)[:3]})"
        )
    return states


def clip_names(dest: Path) -> list[str]:
    import pandas as pd

    return sorted(pd.read_csv(dest / "SentenceFilenames.csv")["Filename"].astype(str))


def _download(client, url: str, target: Path) -> None:
    """Fetch ``url`` to ``target`` atomically (a partial download never has the final name)."""
    from ambiemo.core.tables import user_file_mode

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, client.stream("GET", url) as r:
            if r.status_code != 200:
                raise FetchError(f"HTTP {r.status_code} for {url}")
            for block in r.iter_bytes(CHUNK):
                f.write(block)
        os.chmod(tmp, user_file_mode())  # mkstemp's 0600 would outlive the rename
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch_clip(client, name: str, dest: Path, raw_base: str, media_base: str, retries: int) -> tuple[str, str]:
    """Download and verify one clip; returns (state, sha256). state: downloaded | present."""
    import httpx

    rel = f"AudioWAV/{name}.wav"
    r = client.get(raw_base + rel)
    if r.status_code != 200:
        raise FetchError(f"HTTP {r.status_code} for its LFS pointer {raw_base + rel}")
    pointer = parse_lfs_pointer(r.content)
    if pointer is None:
        raise FetchError(f"{raw_base + rel} is not a Git LFS pointer; cannot know its checksum")
    oid, size = pointer
    target = dest / rel
    if target.is_file() and target.stat().st_size == size and sha256_file(target) == oid:
        return "present", oid
    last = ""
    for _ in range(retries):
        try:
            _download(client, media_base + rel, target)
        except (httpx.HTTPError, FetchError, OSError) as e:  # transient: retry, then report
            last = str(e) or type(e).__name__
            continue
        got_size = target.stat().st_size
        if got_size == size and sha256_file(target) == oid:
            return "downloaded", oid
        head = target.read_bytes()[:200]
        target.unlink()
        last = (
            "the server sent a Git LFS pointer instead of the audio"
            if parse_lfs_pointer(head)
            else f"size {got_size} / sha256 mismatch (expected {size} bytes, sha256 {oid[:12]}...)"
        )
    raise FetchError(last)


def fetch_crema_d(
    dest: str | os.PathLike,
    audio: bool = True,
    workers: int = 8,
    *,
    raw_base: str | None = None,
    media_base: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> FetchReport:
    """Download CREMA-D into ``dest`` in the repository's layout and verify every file.

    ``raw_base`` / ``media_base`` default to ``RAW_BASE`` / ``MEDIA_BASE`` (a mirror with the
    same paths can stand in). Failed clips are listed in the report, not raised.
    """
    import httpx

    raw_base = raw_base or RAW_BASE
    media_base = media_base or MEDIA_BASE
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport(dest)
    say = progress or (lambda message: None)
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for rel in TABLES:
            try:
                _download(client, raw_base + rel, dest / rel)
            except (httpx.HTTPError, FetchError) as e:
                raise FetchError(f"could not download {rel} from {raw_base}: {e}") from e
            if parse_lfs_pointer((dest / rel).read_bytes()[:1024]):
                raise FetchError(f"{rel}: the server sent a Git LFS pointer, not the table")
        report.tables = verify_tables(dest)
        say(f"tables verified in {dest}")
        if not audio:
            return report
        names = clip_names(dest)
        report.expected_audio = len(names)
        checksums: dict[str, str] = {}
        lock = threading.Lock()

        def one(name: str) -> None:
            try:
                state, oid = _fetch_clip(client, name, dest, raw_base, media_base, retries)
            except (httpx.HTTPError, FetchError, OSError) as e:
                with lock:
                    report.failed[name] = str(e)
                return
            with lock:
                checksums[name] = oid
                report.verified += 1
                if state == "downloaded":
                    report.downloaded += 1
                else:
                    report.already_present += 1
                done = report.verified + len(report.failed)
                if done % 500 == 0:
                    say(f"audio: {done}/{len(names)}")

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(one, names))
    _write_checksums(dest, checksums)
    return report


def _write_checksums(dest: Path, checksums: dict[str, str]) -> None:
    path = dest / CHECKSUM_FILE
    old = _read_checksums(path) if path.is_file() else {}
    old.update(checksums)
    text = "".join(f"{sha}  AudioWAV/{name}.wav\n" for name, sha in sorted(old.items()))
    path.write_text(text)


def _read_checksums(path: Path) -> dict[str, str]:
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        m = re.match(r"^([0-9a-f]{64})\s+\*?AudioWAV/(.+)\.wav$", line.strip())
        if not m:
            raise FetchError(f"{path}:{lineno}: not a sha256sum line: {line!r}")
        out[m[2]] = m[1]
    return out


def verify_crema_d(dest: str | os.PathLike, audio: bool = True) -> FetchReport:
    """Check a local copy: the tables' layout, and every clip against ``AudioWAV.sha256``."""
    dest = Path(dest)
    report = FetchReport(dest, tables=verify_tables(dest))
    if not audio:
        return report
    names = clip_names(dest)
    report.expected_audio = len(names)
    path = dest / CHECKSUM_FILE
    if not path.is_file():
        raise FetchError(f"{path}: no checksums recorded; run `ambiemo data fetch crema-d --dest {dest}` first")
    checksums = _read_checksums(path)
    for name in names:
        wav = dest / "AudioWAV" / f"{name}.wav"
        if name not in checksums:
            report.failed[name] = "no recorded checksum"
        elif not wav.is_file():
            report.failed[name] = "missing"
        elif sha256_file(wav) != checksums[name]:
            head = wav.read_bytes()[:200]
            report.failed[name] = "a Git LFS pointer, not audio" if parse_lfs_pointer(head) else "sha256 mismatch"
        else:
            report.verified += 1
    return report
