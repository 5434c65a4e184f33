"""`layerpilot mlflow sync`: publish a work directory onto MLflow by hand (what a job does as it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.base import App
from cli.console import emit, err, guarded, out
from cli.options import JsonOpt

app = App(
    name="mlflow",
    help="Publish a job's work directory onto MLflow (after an outage, or a --no-mlflow run).",
    no_args_is_help=True,
)


@app.command()
@guarded
def sync(
    *,
    workdir: Annotated[
        Path,
        typer.Argument(
            metavar="WORKDIR",
            help="The job's directory: adapt's --workdir, or the --out of probe, train or register.",
            show_default=False,
        ),
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            metavar="URI",
            help="Publish to this store (default: where the job was publishing, as its record says).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish what MLflow does not hold yet: runs, params, tags, metric points, artifacts, statuses,
    the registration. Idempotent: a second sync sends nothing.

    Exit 0 when MLflow holds the whole work directory afterwards, 1 when something is left.
    """
    from service.tracking.publish import publish  # deferred: mlflow takes seconds to import

    result = publish(workdir, tracking_uri)

    def render() -> None:
        if result.complete:  # a partial publish says so on stderr, below; paths are never wrapped
            out.print(result.line(), soft_wrap=True, markup=False, highlight=False)

    emit(result.to_json(), as_json=as_json, render=render)
    if not result.complete:
        err.print(f"[bold red]error:[/] {escape(result.line())}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
