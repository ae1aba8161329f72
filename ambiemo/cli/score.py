"""`ambiemo score`: score predictions against a manifest, and summarise scores.

    ambiemo score [--params params.yaml] [--out PATH]   # the active run, as the score stage does

    ambiemo score --manifest results/manifests/demo.parquet \\
                  --predictions results/predictions/demo --out results/scores/demo.parquet
    ambiemo score summary results/scores/demo.parquet [--by-bin] [--out summary.csv]

``--predictions`` takes prediction files or folders of them (every ``*.parquet`` inside) and
may be repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ambiemo.inference.candidates import is_candidates_path

app = typer.Typer(
    help="Score predictions against the human vote distributions, and summarise scores.",
    no_args_is_help=True,
    invoke_without_command=True,
)

# Columns `score summary` prints unless --all-columns is given.
_BRIEF = [
    "n",
    "parse_failure_rate",
    "js",
    "bc",
    "r2",
    "accuracy",
    "f1_weighted",
    "uar",
    "plausible_accuracy",
    "ece",
    "oracle_js",
    "model_calls",
    "gen_tokens",
]


def _prediction_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.parquet") if not is_candidates_path(p))  # read with their own
            if not found:
                raise typer.BadParameter(
                    f"{path}: folder holds no .parquet prediction files", param_hint="--predictions"
                )
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise typer.BadParameter(f"{path}: no such file or folder", param_hint="--predictions")
    return files


@app.callback()
def score(
    ctx: typer.Context,
    manifest: Annotated[Path | None, typer.Option("--manifest", "-m", help="The dataset's manifest (parquet).")] = None,
    predictions: Annotated[
        list[Path] | None, typer.Option("--predictions", "-p", help="Prediction files or folders; repeatable.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the scores (parquet; default for a run: the layout's)."),
    ] = None,
    params_path: Annotated[
        Path, typer.Option("--params", help="params.yaml to read `scoring` and `models.<key>.params_b` from.")
    ] = Path("params.yaml"),
) -> None:
    """Score predictions: one row per utterance × model × strategy × budget (see ambiemo.scoring)."""
    if ctx.invoked_subcommand is not None:
        return
    from ambiemo import scoring
    from ambiemo.core.config import load_params

    if manifest is None and not predictions:
        _score_run(load_params(params_path), out)
        return
    if manifest is None or not predictions or out is None:
        raise typer.BadParameter(
            "give --manifest, at least one --predictions and --out; or none of them to score the "
            "active run of --params (or use `ambiemo score summary SCORES`)"
        )
    from ambiemo.data.manifest import read_manifest

    params = load_params(params_path)
    files = _prediction_files(predictions)
    man = read_manifest(manifest)
    scores = scoring.score_predictions(man, scoring.read_predictions(files), params)
    scoring.write_scores(scores, out, params, inputs=[str(manifest), *map(str, files)])
    n_cells = scores.groupby(list(scoring.KEYS)).ngroups
    typer.echo(
        f"{out}: {len(scores)} rows, {n_cells} cells, {scores['utt_id'].nunique()} utterances, "
        f"{int((~scores['parsed_ok']).sum())} parse failures"
    )
    for cell, n in scores.attrs["missing"].items():
        typer.echo(f"  {cell}: {n} manifest utterance(s) have no prediction")


def _score_run(params: dict, out: Path | None) -> None:
    """Every cell of the active run, with the references, written one dataset × model at a time
    (``ambiemo.scoring.stream.write_score_run``: the file ``ambiemo.scoring.score_run`` would write)."""
    from ambiemo.scoring.run import empty_cells_note
    from ambiemo.scoring.stream import write_score_run

    run = write_score_run(params, out)
    typer.echo(
        f"{run.path}: {run.n_rows} rows, {run.n_cells} cells (references included), "
        f"{len(run.skipped)} cell(s) skipped, {int(run.unanswered['n_model_failures'].sum())} model failures, "
        f"{int(run.unanswered['n_parse_failures'].sum())} parse failures"
    )
    if empty_cells_note(run.unanswered):
        typer.echo(f"  {empty_cells_note(run.unanswered)}")
    for row in run.skipped.itertuples(index=False):
        typer.echo(f"  skipped {row.dataset}/{row.model}/{row.strategy}: {row.reason}")
    for dataset, ceiling in run.ceilings.items():
        typer.echo(f"  {dataset}: human ceiling from {ceiling['source']}")


@app.command("summary")
def summary(
    scores_path: Annotated[Path, typer.Argument(help="A scores table written by `ambiemo score`.")],
    by_bin: Annotated[bool, typer.Option("--by-bin", help="Add one row per ambiguity bin.")] = False,
    all_columns: Annotated[bool, typer.Option("--all-columns", help="Print every metric and compute column.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the summary (.csv or .parquet).")] = None,
) -> None:
    """Every metric per dataset × model × strategy × budget, with the parse-failure rate."""
    import pandas as pd

    from ambiemo import scoring

    df, meta = scoring.read_scores(scores_path)
    table = scoring.summarise(df, params=scoring.params_of(meta), per_bin=by_bin)
    if not by_bin:
        table = table.drop(columns=["ambiguity", "ambiguity_rank"])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".parquet":  # with provenance, and a CSV beside it
            scoring.write_result(table, out, "summary", scoring.params_of(meta), [scores_path])
        else:
            table.to_csv(out, index=False, float_format=scoring.results.CSV_FLOAT_FORMAT)
    keys = [*scoring.KEYS, *(["ambiguity"] if by_bin else [])]
    shown = table if all_columns else table[[*keys, *_BRIEF]]
    with pd.option_context(
        "display.width",
        200,
        "display.max_columns",
        None,
        "display.max_rows",
        None,
        "display.float_format",
        "{:.3f}".format,
    ):
        typer.echo(shown.to_string(index=False))
