"""Checking a params mapping against the schema (``ambiemo.core.params``), before any work.

``validate_params`` raises one ``ParamsError`` that lists every problem by its dotted key and, where
the file gave it, its line (``strategies.sampling.temprature (line 120): unknown key; did you mean
`temperature`?``). Cross-references are checked too: the run's profile, models and datasets exist; a
dataset's label set exists; a per-profile mapping names known profiles and has an entry for the
run's profile. A section an extension point owns is checked by that extension point, which
registers its check here (``register_section_check``), so that this layer imports no stage.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from ambiemo.core.params import Params


class ParamsError(ValueError):
    """params.yaml breaks the schema; ``problems`` holds (dotted key, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]], lines: dict[str, int] | None = None) -> None:
        self.source = source
        self.problems = problems
        n = len(problems)
        listed = "; ".join(f"`{key}`{_at(key, lines or {})}: {msg}" if key else msg for key, msg in problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''}: {listed}. Fix params and run again.")


def _at(key: str, lines: dict[str, int]) -> str:
    """`` (line N)`` of the key, or of its nearest parent the file gives (a missing key's section)."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        line = lines.get(".".join(parts[:i]))
        if line is not None:
            return f" (line {line})"
    return ""


# Checks of the sections an extension point owns (``strategies.<name>``: ambiemo.strategies), added
# by that package when it is imported, so that this schema imports no strategy or model code.
SectionCheck = Callable[[dict[str, Any]], list[tuple[str, str]]]
SECTION_CHECKS: dict[str, SectionCheck] = {}


def register_section_check(name: str, check: SectionCheck) -> None:
    """``check(params)`` returns (dotted key, message) problems; ``validate_params`` runs it."""
    SECTION_CHECKS[name] = check


def validate_params(params: Any, source: str = "params.yaml", lines: dict[str, int] | None = None) -> Params:
    """The params as a ``Params`` model; every problem in one ``ParamsError`` (with the line of each
    key where ``lines`` maps dotted keys to lines of the file)."""
    problems: list[tuple[str, str]] = []
    model = None
    try:
        model = Params.model_validate(params)
    except ValidationError as e:
        described = [describe_error(err) for err in e.errors()]
        # A per-profile value that fails as a mapping also fails as a plain value: report the deeper error only.
        keys = [key for key, _ in described]
        problems += [(k, m) for k, m in described if not any(o.startswith(k + ".") for o in keys)]
    if isinstance(params, dict):
        problems += _cross_references(params)
        if model is not None:  # the sections' own checks read values the schema has accepted
            for check in SECTION_CHECKS.values():
                problems += check(params)
    if problems:
        raise ParamsError(source, problems, lines)
    assert model is not None
    return model


def describe_error(err: Any, root: type[BaseModel] | None = None, prefix: str = "") -> tuple[str, str]:
    """One pydantic error as (dotted key, message); ``root`` is the model validated at ``prefix``."""
    loc = [str(x) for x in err["loc"] if not _is_union_tag(x)]
    dotted = ".".join([prefix, *loc] if prefix else loc)
    if err["type"] == "extra_forbidden":
        known = _known_at(root or Params, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}"
        return dotted, f"unknown key; {hint}"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return dotted, f"{err['msg'][0].lower()}{err['msg'][1:]} (got {got})"


def _is_union_tag(x: Any) -> bool:
    # pydantic names the union member it tried (`int`, `dict[str,int]`, `constrained-int`) inside the loc
    return isinstance(x, str) and (
        "[" in x
        or x in {"int", "str", "float", "bool", "list", "dict", "none"}
        or "-" in x
        and x.startswith(("constrained", "function"))
    )


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def _known_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys allowed at ``loc`` (a path of keys from the top)."""
    node: Any = model  # a model class, or ("names", model) for a dict[str, model] section
    for key in loc:
        if isinstance(node, tuple):  # ``key`` is a name inside the mapping
            node = node[1]
            continue
        field = next((f for n, f in node.model_fields.items() if key in (n, f.alias)), None)
        node = _model_in(field.annotation) if field is not None else None
        if node is None:
            return []
    return [] if isinstance(node, tuple) else _keys(node)


def _model_in(annotation: Any) -> Any:
    """The model class an annotation holds (through Optional), ("names", model) for dict[str, model], else None."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is dict:
        inner = _model_in(typing.get_args(annotation)[1])
        return ("names", inner) if isinstance(inner, type) else None
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _cross_references(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Names that must point at something defined elsewhere in params."""
    problems: list[tuple[str, str]] = []
    profiles = params.get("profiles") if isinstance(params.get("profiles"), dict) else {}
    run = params.get("run") if isinstance(params.get("run"), dict) else {}
    profile = run.get("profile")
    # Without a `profiles` section (a minimal params file) run.profile only labels per-profile values.
    if profile is not None and "profiles" in params and profile not in profiles:
        problems.append(("run.profile", f"unknown profile {profile!r}; profiles: {', '.join(profiles) or '(none)'}"))
    blocks = [("run", run)] + [(f"profiles.{k}", v) for k, v in profiles.items() if isinstance(v, dict)]
    for where, block in blocks:
        for section, known in (("models", params.get("models")), ("datasets", params.get("datasets"))):
            known = known if isinstance(known, dict) else {}
            for name in _names(block.get(section)):
                if name not in known:
                    problems.append(
                        (f"{where}.{section}", f"{name!r} is not under `{section}`{close_match(name, known)}")
                    )
    label_sets = params.get("label_sets") if isinstance(params.get("label_sets"), dict) else {}
    for name, spec in (params.get("datasets") or {}).items() if isinstance(params.get("datasets"), dict) else []:
        if isinstance(spec, dict) and spec.get("label_set") is not None and spec["label_set"] not in label_sets:
            problems.append((f"datasets.{name}.label_set", f"{spec['label_set']!r} is not under `label_sets`"))
    problems += _per_profile(params, profiles, profile)
    return problems


def _per_profile(params: dict[str, Any], profiles: dict, profile: str | None) -> list[tuple[str, str]]:
    """Per-profile mappings name known profiles and cover the run's; the verifier is a model key."""
    problems: list[tuple[str, str]] = []
    strategies = params.get("strategies") if isinstance(params.get("strategies"), dict) else {}
    values: list[tuple[str, Any]] = []
    for name, sec in strategies.items():
        if isinstance(sec, dict) and "budgets" in sec:
            values.append((f"strategies.{name}.budgets", sec["budgets"]))
    for key, value in (
        (strategies.get("max_new_tokens") or {}).items() if isinstance(strategies.get("max_new_tokens"), dict) else []
    ):
        values.append((f"strategies.max_new_tokens.{key}", value))
    verifier = strategies.get("verifier") if isinstance(strategies.get("verifier"), dict) else {}
    if "model" in verifier:
        values.append(("strategies.verifier.model", verifier["model"]))
    for where, value in values:
        if not isinstance(value, dict) or not profiles:
            continue
        unknown = [k for k in value if k not in profiles]
        if unknown:
            problems.append((where, f"names unknown profiles {unknown}; profiles: {', '.join(profiles)}"))
        if profile in profiles and profile not in value:
            problems.append((where, f"has no entry for the run's profile {profile!r}"))
    models = params.get("models") if isinstance(params.get("models"), dict) else {}
    model = verifier.get("model")
    for name in (model.values() if isinstance(model, dict) else [model]) if models else []:
        if isinstance(name, str) and name not in models:
            problems.append(("strategies.verifier.model", f"{name!r} is not under `models`{close_match(name, models)}"))
    return problems


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def close_match(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""
