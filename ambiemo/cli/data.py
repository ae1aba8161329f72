"""`ambiemo data`: filled in by its own issue."""

import typer

app = typer.Typer(help="data commands.", no_args_is_help=True)
