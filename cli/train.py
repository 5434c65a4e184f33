"""`layerpilot train`: RL post-training of only the chosen layers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.base import App
from cli.console import emit, field, guarded, out, say
from cli.options import (
    DatasetOpt,
    JsonOpt,
    MaxStepsOpt,
    ModelOpt,
    NoMlflowOpt,
    RewardOpt,
    SpecArg,
    announce_defaults,
    resolve_spec,
)
from cli.progress import progress_display
from cli.runs import tracked
from cli.tables import plain_table
from service.ranks import is_main
from service.spec.indices import parse_layer_list

app = App()


@app.command()
@guarded
def train(
    spec_path: SpecArg = None,
    layers: Annotated[
        str | None, typer.Option("--layers", metavar="LIST", help="Layers to train, e.g. 3,4 or 2-5.")
    ] = None,
    from_probe: Annotated[
        Path | None,
        typer.Option(
            "--from-probe", metavar="REPORT", help="Train the layers selected in a probe_report.json."
        ),
    ] = None,
    max_steps: MaxStepsOpt = None,
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Output directory (checkpoints and layer patch).")
    ] = Path("layerpilot-train"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")
    ] = False,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    no_mlflow: NoMlflowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """RL post-training of only the chosen layers; writes the layer patch to --out."""
    # Deferred: these load torch, transformers and TRL (seconds); --help and bad input stay instant.
    from service.patch import PATCH_TENSORS
    from service.probe.selection import layers_for_training
    from service.tracking import records
    from service.training.trainer import train as run_training

    spec = resolve_spec(spec_path, model, dataset, reward)
    chosen = layers_for_training(
        spec, layers=parse_layer_list(layers) if layers else None, probe_report=from_probe
    )
    main = is_main()  # under torchrun every rank trains; only the main one records and prints
    if main:
        announce_defaults(spec_path, dataset, reward, spec)
    with (
        tracked(spec, f"train {spec.model.uri}", enabled=not no_mlflow and main) as run,
        progress_display() as shown,
        records.step_logger(run, spec) as log_steps,
    ):
        shown.note(f"training layers {chosen} of {spec.model.uri} into {out_dir}")
        result = run_training(
            spec,
            chosen,
            out_dir,
            resume=resume,
            max_steps=max_steps,
            progress=shown,
            on_step=[log_steps],
        )
        if run:
            records.log_training(run, result)
    data = result.to_json()

    def render() -> None:
        say(f"trained layers {result.layers} for {result.global_step} steps")
        table = plain_table("layer", "relative weight change", right=("layer", "relative weight change"))
        for index, value in data["layerDeltas"].items():
            table.add_row(index, f"{value:.3e}")
        out.print(table)
        share = result.trainable_parameters / result.total_parameters
        say(
            f"trained {result.trainable_parameters:,} of {result.total_parameters:,} parameters ({share:.1%})"
        )
        field("layer patch:", str(result.out_dir / PATCH_TENSORS))

    if main:
        emit(data, as_json, render)
