"""`ambiemo models fetch KEY ... --dest DIR`: download pinned weights on a machine with network.

    ambiemo models fetch qwen2-audio-7b ultravox-v0.4 --dest /data/ambiemo-weights

Each model's ``checkpoint`` at its pinned ``revision`` lands in ``DIR/<org>--<name>@<revision>/``,
checked against the hub's sizes and SHA-256. Copy ``DIR`` to the GPU machine and set
``paths.weights_dir`` in params.yaml: loading then never needs the hub (``ambiemo.models.weights``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def fetch(
    keys: Annotated[list[str], typer.Argument(help="Model keys from params.yaml `models`.")],
    dest: Annotated[Path, typer.Option("--dest", help="Folder to download into (one subfolder per pin).")] = Path(
        "weights"
    ),
    params_path: Annotated[Path, typer.Option("--params", help="The params file.")] = Path("params.yaml"),
) -> None:
    """Download and verify each model's pinned weights; print the size and where they went."""
    from ambiemo.core.config import load_params
    from ambiemo.inference.run import model_spec
    from ambiemo.models.weights import WeightsUnavailable
    from ambiemo.models.weights import fetch as fetch_weights

    params = load_params(params_path)
    failed = 0
    for key in keys:
        try:
            got = fetch_weights(key, model_spec(params, key), dest)
        except (KeyError, ValueError, WeightsUnavailable, OSError) as e:
            typer.echo(f"{key}: error: {e.args[0] if isinstance(e, KeyError) else e}", err=True)
            failed += 1
            continue
        typer.echo(
            f"{key}: {got.files} files, {got.bytes / 2**30:.2f} GiB ({got.verified} checked by SHA-256, the rest by "
            f"size) in {got.folder}"
        )
    if failed:
        raise typer.Exit(1)
    typer.echo(f"set `paths.weights_dir: {dest}` in params.yaml on the machine that runs the models")
