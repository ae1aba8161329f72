"""What names a model's outputs in caches and provenance: which keys of a params entry change its
answers (``output_settings``, hashed by ``settings_sha256``) and which do not (``COSMETIC_KEYS``), and
the rule for running a checkpoint's own code (``check_remote_code``)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any


class RemoteCodeRefused(PermissionError):
    """A params entry asks to run a checkpoint's own code without opting in and pinning it."""


# Keys of a params entry that do not change what a model answers: they stay out of
# ``settings_sha256``, so editing them reuses the cache. Everything else enters it (an unknown
# key too: a needless cache miss is safe, a wrong hit is not).
COSMETIC_KEYS = frozenset(
    {
        "needs",
        "params_b",
        "family",
        "pricing",
        "concurrency",
        "api_key_env",
        "timeout_s",
        "retry",
        "batch_size",
        "base_url",
        "params_active_b",
        "lifecycle",  # dates and successors: what the provider says about the model, not how it answers
        "cache_dir",  # where built or converted weights are kept; their content is pinned by the revision
    }
)
# Keys that enter the identity by name rather than through the settings hash.
IDENTITY_KEYS = frozenset({"adapter", "checkpoint", "model_id", "revision"})
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


def output_settings(spec: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The output-affecting settings of a params entry: its keys minus the cosmetic and identity
    keys, over the adapter's ``defaults`` (so a default written out hashes like one left out)."""
    own = {k: v for k, v in spec.items() if k not in COSMETIC_KEYS and k not in IDENTITY_KEYS}
    return {**(defaults or {}), **own}


def settings_sha256(settings: dict[str, Any]) -> str:
    """Canonical hash of settings: sorted keys, no whitespace, exact floats."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_remote_code(key: str, spec: dict[str, Any], *, needed: bool = False) -> bool:
    """Whether the checkpoint's own Python code may run for params entry ``key``.

    Only with ``trust_remote_code: true`` *and* a 40-character commit ``revision``, so the code
    that runs is the code that was reviewed; anything else raises ``RemoteCodeRefused`` before
    anything is downloaded. ``needed``: the route cannot run without remote code.
    """
    trust = spec.get("trust_remote_code", False)
    if trust not in (True, False):
        raise RemoteCodeRefused(f"params.yaml models.{key}: trust_remote_code must be true or false, got {trust!r}")
    if not trust:
        if needed:
            raise RemoteCodeRefused(
                f"params.yaml models.{key}: this model runs the checkpoint's own Python code; set "
                "`trust_remote_code: true` to allow it and pin `revision` to a commit hash"
            )
        return False
    revision = str(spec.get("revision") or "")
    if not COMMIT_HASH.match(revision):
        raise RemoteCodeRefused(
            f"params.yaml models.{key}: with trust_remote_code the revision must be a 40-character commit "
            f"hash, so the code that runs is fixed; got {revision or 'none'!r}"
        )
    return True
