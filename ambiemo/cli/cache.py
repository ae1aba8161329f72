"""`ambiemo cache`: the generation cache (``ambiemo.cache``).

    ambiemo cache stats            # where it is, its size, and per model: entries, hits, misses
    ambiemo cache clear [--model KEY] [--yes]

The folder is params ``paths.cache_dir``, or the environment variable ``AMBIEMO_CACHE_DIR``.
Hits and misses are lifetime counts kept in the cache file by every run that used it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The generation cache: every model call's result, so reruns cost nothing.", no_args_is_help=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file.")]


def _cache_folder(params_path: Path) -> Path:
    from ambiemo.config import cache_dir, load_params

    return cache_dir(load_params(params_path))


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Size of the cache and, per model, its entries and lifetime hits and misses."""
    from ambiemo.cache import DB_NAME, GenerationCache

    folder = _cache_folder(params_path)
    if not (folder / DB_NAME).exists():
        if as_json:
            typer.echo(json.dumps({"folder": str(folder), "entries": 0, "bytes": 0, "models": []}))
        else:
            typer.echo(f"{folder}: no generation cache yet")
        return
    cache = GenerationCache(folder)
    totals, models = cache.stats(), cache.model_stats()
    if as_json:
        typer.echo(
            json.dumps(
                {"folder": str(folder), "entries": totals["entries"], "bytes": totals["bytes"], "models": models},
                indent=1,
            )
        )
        return
    typer.echo(f"{folder}: {totals['entries']} entries, {_mb(totals['bytes'])} on disk")
    header = ["model", "entries", "stored", "hits", "misses", "hit rate"]
    table = [
        [
            m["model"],
            str(m["entries"]),
            _mb(m["value_bytes"]),
            str(m["hits"]),
            str(m["misses"]),
            f"{m['hits'] / (m['hits'] + m['misses']):.1%}" if m["hits"] + m["misses"] else "-",
        ]
        for m in models
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *table, strict=True)]
    for line in [header, *table]:
        typer.echo("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


@app.command()
def clear(
    model: Annotated[str | None, typer.Option("--model", help="Only this model key's entries.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Delete cached generations (all, or one model's). The next run calls the models again."""
    from ambiemo.cache import DB_NAME, GenerationCache

    folder = _cache_folder(params_path)
    if not (folder / DB_NAME).exists():
        typer.echo(f"{folder}: no generation cache; nothing to clear")
        return
    what = f"model {model!r}'s entries" if model else "every entry"
    if not yes and not typer.confirm(f"Delete {what} from {folder}?"):
        raise typer.Exit(1)
    n = GenerationCache(folder).clear(model)
    typer.echo(f"deleted {n} entries from {folder}")
