"""The ``ambiemo`` console command.

Each subcommand group lives in its own module beside this one and is mounted here:
``data`` (corpora and manifests), ``models``, ``strategies``, ``cache``, ``infer``,
``score``, ``plan`` (what a profile will cost), and ``profile`` (which params profile the pipeline runs).
"""

from __future__ import annotations

import gc

import typer
from typer.core import TyperGroup

import ambiemo
from ambiemo.cli import cache, data, infer, models, models_fetch, plan, profile, score, strategies
from ambiemo.core.config import ParamsFileError
from ambiemo.core.validation import ParamsError


class _Group(TyperGroup):
    """Every command: a params file the schema refuses is its one paragraph (file, line, key) on
    stderr and exit 2, never a traceback."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        try:
            return super().invoke(ctx)
        except (ParamsError, ParamsFileError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Group,
    help="ambiemo: ambiguous speech emotion recognition with audio-language models.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ambiemo {ambiemo.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Datasets with per-annotator votes, audio-language models, test-time scaling, and scoring
    against the human vote distribution."""


app.add_typer(data.app, name="data")
models.app.command("fetch")(models_fetch.fetch)
app.add_typer(models.app, name="models")
app.add_typer(strategies.app, name="strategies")
app.add_typer(cache.app, name="cache")
app.add_typer(score.app, name="score")
app.add_typer(profile.app, name="profile")
app.command("infer")(infer.infer)
app.command("plan")(plan.plan)


def main() -> None:
    # What the imports built lives as long as the process. Frozen (gc.freeze), it is no longer walked by
    # the collections during the command nor by the one at its exit, which took 0.3-0.4 s of every
    # command's end once pandas and the OpenAI SDK (since replaced by httpx) were loaded. Only what
    # exists now: what the command opens later (the generation cache's database) is still collected
    # and closed at the exit.
    gc.freeze()
    app()
