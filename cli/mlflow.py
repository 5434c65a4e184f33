"""`layerpilot mlflow`: what did not reach MLflow during a job, replayed into the store (`sync`)."""

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
    help="Tracking outages: replay what a job could not log to MLflow.",
    no_args_is_help=True,
)


@app.command()
@guarded
def sync(
    workdir: Annotated[
        Path,
        typer.Argument(
            metavar="WORKDIR",
            help="The job's --workdir (where mlflow_unlogged.jsonl is; for probe and train: where they ran).",
            show_default=False,
        ),
    ],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            metavar="URI",
            help="Replay into this store (default: where the job's calls were going, as the ledger says).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay the calls a job could not make (runs, params, tags, metrics, artifacts, statuses, registration).

    Exit 0 when the ledger is empty afterwards (or was), 1 when calls are left in it.
    """
    from service.tracking.sync import sync as run_sync  # deferred: mlflow takes seconds to import

    result = run_sync(workdir, tracking_uri)

    def render() -> None:
        if result.ok:  # a partial sync says so on stderr, below; paths and URIs are never wrapped
            out.print(result.line(), soft_wrap=True, markup=False, highlight=False)

    emit(result.to_json(), as_json, render)
    if not result.ok:
        err.print(f"[bold red]error:[/] {escape(result.line())}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
