"""`layerpilot` — probe, train and ship only the decoder layers that matter.

Commands are thin: parse, call `service`, print. Results go to stdout (`--json` for machines),
progress to stderr. Exit codes: 0 success, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import (
    DatasetOpt,
    JsonOpt,
    MaxStepsOpt,
    ModelOpt,
    NoMlflowOpt,
    OneLineErrors,
    ParallelOpt,
    RewardOpt,
    SpecArg,
    emit,
    err,
    guarded,
    out,
    print_unit,
    progress,
    resolve_spec,
    tracked,
)
from cli.probe import plan_app, probe_app
from cli.registry import registry_app
from service.spec import ProbeMode, parse_layer_list

app = typer.Typer(
    name="layerpilot",
    cls=OneLineErrors,
    help="RL post-training of only the decoder layers that matter.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
patch_app = typer.Typer(help="Layer patches: apply one to its base model.", no_args_is_help=True)
app.add_typer(patch_app, name="patch")
app.add_typer(registry_app, name="registry")
app.add_typer(probe_app, name="probe")
app.add_typer(plan_app, name="plan")


@app.command()
@guarded
def train(
    spec_path: SpecArg = None,
    layers: Annotated[str | None, typer.Option("--layers", help="Layers to train, e.g. 3,4 or 2-5.")] = None,
    from_probe: Annotated[
        Path | None, typer.Option("--from-probe", help="Train the layers selected in a probe_report.json.")
    ] = None,
    max_steps: MaxStepsOpt = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Output directory (checkpoints and layer patch).")
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
    from service.selection import layers_for_training
    from service.training import train as run_training

    spec = resolve_spec(spec_path, model, dataset, reward)
    chosen = layers_for_training(
        spec,
        layers=parse_layer_list(layers) if layers else None,
        probe_report=from_probe,
    )
    err.print(f"training layers {chosen} of {spec.model.uri} → {out_dir}")
    with tracked(spec, f"train {spec.model.uri}", enabled=not no_mlflow) as run:
        with progress("train", max_steps or spec.training.max_steps) as hook:
            result = run_training(
                spec,
                chosen,
                out_dir,
                resume=resume,
                max_steps=max_steps,
                on_step=hook,
                callbacks=[run.trainer_callback()] if run else [],
            )
        if run:
            from service.pipeline import log_training

            log_training(run, result)
    data = result.to_json()

    def render() -> None:
        table = Table(title=f"trained layers {result.layers} for {result.global_step} steps")
        table.add_column("layer", justify="right")
        table.add_column("relative weight change", justify="right")
        for index, value in data["layerDeltas"].items():
            table.add_row(index, f"{value:.3e}")
        out.print(table)
        share = result.trainable_parameters / result.total_parameters
        out.print(
            f"trainable parameters: {result.trainable_parameters:,} "
            f"of {result.total_parameters:,} ({share:.1%})"
        )
        out.print(f"layer patch: {result.out_dir}/layer_patch.safetensors")

    emit(data, as_json, render)


@app.command("eval")
@guarded
def eval_(
    spec_path: SpecArg = None,
    patch: Annotated[Path | None, typer.Option("--patch", help="Score base + this layer patch.")] = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score the base model, or base + patch, on the held-out eval rows (greedy)."""
    from service.evaluation import evaluate

    spec = resolve_spec(spec_path, model, dataset, reward)
    err.print(f"evaluating {spec.model.uri}{' + ' + str(patch) if patch else ''} on {spec.dataset.uri}")
    result = evaluate(spec, patch_dir=patch)

    def render() -> None:
        out.print(f"score {result.score:.4f} on {result.num_items} items ({result.seconds:.1f}s)")
        for name, value in result.rewards.items():
            out.print(f"  {name}: {value:.4f}")

    emit(result.to_json(), as_json, render)


@patch_app.command("apply")
@guarded
def patch_apply(
    base: Annotated[str, typer.Argument(help="Base model URI the patch was trained on.")],
    patch_dir: Annotated[Path, typer.Argument(help="Directory holding layer_patch.safetensors.")],
    out_dir: Annotated[Path, typer.Argument(help="Where to write the full patched model.")],
    as_json: JsonOpt = False,
) -> None:
    """Write a full model = base + layer patch (refuses a base whose weights differ)."""
    from service.delta import apply_patch

    written = apply_patch(base, patch_dir, out_dir)
    emit(
        {"outDir": str(written["outDir"]), "layers": written["layers"], "tensors": written["tensors"]},
        as_json,
        lambda: out.print(f"wrote {written['outDir']} (base + layers {written['layers']})"),
    )


@app.command()
@guarded
def rewards(as_json: JsonOpt = False) -> None:
    """List the registered reward functions."""
    from service.rewards import available_rewards

    found = available_rewards()

    def render() -> None:
        table = Table(title="rewards (use `module:function` for your own)")
        table.add_column("name")
        table.add_column("what it scores")
        for name, doc in found.items():
            table.add_row(name, doc)
        out.print(table)

    emit({"rewards": found}, as_json, render)


def _render_adapt(summary: dict[str, Any]) -> None:
    from cli.probe import _layer_table
    from service.report import read_report

    def line(text: str) -> None:  # commands and paths are copied: never hard-wrap them
        out.print(text, soft_wrap=True, highlight=False)

    out.print(_layer_table(read_report(Path(summary["probeDir"]))))
    line(
        f"eval score {summary['evalBefore']:.3f} → {summary['evalAfter']:.3f} "
        f"after training layers {summary['selected']} for {summary['trainedSteps']} steps"
    )
    line(f"probe report: {summary['probeDir']}/probe_report.json (chart: probe_report.png)")
    line(f"layer patch:  {summary['patchDir']}")
    if summary.get("appliedDir"):
        line(f"full model:   {summary['appliedDir']}  (base + patch)")
    tracking = summary["mlflow"]
    registered = tracking.get("registeredModel")
    if registered:
        store = f" --tracking-uri {tracking['trackingUri']}" if tracking["trackingUri"] else ""
        line(
            f"registered:   {registered['name']} version {registered['version']} "
            f"(alias {registered.get('alias', 'candidate')}); review it with "
            f"`layerpilot registry show {registered['name']} {registered['version']}{store}`"
        )
    line(tracking["whereToLook"])


def _finish_adapt(summary: dict[str, Any], spec_registered_model: str | None, as_json: bool) -> None:
    emit(summary, as_json, lambda: _render_adapt(summary))
    tracking = summary["mlflow"]
    if tracking.get("notLogged"):
        err.print(f"[yellow]warning:[/] {tracking['notLogged']}", highlight=False, soft_wrap=True)
    if spec_registered_model and not tracking.get("registeredModel"):
        err.print(
            f"[bold red]error:[/] trained and evaluated, but not registered as {spec_registered_model}; "
            f"the patch is kept in {summary['patchDir']}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
@guarded
def adapt(
    spec_path: SpecArg = None,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Probe, training and result files (re-run to resume).")
    ] = Path("layerpilot-adapt"),
    mode: Annotated[
        ProbeMode | None, typer.Option("--mode", help="Probe mode (default: probe.mode).")
    ] = None,
    parallel: ParallelOpt = None,
    max_steps: MaxStepsOpt = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Probe, select, train only the selected layers, evaluate, register (what the operator's Jobs run)."""
    from service.pipeline import adapt as run_adapt

    spec = resolve_spec(spec_path, model, dataset, reward)
    with progress("train", max_steps or spec.training.max_steps) as hook:
        result = run_adapt(
            spec,
            workdir,
            mode=mode.value if mode is not None else None,
            parallel=parallel,
            max_steps=max_steps,
            on_unit=print_unit,
            on_step=hook,
            log=err.print,
        )
    _finish_adapt(result.to_json(), spec.mlflow.registered_model, as_json)


@app.command()
@guarded
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo writes its outputs.")] = Path(
        "layerpilot-demo"
    ),
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="RL steps (default: the demo spec's maxSteps).")
    ] = None,
    probe_steps: Annotated[
        int | None, typer.Option("--probe-steps", min=1, help="RL steps of each probe run (default: 30).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Probe → train → register on the shipped demo model, with a local MLflow store; says where to look."""
    from service.demo import demo_spec, run_demo

    spec = demo_spec()
    with progress("train", max_steps or spec.training.max_steps) as hook:
        summary = run_demo(
            workdir,
            max_steps=max_steps,
            probe_steps=probe_steps,
            on_unit=print_unit,
            on_step=hook,
            log=err.print,
        )
    _finish_adapt(summary, spec.mlflow.registered_model, as_json)


def main() -> None:
    # Library chatter (weight-loading bars, deprecation notices) would bury our progress and results.
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    app()


if __name__ == "__main__":
    main()
