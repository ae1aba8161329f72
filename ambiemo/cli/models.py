"""`ambiemo models`: the models that params.yaml defines and what each can do.

    ambiemo models list            # by family (each family's capacity ladder first), then key, route,
                                   # capacity, needs, log-probs, beam search, label scoring
    ambiemo models list --json

What a model can do comes from its adapter's ``spec_capabilities(spec)`` (declared on the
base class: the class's ``capabilities``, unless the answer depends on the params entry, as
for API models whose log-probabilities depend on the provider and model). Nothing is loaded
and no SDK is imported.
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
            "family": spec.get("family"),
            "params_b": spec.get("params_b"),
            "params_active_b": spec.get("params_active_b"),
        }
        if route not in MODELS:
            rows.append(
                {
                    **row,
                    "needs": f"unknown adapter {route!r}",
                    "logprobs": None,
                    "beam_search": None,
                    "option_scoring": None,
                    "max_audio_s": None,
                }
            )
            continue
        cls = MODELS.get(route)
        caps = cls.spec_capabilities(spec)
        rows.append(
            {
                **row,
                "needs": spec.get("needs") or caps.needs,
                "logprobs": caps.logprobs,
                "beam_search": caps.beam_search,
                "option_scoring": caps.option_scoring,
                "max_audio_s": caps.max_audio_s,  # the audio window the model hears (None: no limit stated)
            }
        )
    return rows


def _yes(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _capacity(p: Any, active: Any = None) -> str:
    if p is None:
        return "undisclosed"
    return f"{p:g}B" if active is None else f"{p:g}B ({active:g}B active)"


NO_FAMILY = "(no family)"


def by_family(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by ``family`` (families in order of first appearance, models without one last),
    each family's models in increasing capacity (undisclosed capacities after the known ones, in
    params order): the capacity ladder that the within-family analysis compares."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("family") or NO_FAMILY, []).append(r)
    if NO_FAMILY in groups:
        groups[NO_FAMILY] = groups.pop(NO_FAMILY)
    return {
        f: sorted(members, key=lambda r: (r["params_b"] is None, r["params_b"] or 0.0))  # stable: params order for ties
        for f, members in groups.items()
    }


def ladder_line(family: str, members: list[dict[str, Any]]) -> str:
    """``qwen2.5-omni: qwen2.5-omni-3b 4.4B < qwen2.5-omni-7b 8.9B`` (``=`` for equal capacities, ``,`` before
    undisclosed ones)."""
    known = [r for r in members if r["params_b"] is not None]
    unknown = [r for r in members if r["params_b"] is None]
    steps = [f"{r['key']} {_capacity(r['params_b'])}" for r in known]
    seps = [" = " if a["params_b"] == b["params_b"] else " < " for a, b in zip(known, known[1:], strict=False)]
    parts = ["".join(s + step for s, step in zip(["", *seps], steps, strict=True))] if known else []
    parts += [f"{r['key']} (undisclosed)" for r in unknown]
    return f"{family}: " + ", ".join(parts)


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")] = False,
    params_path: Annotated[Path, typer.Option("--params", help="The params file.")] = Path("params.yaml"),
) -> None:
    """Each model in params.yaml, grouped by family with its capacity ladder: route, capacity (billions
    of parameters; active ones for mixtures of experts), what it needs, and whether it gives
    log-probabilities, beam search and label scoring (strategies refuse models that lack them).
    `*` marks the models of the active run."""
    from ambiemo.core.config import load_params

    rows = model_rows(load_params(params_path))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    groups = by_family(rows)
    header = ["", "key", "route", "capacity", "logprobs", "beam", "label scoring", "needs"]
    table = {
        r["key"]: [
            "*" if r["in_run"] else "",
            r["key"],
            r["route"],
            _capacity(r["params_b"], r["params_active_b"]),
            _yes(r["logprobs"]),
            _yes(r["beam_search"]),
            _yes(r["option_scoring"]),
            str(r["needs"]),
        ]
        for r in rows
    }
    widths = [max(len(x) for x in col) for col in zip(header, *table.values(), strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(x.ljust(w) for x, w in zip(cells, widths, strict=True)).rstrip()

    typer.echo(line(header))
    for family, members in groups.items():
        typer.echo("")
        typer.echo(ladder_line(family, members) if family != NO_FAMILY else family)
        for r in members:
            typer.echo(line(table[r["key"]]))


@app.command("check")
def check(
    key: Annotated[str, typer.Argument(help="A served or API model key from params.yaml `models`.")],
    params_path: Annotated[Path, typer.Option("--params", help="The params file.")] = Path("params.yaml"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Ask the live server whether the audio reaches the model: speech, silence and a tone with the run's
    prompt, greedy, sampled (n, seed) and beam requests; fails (exit 1) naming the reason. Run it before a
    paper run (`ambiemo plan --check` runs it for every served and API model of the run)."""
    from ambiemo.core.config import load_params
    from ambiemo.models.check import format_report, preflight

    try:
        report = preflight(load_params(params_path), key)
    except (KeyError, ValueError) as e:
        typer.echo(f"models check {key}: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_report(report))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    if not report.ok:
        raise typer.Exit(1)
