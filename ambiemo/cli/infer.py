"""`ambiemo infer`: filled in by the strategies issue."""

import typer


def infer(model: str = typer.Option(..., help="Model key from params.yaml.")) -> None:
    """Run a model and strategy over a manifest."""
    raise typer.Exit(2)
