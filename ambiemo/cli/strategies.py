"""`ambiemo strategies`: filled in by its own issue."""

import typer

app = typer.Typer(help="strategies commands.", no_args_is_help=True)
