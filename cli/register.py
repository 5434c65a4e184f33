"""`layerpilot register`: the last stage of `adapt` as a command of its own (the operator's last Job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.base import App
from cli.console import emit, err, field, guarded, say, score, warn
from cli.options import JsonOpt, SpecOptions, resolve_spec
from cli.progress import progress_display
from cli.runs import show_registered
from service.files import check_output_dir

app = App()


@app.command(
    help="Evaluate base + layer patch and register the patch as a version with alias `candidate` "
    "(the last stage of adapt)."
)
@guarded
def register(
    *,
    spec_path: Annotated[
        Path,
        typer.Argument(
            metavar="SPEC",
            help="LayerAdaptation YAML (the whole resource or only its spec); names mlflow.registeredModel.",
            show_default=False,
        ),
    ],
    probe_dir: Annotated[
        Path,
        typer.Option(
            "--probe", metavar="DIR", help="The probe directory (or its probe_report.json) behind the patch."
        ),
    ],
    patch_dir: Annotated[
        Path, typer.Option("--patch", metavar="DIR", help="The layer patch: the --out directory of `train`.")
    ],
    out_dir: Annotated[
        Path,
        typer.Option("--out", metavar="DIR", help="The evaluation and the run's record (re-run to publish)."),
    ] = Path("layerpilot-register"),
    as_json: JsonOpt = False,
) -> None:
    # Fails loudly: exit 2 without `mlflow.registeredModel`, exit 1 when the version was not
    # registered (the evaluation is printed all the same).
    check_output_dir(out_dir, "--out")
    spec = resolve_spec(SpecOptions(spec_path))
    from service.register import run_register  # deferred, after the input checks: torch and mlflow

    with progress_display() as shown:
        result = run_register(spec, probe_dir, patch_dir, out_dir, progress=shown)
    summary = result.to_json()
    emit(summary, as_json=as_json, render=lambda: render(summary))
    if summary["notLogged"]:
        warn(summary["notLogged"])
    if summary["registeredModel"] is None:
        why = escape(
            f"evaluated, but not registered as {spec.mlflow.registered_model} ({result.error}); the patch "
            f"is kept in {patch_dir}, and `layerpilot mlflow sync {out_dir}` registers it once MLflow answers"
        )
        err.print(f"[bold red]error:[/] {why}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def render(summary: dict[str, Any]) -> None:
    layers = ", ".join(map(str, summary["layers"]))
    say(
        f"eval score {score(summary['evalBefore'])} → {score(summary['evalAfter'])} with the patch of "
        f"layer{'s' if len(summary['layers']) > 1 else ''} {layers} ({summary['evalItems']} items)"
    )
    field("layer patch:", summary["patchDir"])
    show_registered(summary["registeredModel"], summary["trackingUri"], summary["experimentId"])
