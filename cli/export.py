"""`layerpilot export`: a probe's selected layers as another training tool's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from cli.base import App
from cli.console import emit, guarded
from cli.options import JsonOpt
from service.probe.export import ExportFormat, export_layers
from service.probe.report import read_report

app = App()


@app.command("export")
@guarded
def export(
    *,
    report_path: Annotated[
        Path, typer.Argument(metavar="REPORT", help="probe_report.json (or the directory holding it).")
    ],
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", metavar="FORMAT", help="peft, axolotl, llamafactory or regex.", show_default=False
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Print the selected layers as a PEFT, axolotl, LLaMA-Factory or regex configuration."""
    exported = export_layers(read_report(report_path), fmt.value)
    emit(
        exported,
        as_json=as_json,
        render=lambda: typer.echo(yaml.safe_dump(exported, sort_keys=False).rstrip()),
    )
