"""`ambiemo profile`: which params profile the pipeline runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ambiemo.core.config import load_params

app = typer.Typer(help="Show or switch the params profile (demo, paper, ...).", no_args_is_help=True)


@app.command("show")
def show(params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml")) -> None:
    """Print the active run block and the profiles it can be switched to."""
    p = load_params(params)
    run = p.get("run", {})
    typer.echo(f"active profile: {run.get('profile')}")
    for key in ("datasets", "models", "strategies", "limit"):
        typer.echo(f"  {key}: {run.get(key)}")
    typer.echo(f"profiles: {', '.join(p.get('profiles', {}))}")


@app.command("use")
def use(name: str, params: Annotated[Path, typer.Option(help="Params file.")] = Path("params.yaml")) -> None:
    """Point the ``run`` block of params.yaml at ``profiles.NAME`` (a YAML merge key); the rest of the file is kept.

    The block becomes ``run: {<<: *NAME, profile: NAME}``; overrides written under the old block are dropped.
    """
    p = load_params(params)
    profiles = p.get("profiles", {})
    if name not in profiles:
        raise typer.BadParameter(f"no profile {name!r} in {params}; profiles: {', '.join(profiles)}")
    lines = _anchored(params.read_text().splitlines(keepends=True), name, params)
    try:
        start = next(i for i, ln in enumerate(lines) if ln.rstrip() == "run:")
    except StopIteration:
        raise typer.BadParameter(f"{params} has no top-level 'run:' block to rewrite") from None
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    # keep the blank lines that separate the block from the next one
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    block = ["run:\n", f"  <<: *{name}\n", f"  profile: {name}\n"]
    params.write_text("".join(lines[:start] + block + lines[end:]))
    load_params(params)  # the rewritten file still validates
    typer.echo(f"{params}: run block now follows profile {name!r}; `dvc repro` runs it")


def _anchored(lines: list[str], name: str, params: Path) -> list[str]:
    """The file's lines with ``profiles.NAME`` carrying the anchor ``&NAME`` (added where a rewrite such as
    ``dvc exp run -S`` dropped an anchor nothing referred to)."""
    entry = re.compile(rf"^  {re.escape(name)}:(?=\s|$)")
    try:
        start = next(i for i, ln in enumerate(lines) if ln.rstrip() == "profiles:")
        i = next(
            j
            for j in range(start + 1, len(lines))
            if entry.match(lines[j]) or (lines[j].strip() and not lines[j].startswith((" ", "#")))
        )
    except StopIteration:
        i = -1
    if i < 0 or not entry.match(lines[i]):
        raise typer.BadParameter(f"{params}: no `  {name}:` entry under a top-level `profiles:` block")
    if not re.match(rf"^  {re.escape(name)}: &{re.escape(name)}(?=\s|$)", lines[i]):
        lines = [*lines[:i], lines[i].replace(f"{name}:", f"{name}: &{name}", 1), *lines[i + 1 :]]
    return lines
