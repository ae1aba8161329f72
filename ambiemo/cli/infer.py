"""`ambiemo infer`: run one model and strategy over a manifest and write the predictions table.

    ambiemo infer --model cascade-smollm2 --strategy w-bon --manifest results/manifests/demo.parquet \\
                  --out results/predictions/demo/cascade-smollm2/w-bon.parquet [--budget 3] [--limit 8]

The DVC inference stage calls the same function (``ambiemo.inference.run.run_inference``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def infer(
    model: Annotated[str, typer.Option("--model", help="Model key from params.yaml `models` (or `fake`).")],
    manifest: Annotated[Path, typer.Option("--manifest", help="The dataset's manifest (parquet).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Where to write the predictions: a .parquet file path whose folder can be written; one run at a time.",
        ),
    ],
    strategy: Annotated[
        str, typer.Option("--strategy", help="A registered strategy; see `ambiemo strategies list`.")
    ] = "baseline",
    budget: Annotated[
        list[int] | None,
        typer.Option("--budget", min=1, help="Run this budget (B, N or K) instead of the params grid; repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Only the first N utterances (0: all).")] = 0,
    params_path: Annotated[Path, typer.Option("--params", help="The params file.")] = Path("params.yaml"),
) -> None:
    """Run a model and a test-time scaling strategy over a manifest; write one predictions parquet.

    Shows a progress bar when stderr is a terminal (and a log line every minute in any case).
    Exits 2 on a bad argument or params (``--out`` is checked before any work, and a second run
    writing the same ``--out`` is refused at once, naming the first), 1 when more utterances failed
    than params ``inference.max_failure_share`` allows (the predictions are written all the same)
    or the generation cache cannot be used (damaged, read-only where this run must write, deleted
    during the run: the message names the file and what to do)."""
    from ambiemo.core.config import load_params
    from ambiemo.inference.cache import CacheError
    from ambiemo.inference.run import InferenceFailures, OutputError, check_output, install_secret_filter, run_inference
    from ambiemo.models.api.faults import ConfigurationError
    from ambiemo.models.base import CapabilityError
    from ambiemo.models.lifecycle import RetiredModel

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    install_secret_filter()
    try:
        check_output(out)
    except OutputError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    params = load_params(params_path)
    try:
        df = run_inference(params, model, strategy, manifest, out, limit=limit or None, budgets=budget or None)
    except (KeyError, ValueError, CapabilityError, FileNotFoundError) as e:
        if any(n.startswith("ambiemo: ") for n in getattr(e, "__notes__", ())):
            raise  # raised inside the run by a strategy or model: a bug, shown with its traceback
        typer.echo(f"error: {e.args[0] if isinstance(e, KeyError) else e}", err=True)
        raise typer.Exit(2) from None
    except (InferenceFailures, CacheError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except (ConfigurationError, RetiredModel) as e:  # a withdrawn, retired or renamed model: one message
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    meta, usage = df.attrs["meta"], df.attrs["usage"]
    typer.echo(
        f"{out}: {len(df)} rows over {meta['n_utterances']} utterances; model failures "
        f"{len(meta['model_failures'])}; live model calls {usage['calls']}, cache hits {usage['cache_hits']}"
    )
    failed = (1.0 - df.groupby(["strategy", "budget"])["parsed_ok"].mean()).items()
    for (name, b), rate in failed:
        typer.echo(f"  {name} @ {b}: parse failures {rate:.1%}")
