"""Model weights on machines without network: fetch once, load offline, fail within seconds.

GPU nodes of university clusters usually cannot reach the model hub. ambiemo therefore never
lets a load wander into minutes of hub retries:

- ``ambiemo models fetch KEY ... --dest DIR`` (on a machine with network) downloads each model's
  pinned ``checkpoint`` at its ``revision`` into ``DIR/<org>--<name>@<revision>/``, checks every
  file against the hub's size and LFS SHA-256, and prints the size and the folder.
- Loading looks, in order, in params ``paths.weights_dir`` (that layout; copy ``DIR`` there),
  then in the Hugging Face cache (``HF_HOME``) without touching the network, and only then at the
  hub, and only if it answers within ``PROBE_TIMEOUT_S`` (``HF_HUB_OFFLINE=1`` skips the probe).
- Missing weights with no hub: ``WeightsUnavailable`` at once, naming the model, the checkpoint, the
  revision and the two ways out.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"


class WeightsUnavailable(RuntimeError):
    """A model's weights are neither on this machine nor reachable."""


def folder_name(checkpoint: str, revision: str | None) -> str:
    """``Qwen/Qwen2-Audio-7B-Instruct@4b3a…`` -> ``Qwen--Qwen2-Audio-7B-Instruct@4b3a…`` (one folder per pin)."""
    return f"{checkpoint.replace('/', '--')}@{revision or 'main'}"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def hub_reachable(url: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout_s`` (no request is sent)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    parsed = urlparse(url or endpoint())
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _in_hf_cache(checkpoint: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(checkpoint, "config.json", revision=revision or None), str)


def resolve(key: str, spec: Mapping[str, Any], weights_dir: str | os.PathLike | None = None) -> tuple[str, dict]:
    """Where ``from_pretrained`` should load model ``key`` from, and the keyword arguments to pass.

    ``(folder, {})`` for a fetched copy under ``weights_dir``; ``(checkpoint, {"revision": r,
    "local_files_only": True})`` when the HF cache holds it; ``(checkpoint, {"revision": r})`` when
    the hub answers; otherwise ``WeightsUnavailable``.
    """
    checkpoint = str(spec["checkpoint"])
    revision = spec.get("revision")
    rev = {"revision": str(revision)} if revision else {}
    if Path(checkpoint).is_dir():  # a local folder named directly in params
        return checkpoint, {}
    if weights_dir:
        folder = Path(weights_dir) / folder_name(checkpoint, revision)
        if (folder / "config.json").exists():
            return str(folder), {}
    if _in_hf_cache(checkpoint, revision):
        return checkpoint, {**rev, "local_files_only": True}
    if hub_reachable():
        return checkpoint, rev
    looked = f"{Path(weights_dir) / folder_name(checkpoint, revision)} and " if weights_dir else ""
    raise WeightsUnavailable(
        f"model {key!r}: the weights of {checkpoint} at revision {revision or 'main'} are not on this machine"
        f" (looked in {looked}the Hugging Face cache) and the hub ({endpoint()}) cannot be "
        f"reached. Either (1) on a machine with network run `ambiemo models fetch {key} --dest DIR`, copy DIR "
        "here and set `paths.weights_dir: DIR` in params.yaml; or (2) fill this machine's Hugging Face cache "
        f"(HF_HOME) with `hf download {checkpoint} --revision {revision or 'main'}` where the hub is reachable."
    )


@dataclass
class Fetched:
    key: str
    folder: Path
    files: int
    bytes: int
    verified: int  # files checked against the hub's LFS SHA-256 (the others: by size)


def fetch(key: str, spec: Mapping[str, Any], dest: str | os.PathLike) -> Fetched:
    """Download ``key``'s pinned checkpoint into ``dest`` and verify it; see the module doc."""
    from huggingface_hub import HfApi, snapshot_download

    checkpoint = str(spec.get("checkpoint") or "")
    if not checkpoint or checkpoint.startswith("tiny:") or Path(checkpoint).is_dir():
        raise ValueError(f"model {key!r}: checkpoint {checkpoint!r} is not a hub repository; nothing to fetch")
    revision = spec.get("revision")
    if not revision or revision == "main":
        raise ValueError(
            f"model {key!r}: revision is {revision!r}; pin a commit (40 hex digits) in params.yaml before fetching, "
            "so that the copy you move is the one the paper names"
        )
    folder = Path(dest) / folder_name(checkpoint, str(revision))
    info = HfApi(endpoint=endpoint()).model_info(checkpoint, revision=str(revision), files_metadata=True)
    if info.sha and info.sha != revision and len(str(revision)) == 40:
        raise WeightsUnavailable(f"model {key!r}: the hub resolved revision {revision} to {info.sha}")
    snapshot_download(checkpoint, revision=str(revision), local_dir=folder, endpoint=endpoint())
    total = verified = 0
    for sib in info.siblings or []:
        path = folder / sib.rfilename
        if not path.is_file():
            raise WeightsUnavailable(f"model {key!r}: {sib.rfilename} missing after the download into {folder}")
        size = path.stat().st_size
        if sib.size is not None and size != sib.size:
            raise WeightsUnavailable(f"model {key!r}: {path} has {size} bytes, the hub lists {sib.size}")
        lfs = getattr(sib, "lfs", None)
        digest = getattr(lfs, "sha256", None) if lfs is not None else None
        if digest:
            if _sha256(path) != digest:
                raise WeightsUnavailable(f"model {key!r}: {path} does not match the hub's SHA-256 {digest}")
            verified += 1
        total += size
    return Fetched(key, folder, len(info.siblings or []), total, verified)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
