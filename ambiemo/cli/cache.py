"""`ambiemo cache`: filled in by its own issue."""

import typer

app = typer.Typer(help="cache commands.", no_args_is_help=True)
