"""`ambiemo models`: the models that params.yaml defines and what each can do.

    ambiemo models list            # key, route, capacity, needs, log-probs, beam search, label scoring
    ambiemo models list --json

What a model can do comes from its adapter: ``spec_capabilities(spec)`` where the answer
depends on the params entry (API models: log-probabilities depend on the provider and model),
else the adapter class's ``capabilities``. Nothing is loaded and no SDK is imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Models: the audio-language models in params.yaml and what each route can do.", no_args_is_help=True
)


def model_rows(params: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ``models`` entry of params; an entry whose adapter is unknown says so."""
    from ambiemo.models import MODELS, _import_adapters

    _import_adapters()
    run_models = set((params.get("run") or {}).get("models") or [])
    rows = []
    for key, spec in (params.get("models") or {}).items():
        spec = spec or {}
        route = spec.get("adapter", "")
        row: dict[str, Any] = {
            "key": key,
            "route": route,
            "in_run": key in run_models,
            "model": spec.get("model_id") or spec.get("checkpoint") or "",
            "params_b": spec.get("params_b"),
        }
        if route not in MODELS:
            rows.append(
                {
                    **row,
                    "needs": f"unknown adapter {route!r}",
                    "logprobs": None,
                    "beam_search": None,
                    "option_scoring": None,
                }
            )
            continue
        cls = MODELS.get(route)
        caps = cls.spec_capabilities(spec) if hasattr(cls, "spec_capabilities") else cls.capabilities
        rows.append(
            {
                **row,
                "needs": spec.get("needs") or caps.needs,
                "logprobs": caps.logprobs,
                "beam_search": caps.beam_search,
                "option_scoring": caps.option_scoring,
            }
        )
    return rows


def _yes(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _capacity(p: Any) -> str:
    return "undisclosed" if p is None else f"{p:g}B"


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")] = False,
    params_path: Annotated[Path, typer.Option("--params", help="The params file.")] = Path("params.yaml"),
) -> None:
    """Each model in params.yaml: route, capacity (billions of parameters), what it needs, and whether it
    gives log-probabilities, beam search and label scoring (strategies refuse models that lack them).
    `*` marks the models of the active run."""
    from ambiemo.config import load_params

    rows = model_rows(load_params(params_path))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    header = ["", "key", "route", "capacity", "logprobs", "beam", "label scoring", "needs"]
    table = [
        [
            "*" if r["in_run"] else "",
            r["key"],
            r["route"],
            _capacity(r["params_b"]),
            _yes(r["logprobs"]),
            _yes(r["beam_search"]),
            _yes(r["option_scoring"]),
            str(r["needs"]),
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *table, strict=True)]
    for line in [header, *table]:
        typer.echo("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
