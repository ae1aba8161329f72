"""`ambiemo score`: filled in by its own issue."""

import typer

app = typer.Typer(help="score commands.", no_args_is_help=True)
