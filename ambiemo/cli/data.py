"""`ambiemo data`: corpora -> manifests, their annotation statistics, and fetching CREMA-D."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Datasets: build manifests (votes -> soft labels -> ambiguity), show their statistics, fetch public corpora.",
    no_args_is_help=True,
)


ParamsOption = Annotated[Path, typer.Option("--params", help="params file")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command("list")
def list_datasets(params_path: ParamsOption = Path("params.yaml")) -> None:
    """The datasets defined in params.yaml, with their loader, label set and root."""
    from ambiemo.core.config import load_params

    params = load_params(params_path)
    for name, spec in (params.get("datasets") or {}).items():
        spec = spec or {}
        typer.echo(
            f"{name:<14} loader={spec.get('loader', '?'):<12} label_set={spec.get('label_set', '?'):<8} "
            f"votes={spec.get('votes', 'drop_utterance'):<15} root={spec.get('root', '')}"
        )


@app.command()
def prepare(
    dataset: Annotated[
        str, typer.Argument(help="a key of params.yaml `datasets` (demo, iemocap, msp-podcast, crema-d)")
    ],
    root: Annotated[
        Path | None, typer.Option(help="the corpus folder; default: params datasets.<dataset>.root")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="manifest to write; default: <paths.results>/manifests/<dataset>.parquet")
    ] = None,
    label_set: Annotated[
        str | None,
        typer.Option(
            "--label-set", help="a key of params.yaml `label_sets`; default: params datasets.<dataset>.label_set"
        ),
    ] = None,
    allow_missing_audio: Annotated[
        bool, typer.Option("--allow-missing-audio", help="build a labels-only manifest when audio files are missing")
    ] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Build a dataset's manifest: one row per utterance with its vote distribution and ambiguity bin."""
    from ambiemo.core.config import load_params
    from ambiemo.data import DataError, prepare_dataset
    from ambiemo.data.describe import format_stats, manifest_stats
    from ambiemo.data.manifest import ManifestError

    params = load_params(params_path)
    if out is None:
        out = Path((params.get("paths") or {}).get("results", "results")) / "manifests" / f"{dataset}.parquet"
    start = time.perf_counter()
    try:
        manifest = prepare_dataset(
            dataset, params, root=root, out=out, label_set=label_set, allow_missing_audio=allow_missing_audio
        )
    except (DataError, ManifestError, KeyError, ValueError, FileNotFoundError) as e:
        _fail(str(e).strip("'\""))
    seconds = time.perf_counter() - start
    typer.echo(format_stats(manifest_stats(manifest)))
    from ambiemo.data import default_ratings_path

    typer.echo(f"wrote {out} ({len(manifest)} utterances) and {default_ratings_path(out)} in {seconds:.2f} s")


@app.command()
def stats(
    manifest: Annotated[Path, typer.Argument(help="a manifest written by `ambiemo data prepare`")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of text")] = False,
) -> None:
    """Annotation statistics of a manifest: raters, majority labels, unanimity, entropy, ambiguity bins,
    agreement with the intended emotion, and every exclusion with its reason."""
    from ambiemo.data.describe import format_stats, manifest_stats
    from ambiemo.data.manifest import ManifestError, read_manifest

    try:
        m = read_manifest(manifest)
    except (ManifestError, FileNotFoundError) as e:
        _fail(str(e))
    s = manifest_stats(m)
    missing, looked = m.missing_audio()
    s["audio_missing"] = {"missing": len(missing), "looked_for": looked, "utt_ids": missing}
    typer.echo(json.dumps(s, indent=2, sort_keys=False) if as_json else format_stats(s))
    if missing and not as_json:
        from ambiemo.data.manifest import describe_missing

        note = " (the corpus has moved or is not mounted?)" if len(missing) == looked else ""
        typer.echo(f"audio: {describe_missing(missing, looked)}{note}")


@app.command()
def fetch(
    dataset: Annotated[str, typer.Argument(help="crema-d (the only corpus whose licence allows a direct download)")],
    dest: Annotated[Path, typer.Option("--dest", help="folder to download into (created if missing)")],
    tables_only: Annotated[
        bool, typer.Option("--tables-only", help="only the vote tables and file lists, no audio")
    ] = False,
    workers: Annotated[int, typer.Option(help="parallel downloads")] = 8,
    verify_only: Annotated[
        bool, typer.Option("--verify-only", help="check an existing download, fetch nothing")
    ] = False,
) -> None:
    """Download a public corpus in its official layout and verify every file's size and SHA-256."""
    from ambiemo.data.fetch import FetchError, fetch_crema_d, verify_crema_d

    if dataset != "crema-d":
        _fail(
            f"cannot fetch {dataset!r}: only crema-d is public. IEMOCAP and MSP-Podcast are licensed by their "
            "owners (sail.usc.edu/iemocap, ecs.utdallas.edu/research/researchgroups/msp-lab); request them "
            "there and set params.yaml datasets.<name>.root"
        )
    try:
        if verify_only:
            report = verify_crema_d(dest, audio=not tables_only)
        else:
            report = fetch_crema_d(dest, audio=not tables_only, workers=workers, progress=typer.echo)
    except FetchError as e:
        _fail(str(e))
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)
