"""`ambiemo cache`: the generation cache (``ambiemo.inference.cache``).

    ambiemo cache stats            # where it is, its size, and per model identity: entries, hits, misses
    ambiemo cache verify [--repair]  # check every entry's checksum and format, and the file itself
    ambiemo cache clear [--model KEY | --identity SHA] [--yes]

The folder is params ``paths.cache_dir``, or the environment variable ``AMBIEMO_CACHE_DIR``.
Any error about the file as a whole (damaged, not writable) is one paragraph naming the file and
what to do, exit 1. ``verify --repair`` on a damaged file salvages every readable entry into a
fresh file and moves the damaged one aside (``ambiemo.inference.cache.repair``).
Hits and misses are lifetime counts kept in the cache file by every run that used it. Entries
belong to a model *identity* (route, adapter version, checkpoint, revision, settings hash), not to
a params key: a renamed key shares its identity's entries, and a changed setting starts a new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The generation cache: every model call's result, so reruns cost nothing.", no_args_is_help=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="The params file.")]


def _cache_folder(params_path: Path) -> Path:
    from ambiemo.core.config import cache_dir, load_params

    return cache_dir(load_params(params_path))


def _open(folder: Path):
    """The cache in ``folder``; a cache error ends the command with its message (exit 1)."""
    from ambiemo.inference.cache import GenerationCache

    with _cache_errors():
        return GenerationCache(folder)


class _cache_errors:  # noqa: N801 - used like a function, in a with statement
    """Ends the command with the message of a ``CacheError`` (it names the file and what to do), exit 1."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        from ambiemo.inference.cache import CacheError

        if isinstance(exc, CacheError):
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _identity_label(identity: dict) -> str:
    """A short readable form of an identity: its fields other than the params key, in order."""
    return " ".join(f"{k}={v}" for k, v in sorted(identity.items()) if v is not None and k != "key")


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        typer.echo("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Size of the cache and, per model identity, its params keys, entries and lifetime hits and misses."""
    from ambiemo.inference.cache import DB_NAME

    folder = _cache_folder(params_path)
    if not (folder / DB_NAME).exists():
        if as_json:
            typer.echo(json.dumps({"folder": str(folder), "entries": 0, "bytes": 0, "identities": []}))
        else:
            typer.echo(f"{folder}: no generation cache yet")
        return
    cache = _open(folder)
    with _cache_errors():
        totals, idents = cache.stats(), cache.identity_stats()
    if as_json:
        doc = {"folder": str(folder), "entries": totals["entries"], "bytes": totals["bytes"], "identities": idents}
        typer.echo(json.dumps(doc, indent=1))
        return
    typer.echo(f"{folder}: {totals['entries']} entries, {_mb(totals['bytes'])} on disk")
    header = ["identity", "params keys", "entries", "stored", "hits", "misses", "hit rate", "bad", "model"]
    rows = [
        [
            m["identity_sha"][:12],
            ",".join(m["keys"]),
            str(m["entries"]),
            _mb(m["value_bytes"]),
            str(m["hits"]),
            str(m["misses"]),
            f"{m['hits'] / (m['hits'] + m['misses']):.1%}" if m["hits"] + m["misses"] else "-",
            str(m["corrupt"] + m["stale"]),
            _identity_label(m["identity"]),
        ]
        for m in idents
    ]
    _table(header, rows)


@app.command()
def verify(
    repair: Annotated[
        bool, typer.Option("--repair", help="Delete bad entries and old-format tables (the next run recomputes them).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Check every entry's checksum and format, and the SQLite file. Exits 1 if something is wrong and not repaired.

    With --repair, bad entries are deleted; a damaged file (SQLite cannot read it whole) is salvaged:
    every readable entry goes into a fresh file, and the damaged one is kept beside it, renamed."""
    from ambiemo.inference.cache import DB_NAME, REPAIR_COMMAND, verify_folder

    folder = _cache_folder(params_path)
    if not (folder / DB_NAME).exists():
        typer.echo(f"{folder}: no generation cache; nothing to verify")
        return
    with _cache_errors():
        report = verify_folder(folder, repair=repair)
    bad = len(report["corrupt"]) + report["stale"] + sum(report["old_tables"].values())
    salvaged = report["salvaged"]
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        if salvaged:
            typer.echo(
                f"{salvaged['path']} was damaged: salvaged {salvaged['entries_kept']} entries "
                f"({salvaged['entries_dropped']} unreadable rows dropped, {salvaged['identities_kept']} model "
                f"identities kept) into a fresh file; the damaged file is now {salvaged['moved_to']}"
            )
        typer.echo(
            f"{report['path']}: {report['entries']} entries, {report['ok']} sound, {len(report['corrupt'])} corrupt, "
            f"{report['stale']} of another format; format-1 rows set aside: {sum(report['old_tables'].values())}; "
            f"SQLite integrity: {report['integrity']}"
        )
        for c in report["corrupt"][:20]:
            typer.echo(f"  corrupt: entry {c['key'][:16]} of model {c['model']!r} (identity {c['identity'][:12]})")
        if repair:
            typer.echo(f"repaired: deleted {report['repaired']} bad or old rows; the next run recomputes them")
        elif report["integrity"] != "ok":
            typer.echo(f"run `{REPAIR_COMMAND}` to salvage every readable entry into a fresh file")
        elif bad:
            typer.echo(f"run `{REPAIR_COMMAND}` to delete them (bad entries are never used either way)")
    if report["integrity"] != "ok" or (bad and not repair):
        raise typer.Exit(1)


@app.command()
def clear(
    model: Annotated[
        str | None, typer.Option("--model", help="Only the entries of every identity this params key has used.")
    ] = None,
    identity: Annotated[
        str | None, typer.Option("--identity", help="Only this identity's entries (a prefix of its sha).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Delete cached generations (all, one model's, or one identity's). The next run calls the models again."""
    from ambiemo.inference.cache import DB_NAME

    folder = _cache_folder(params_path)
    if not (folder / DB_NAME).exists():
        typer.echo(f"{folder}: no generation cache; nothing to clear")
        return
    what = f"model {model!r}'s entries" if model else f"identity {identity}'s entries" if identity else "every entry"
    if not yes and not typer.confirm(f"Delete {what} from {folder}?"):
        raise typer.Exit(1)
    cache = _open(folder)
    with _cache_errors():
        n = cache.clear(model, identity)
    typer.echo(f"deleted {n} entries from {folder}")
