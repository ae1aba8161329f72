"""Reading ``params.yaml``: one place that knows where each section lives and what its defaults are.

``load_params`` reads the file strictly (a key given twice is refused, naming both lines; a YAML
syntax error is one line with file:line:column), checks it against the schema
(``ambiemo.core.params``) before any work, and returns it as a plain mapping with every default of
the schema filled in. ``settings(params, name)`` gives one section the same way for a mapping that
did not come from ``load_params`` (a test's, a notebook's). No other module states a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")
# Sections whose entries are route- or loader-specific: kept as written (their identity hashes them),
# checked by the schema's shared keys and by the adapter or loader that reads them.
AS_WRITTEN = ("models", "datasets")


class ParamsFileError(ValueError):
    """params.yaml cannot be read as YAML, or gives a key twice: one line naming file:line:column."""


# libyaml's parser where PyYAML was built with it: the pure-Python one took 0.1-0.6 s of every
# command's start-up on params.yaml (600 lines). Both give the same nodes, marks and errors.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_SafeLoader):
    """A SafeLoader that refuses duplicate keys and records the line of every dotted key."""

    def __init__(self, stream: Any, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.lines: dict[str, int] = {}
        self._path: list[str] = []

    def construct_document(self, node: yaml.Node) -> Any:
        self._index(node, [])
        return super().construct_document(node)

    def _index(self, node: yaml.Node, path: list[str]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *profile`: the merged keys are not repeats
                    continue
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = ".".join([*path, key])
                    raise ParamsFileError(
                        f"{self.source}:{line}: `{where}` is given twice (lines {seen[key]} and {line}); "
                        "YAML would keep the last silently: delete one"
                    )
                seen[key] = line
                self.lines.setdefault(".".join([*path, key]), line)
                self._index(value_node, [*path, key])
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, [*path, str(i)])


def read_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping and the line of each dotted key; ``ParamsFileError`` on bad YAML."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found; run from the repository root or pass --params")
    loader = _LineLoader(path.read_text(), str(path))
    try:
        data = loader.get_single_data() or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ParamsFileError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ParamsFileError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data, loader.lines


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """params.yaml, checked, with every default filled in. ``ParamsError`` lists every problem by
    file, line and dotted key in one paragraph."""
    from ambiemo.core.validation import validate_params

    data, lines = read_yaml(path)
    model = validate_params(data, source=str(path), lines=lines)
    filled = model.model_dump(by_alias=True)
    for key in AS_WRITTEN:
        if key in data:
            filled[key] = data[key]
        else:
            filled.pop(key, None)
    return filled


def settings(params: dict[str, Any], name: str) -> dict[str, Any]:
    """Params section ``name`` with the schema's defaults filled in (``scoring``, ``stats``, ...)."""
    from pydantic import ValidationError

    from ambiemo.core.params import Params
    from ambiemo.core.validation import ParamsError, describe_error

    field = Params.model_fields[name]
    model = field.annotation if isinstance(field.annotation, type) else None
    given = (params or {}).get(name) or {}
    if model is None:
        return dict(given)
    try:
        return model.model_validate(given).model_dump(by_alias=True)
    except ValidationError as e:  # a mapping that did not come through load_params
        raise ParamsError("params", [describe_error(err, model, name) for err in e.errors()]) from None


def section(params: dict[str, Any], *keys: str) -> Any:
    """``section(params, "models", "gpt-4o")`` with an error that names the missing key."""
    node: Any = params
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[: i + 1])
            raise KeyError(f"params.yaml has no {where!r}")
        node = node[key]
    return node


def cache_dir(params: dict[str, Any]) -> Path:
    """The generation cache's folder: $AMBIEMO_CACHE_DIR, else params ``paths.cache_dir``."""
    env = os.environ.get("AMBIEMO_CACHE_DIR")
    if env:
        return Path(env)
    return Path(settings(params, "paths")["cache_dir"])


def verifier_model(params: dict[str, Any]) -> str | None:
    """The verifier's model key for the run's profile (params ``strategies.verifier.model``)."""
    model = settings(params, "strategies")["verifier"].get("model")
    return by_profile(model, (params.get("run") or {}).get("profile"), "strategies.verifier.model")


def by_profile(value: Any, profile: str | None, where: str) -> Any:
    """``value``, or ``value[profile]`` when it is a per-profile mapping."""
    if not isinstance(value, dict):
        return value
    if profile not in value:
        raise KeyError(f"params.yaml {where} has no entry for profile {profile!r} (has: {', '.join(value)})")
    return value[profile]
