"""`layerpilot train`: RL post-training of only the chosen layers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.base import App
from cli.console import emit, field, guarded, out, say, warn
from cli.options import (
    DatasetOpt,
    EvalSizeOpt,
    JsonOpt,
    MaxStepsOpt,
    ModelOpt,
    NoMlflowOpt,
    RewardOpt,
    SpecArg,
    SpecOptions,
    announce_defaults,
    resolve_spec,
)
from cli.progress import progress_display
from cli.runs import open_record, publishing
from cli.tables import plain_table
from service.files import check_output_dir
from service.ranks import is_main
from service.spec.indices import parse_layer_list
from service.tracking.review import rate_text

app = App()


@app.command()
@guarded
def train(
    *,
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
        Path,
        typer.Option(
            "--out", metavar="DIR", help="Output directory (checkpoints, layer patch, the run's record)."
        ),
    ] = Path("layerpilot-train"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")
    ] = False,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    eval_size: EvalSizeOpt = None,
    no_mlflow: NoMlflowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """RL post-training of only the chosen layers; writes the layer patch to --out."""
    check_output_dir(out_dir, "--out")
    chosen_layers = parse_layer_list(layers) if layers else None
    options = SpecOptions(spec_path, model, dataset, reward, eval_size)
    spec = resolve_spec(options)
    # Deferred, after the input checks: these load torch, transformers and TRL (seconds).
    from service.calibration import train_layers
    from service.probe.recorded import record_profile
    from service.probe.reuse import keep_profile, reused_profile
    from service.probe.selection import layers_for_training
    from service.record import Record
    from service.training.rundir import check_run_dir
    from service.training.trainer import finished_run, record_patch

    profile = None
    if chosen_layers is None and from_probe is None and spec.probe.reuse is not None:
        profile = reused_profile(spec, out_dir)  # a copy kept in --out by an earlier attempt wins
        chosen = profile.selected
    else:
        chosen = layers_for_training(spec, layers=chosen_layers, probe_report=from_probe)
    checkpoint = check_run_dir(out_dir, spec, chosen, resume=resume)  # before the record touches --out
    announce_defaults(options, spec)
    main = is_main()  # under torchrun every rank trains; only the main one records and prints
    if main and resume and checkpoint is None:
        warn(f"--resume: no checkpoint in {out_dir} yet; starting from step 0")
    steps = max_steps or spec.training.max_steps
    finished = resume and checkpoint is not None and finished_run(out_dir, spec, steps) is not None
    record = None
    if main and finished:  # nothing to train: its record stays as it is, published if it is not yet
        record = Record.read(out_dir) if not no_mlflow else None
    elif main:
        params = {"layers": ",".join(map(str, chosen))}
        record = open_record(out_dir, f"train {spec.model.uri}", spec, mlflow=not no_mlflow, params=params)
    if main and profile is not None:
        keep_profile(profile, out_dir)
        if record is not None:
            record_profile(record, profile, out_dir)
    with publishing(record), progress_display() as shown:
        if profile is not None:
            shown.note(f"layers {chosen} ({profile.strategy}) from the {profile.describe()}")
        shown.note(f"training layers {chosen} of {spec.model.uri} into {out_dir}")
        result = train_layers(
            spec, chosen, out_dir, resume=resume, max_steps=max_steps, progress=shown, record=record
        )
        if record is not None:
            record_patch(record, out_dir)
    data = result.to_json()

    def render() -> None:
        say(f"trained layers {result.layers} for {result.global_step} steps")
        if result.learning_rate:
            say(f"learning rate {rate_text(result.learning_rate).replace('**', '')}")
        table = plain_table("layer", "relative weight change", right=("layer", "relative weight change"))
        for index, value in data["layerDeltas"].items():
            table.add_row(index, f"{value:.3e}")
        out.print(table)
        share = result.trainable_parameters / result.total_parameters
        say(
            f"trained {result.trainable_parameters:,} of {result.total_parameters:,} parameters ({share:.1%})"
        )
        field("layer patch:", str(result.out_dir / "layer_patch.safetensors"))

    if main:
        emit(data, as_json=as_json, render=render)
        for text in result.warnings:
            warn(text)
