"""Which models of a run can still be run as named: retired, retiring and unpinned models, found
before any spend, and answers that come back from another model than the one asked.

A params entry states its lifecycle (``models.<key>.lifecycle``, schema ``ambiemo.core.params.Lifecycle``):
when the provider released it, when it retires (or retired), its provider-named successor, and
the day this was checked. From it:

- ``findings(params)`` lists, for ``ambiemo plan``, every model of the run (and its verifier, and
  the profile's reference rows) that is **retired**, **retiring** before the run would end
  (``horizon_days`` from today), or **unpinned** (an API alias that can change under you, or an
  open checkpoint without a commit), each with the fix;
- ``refuse_retired(key, spec)``, called when a model is built, refuses a retired model unless its
  entry says ``accept_retired: true`` and names a ``base_url`` (a compatible endpoint, on purpose);
- ``served_mismatch(asked, served, spec)`` says when a response names another model than the one
  asked (a provider routing a retired id to its successor): the route records the served name on
  every candidate and stops the cell unless the name is in ``lifecycle.served_as``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from ambiemo.core.params import Lifecycle

API_ROUTES = frozenset({"openai-chat", "gemini"})  # a provider's alias; served routes name a checkpoint
HORIZON_DAYS = 30  # how far ahead a scheduled shutdown counts as "before the run would end"
# A dated snapshot after an alias: gpt-audio-2025-08-28, gemini-2.0-flash-001, ...-preview-06-05.
_SNAPSHOT = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{3}|-preview-\d{2}-\d{2}(-\d{4})?|-\d{2}-\d{4})$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class RetiredModel(RuntimeError):
    """A params entry names a model its provider has shut down."""


def lifecycle_of(key: str, spec: Mapping[str, Any]) -> Lifecycle | None:
    raw = spec.get("lifecycle")
    if raw is None:
        return None
    try:
        return Lifecycle.model_validate(raw)
    except Exception as e:  # pydantic's message names the field
        raise ValueError(f"params.yaml models.{key}.lifecycle: {e}") from None


def today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def is_dated(model_id: str) -> bool:
    """Whether a provider model id names a dated snapshot rather than an alias."""
    return bool(_SNAPSHOT.search(model_id))


def _successor(lc: Lifecycle) -> str:
    return f"its successor {lc.successor}" if lc.successor else "a current model (the provider names none)"


def _dated(lc: Lifecycle) -> str:
    return f"(checked {lc.checked.isoformat()}{', ' + lc.source if lc.source else ''})"


def model_findings(
    key: str, spec: Mapping[str, Any], *, on: datetime.date | None = None, horizon_days: int = HORIZON_DAYS
) -> list[dict[str, str]]:
    """What is wrong with one entry: ``{"kind", "model", "what", "fix"}`` per finding."""
    on = on or today()
    lc = lifecycle_of(key, spec)
    route = str(spec.get("adapter", ""))
    name = str(spec.get("model_id") or spec.get("checkpoint") or key)
    out: list[dict[str, str]] = []
    if lc is not None and lc.retires is not None:
        if lc.retires <= on:
            accepted = lc.accept_retired and spec.get("base_url")
            out.append(
                {
                    "kind": "retired-accepted" if accepted else "retired",
                    "model": key,
                    "what": f"model {key}: {name} was retired on {lc.retires.isoformat()} {_dated(lc)}"
                    + (f"; served by {spec.get('base_url')} on purpose (accept_retired)" if accepted else ""),
                    "fix": f"run {_successor(lc)} instead (a new model: report it as such), or point "
                    f"models.{key}.base_url at an endpoint that still serves {name} and set "
                    "lifecycle.accept_retired: true",
                }
            )
        elif lc.retires <= on + datetime.timedelta(days=horizon_days):
            out.append(
                {
                    "kind": "retiring",
                    "model": key,
                    "what": f"model {key}: {name} retires on {lc.retires.isoformat()}, within {horizon_days} days "
                    f"{_dated(lc)}",
                    "fix": f"finish its cells before then (cached answers stay), or move to {_successor(lc)}",
                }
            )
    if out and out[0]["kind"] == "retired":
        return out  # the one thing to fix; whether its alias is pinned no longer matters
    if route in API_ROUTES and not is_dated(name) and not (lc is not None and lc.alias_ok):
        out.append(
            {
                "kind": "unpinned",
                "model": key,
                "what": f"model {key}: {name} is an alias the provider may point at another snapshot at any time",
                "fix": f"set models.{key}.model_id to a dated snapshot; where the provider offers none, say so in "
                "lifecycle.alias_ok (and check `ambiemo models check` before and after the run)",
            }
        )
    checkpoint = str(spec.get("checkpoint") or "")
    served = route == "openai-compatible" and "/" in name
    hub = served or ("/" in checkpoint and not checkpoint.startswith("tiny:"))
    if hub and not _COMMIT.match(str(spec.get("revision") or "")):
        out.append(
            {
                "kind": "unpinned",
                "model": key,
                "what": f"model {key}: {name} is not pinned to a commit (revision {spec.get('revision')!r})",
                "fix": f"set models.{key}.revision to the hub commit you fetched"
                + (" and start the server with --revision it" if served else ""),
            }
        )
    return out


def findings(
    params: Mapping[str, Any], *, on: datetime.date | None = None, horizon_days: int = HORIZON_DAYS
) -> list[dict[str, str]]:
    """Every finding for the run's models, its verifier and its profile's reference rows."""
    run = params.get("run") or {}
    models = params.get("models") or {}
    keys = list(run.get("models") or [])
    verifier = ((params.get("strategies") or {}).get("verifier") or {}).get("model")
    if isinstance(verifier, dict):
        verifier = verifier.get(run.get("profile"))
    profile = (params.get("profiles") or {}).get(run.get("profile")) or {}
    for extra in [verifier, *(run.get("reference_models") or profile.get("reference_models") or [])]:
        if extra and extra not in keys:
            keys.append(extra)
    out: list[dict[str, str]] = []
    for key in keys:
        if key in models:
            out += model_findings(key, models[key] or {}, on=on, horizon_days=horizon_days)
    return out


def refuse_retired(key: str, spec: Mapping[str, Any], *, on: datetime.date | None = None) -> None:
    """Raise ``RetiredModel`` for an entry whose model is retired, unless it is pointed at a
    compatible endpoint on purpose."""
    for f in model_findings(key, spec, on=on):
        if f["kind"] == "retired":
            raise RetiredModel(f"{f['what']}. Its cells are refused: {f['fix']}.")


def served_mismatch(asked: str, served: str | None, spec: Mapping[str, Any]) -> str | None:
    """Why an answer that names ``served`` is not from the model asked for, or None when it is: the
    same name, the alias's dated snapshot (``gpt-audio`` -> ``gpt-audio-2025-08-28``), or a name
    the entry accepts (``lifecycle.served_as``)."""
    if not served:
        return None
    served = served.removeprefix("models/")
    asked = asked.removeprefix("models/")
    if served == asked or (served.startswith(asked) and is_dated(served) and not is_dated(asked)):
        return None
    raw = spec.get("lifecycle") or {}
    if served in (raw.get("served_as") or []):
        return None
    return (
        f"asked for {asked!r}, the provider answered as {served!r}: another model answered (a retired id routed to "
        f"its successor?). Put {served!r} in lifecycle.served_as to accept it, or name it as model_id"
    )


def answered_by(key: str, spec: Mapping[str, Any]) -> str:
    """Who answers this entry's rows, for tables and text: ``gpt-audio-1.5 (OpenAI API, checked 2026-12-07)``."""
    lc = lifecycle_of(key, spec)
    name = str(spec.get("model_id") or spec.get("checkpoint") or key)
    rev = spec.get("revision")
    name = f"{name}@{str(rev)[:12]}" if rev and _COMMIT.match(str(rev)) else name
    return f"{name} ({_dated(lc)[1:-1]})" if lc is not None else name


def answered_by_rows(params: Mapping[str, Any], *, on: datetime.date | None = None) -> list[dict[str, str]]:
    """One row per model of the run and reference row of its profile, for the paper's model table:
    the key, who answered its rows (``answered_by``), and its status (``run``, ``reference`` for a
    retired study model reported from the study, ``retired`` for a retired model still in the run)."""
    run = params.get("run") or {}
    models = params.get("models") or {}
    profile = (params.get("profiles") or {}).get(run.get("profile")) or {}
    reference = list(run.get("reference_models") or profile.get("reference_models") or [])
    rows = []
    for key in [*(run.get("models") or []), *reference]:
        spec = models.get(key) or {}
        retired = any(f["kind"] == "retired" for f in model_findings(key, spec, on=on))
        status = "reference" if key in reference else "retired" if retired else "run"
        rows.append({"model": key, "answered_by": answered_by(key, spec), "status": status})
    return rows
