"""`ambiemo plan`: what the active profile will cost before it runs (estimates, clearly labelled).

ambiemo plan                                  # the run block of params.yaml
ambiemo plan -S 'run.models=[gpt-4o]' --json results/plan/plan.json
ambiemo plan --pilot 8                        # measure each local model's throughput on 8 utterances
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml


def _override(params: dict[str, Any], assignment: str) -> None:
    """``run.models=[a, b]`` (the value is YAML), as `dvc exp run -S` writes it."""
    if "=" not in assignment:
        raise typer.BadParameter(f"-S {assignment!r}: expected dotted.key=value")
    dotted, raw = assignment.split("=", 1)
    node = params
    *parents, last = dotted.strip().split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(raw)


def plan(
    params_path: Annotated[Path, typer.Option("--params", help="The params file.")] = Path("params.yaml"),
    set_: Annotated[
        list[str] | None, typer.Option("-S", "--set", help="Override a params key (dotted.key=YAML); repeatable.")
    ] = None,
    pilot: Annotated[
        int, typer.Option("--pilot", help="Measure each local model on N prepared utterances (0: no pilot).")
    ] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the plan as JSON here.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Also run `ambiemo models check` on every served and API model of the run.")
    ] = False,
    utterances: Annotated[
        list[str] | None,
        typer.Option("--utterances", help="DATASET=N: assume N utterances where none is prepared; repeatable."),
    ] = None,
) -> None:
    """Cells, model and verifier calls, tokens, USD and GPU hours of the active profile, and what is missing."""
    from ambiemo.core.config import load_params
    from ambiemo.inference.plan import plan as make_plan
    from ambiemo.inference.plan_report import format_plan, pilot_run

    params = load_params(params_path)
    for assignment in set_ or []:
        _override(params, assignment)
    measured: dict[str, dict[str, float]] = {}
    if pilot:
        first = next(iter(make_plan(params).datasets), None)
        manifest = (
            Path(params.get("paths", {}).get("results", "results")) / "prepared" / str(first) / "manifest.parquet"
        )
        for key in (params.get("run") or {}).get("models") or []:
            spec = params["models"].get(key, {})
            if spec.get("adapter") in ("openai-chat", "gemini", "openai-compatible"):
                continue
            if not manifest.exists():
                typer.echo(f"--pilot: no prepared manifest at {manifest}; `dvc repro prepare` first", err=True)
                raise typer.Exit(2)
            measured[key] = pilot_run(params, key, manifest, pilot)
    sizes = {}
    for item in utterances or []:
        name, _, n = item.partition("=")
        if not n.isdigit():
            raise typer.BadParameter(f"--utterances {item!r}: expected DATASET=N")
        sizes[name] = int(n)
    p = make_plan(params, pilot=measured, utterances=sizes)
    typer.echo(format_plan(p))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({**p.as_dict(), "pilot": measured}, indent=2, sort_keys=True) + "\n")
    if check:  # the live preflight, before any spend
        from ambiemo.models.check import format_report, preflight

        served = [k for k in (params.get("run") or {}).get("models") or [] if k in p.models and not p.models[k].local]
        reports = [preflight(params, k) for k in served]
        for r in reports:
            typer.echo("\n" + format_report(r))
        if not all(r.ok for r in reports):
            raise typer.Exit(1)
