"""`ambiemo strategies list`: the registered test-time scaling strategies, what each needs, and its budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Test-time scaling strategies.", no_args_is_help=True)

_NEEDS = {"logprobs": "log-probs", "beam_search": "beams", "option_scoring": "option scoring"}


@app.command("list")
def list_strategies(
    params_path: Annotated[
        Path, typer.Option("--params", help="The params file to read budgets from (skipped when absent).")
    ] = Path("params.yaml"),
) -> None:
    """Name, what it needs from the model, and its budget grid in params."""
    from ambiemo.core.config import load_params
    from ambiemo.strategies import STRATEGIES, strategy_settings
    from ambiemo.strategies.best_of_n import CandidateStrategy

    settings = strategy_settings(load_params(params_path)) if params_path.exists() else strategy_settings({})
    rows = [("strategy", "needs", "budgets", "what it does")]
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        needs = [_NEEDS[c] for c in cls.needs]
        if issubclass(cls, CandidateStrategy):
            needs.append("beams (else samples)")
        if cls.uses_verifier:
            needs.append(f"verifier: {settings['verifier'].get('model') or '(unset)'}")
        grid = (settings.get(name) or {}).get("budgets") if cls.budget_name else None
        budgets = (
            f"{cls.budget_name} in {list(grid)}" if grid else (f"{cls.budget_name}: unset" if cls.budget_name else "-")
        )
        rows.append((name, ", ".join(needs) or "-", budgets, cls.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        typer.echo("  ".join(x.ljust(w) for x, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    typer.echo(
        "\noracle (analysis only): the stored candidate closest to the human distribution, computed by "
        "`ambiemo score` (oracle_js, pass_at_n)."
    )
