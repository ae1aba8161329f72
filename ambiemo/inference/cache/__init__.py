"""The generation cache: never pay twice for the same model call, and never answer from a bad entry.

Every result a model returns is stored under a key that covers everything that can change it:
the model's ``identity`` as a whole (route, adapter version, checkpoint, revision, the hash of
its output-affecting settings: whatever the adapter puts there counts), the full conversation,
a hash of the audio, every ``GenerationConfig`` field (mode, n, max_new_tokens, temperature,
top_p, num_beams, seed) and the candidate's sample index; for ``score_options``, the options and
the prefix instead of the config. A ``score_options`` entry stores the log-probabilities with the
call's prompt tokens and seconds, so a rerun reports the usage of the call that made them (an
entry of the older layout, log-probabilities alone, counts as stale and is recomputed). The
params key that names the model is *not* part of it
(an identity's ``"key"`` entry is dropped): renaming a model in params.yaml reuses its entries,
while any changed setting misses. A rerun with the same inputs makes zero model calls.

Integrity. Each entry carries the format version it was written in and the SHA-256 of its
value. An entry whose value does not match its checksum (flipped bytes, a truncated value) or
whose format is not this one is never used: it is reported (a warning naming the entry's key,
model and identity; the counters ``corrupt`` and ``stale``), recomputed and overwritten. A
cache file written by an older ambiemo (format 1, no checksums) is set aside on first open
(its tables renamed to ``*_v1``, reported with their size) and never read; ``ambiemo cache
verify --repair`` deletes bad entries and old tables. ``ambiemo cache verify`` checks a whole
cache, SQLite's own ``integrity_check`` included.

A cache that heals. Any error about the file as a whole names it and says what to do
(``errors``): a damaged file (truncated, a header overwritten, a page zeroed) is salvaged by
``ambiemo cache verify --repair``, which copies every readable entry into a fresh file and
moves the damaged one aside (``repair``, reading pages as SQLite's ``.recover`` does: ``pages``);
a run that meets it stops, naming that command. A read-only cache serves a fully cached rerun
(a hit writes nothing) and refuses a miss before the model is called, naming the file and its
permission. A file deleted or replaced during a run is noticed at the next write and at the
end of the run (``GenerationCache.lost``).

Modules: ``keys`` (what a key covers, how values are stored), ``schema`` (tables, transactions),
``store`` (``GenerationCache``), ``maintenance`` (stats, clear, verify), ``repair`` and ``pages``
(salvage), ``errors`` (``CacheError``), ``wrapper`` (``CachedModel``).

Storage is one SQLite file in WAL mode (``<folder>/generations.sqlite``). Every write is one
transaction, so a crash (even ``kill -9``) leaves either the whole entry or none, and WAL lets
DVC stages running in parallel processes read while one of them writes; writers wait for each
other (``busy_timeout``) instead of failing. WAL needs a local file system (not NFS).

Usage::

    cache = GenerationCache(cache_dir(params))
    model = CachedModel(load_model(key, spec), cache)
    model.generate(requests, config)          # same contract as the wrapped model

What is not cached: candidates whose ``meta`` has an ``"error"`` (an API request that failed
after its retries, see ``ambiemo.models._http``) and ``score_options`` results containing NaN
(the same failure for label scoring), so that the next run tries them again.
"""

from ambiemo.inference.cache.errors import REPAIR_COMMAND, CacheError
from ambiemo.inference.cache.keys import (
    CACHE_FORMAT,
    candidate_from_json,
    candidate_to_json,
    canonical_json,
    checksum,
    generation_key,
    generation_keys,
    identity_sha,
    key_identity,
    make_key,
    scores_from_json,
    scores_to_json,
    scoring_key,
)
from ambiemo.inference.cache.repair import salvage, verify_folder
from ambiemo.inference.cache.schema import BUSY_TIMEOUT_S, DB_NAME
from ambiemo.inference.cache.store import MAX_ENTRY_WARNINGS, GenerationCache
from ambiemo.inference.cache.wrapper import CachedModel

__all__ = [
    "BUSY_TIMEOUT_S",
    "CACHE_FORMAT",
    "DB_NAME",
    "MAX_ENTRY_WARNINGS",
    "REPAIR_COMMAND",
    "CacheError",
    "CachedModel",
    "GenerationCache",
    "candidate_from_json",
    "candidate_to_json",
    "canonical_json",
    "checksum",
    "generation_key",
    "generation_keys",
    "identity_sha",
    "key_identity",
    "make_key",
    "salvage",
    "scores_from_json",
    "scores_to_json",
    "scoring_key",
    "verify_folder",
]
