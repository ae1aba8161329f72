"""`ambiemo models`: filled in by its own issue."""

import typer

app = typer.Typer(help="models commands.", no_args_is_help=True)
