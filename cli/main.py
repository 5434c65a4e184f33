"""`layerpilot` — probe, train and ship only the decoder layers that matter.

Commands are thin: parse, call `service`, print. Results go to stdout (`--json` for machines),
progress to stderr. Exit codes: 0 success, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    DatasetOpt,
    JsonOpt,
    ModelOpt,
    OneLineErrors,
    RewardOpt,
    SpecArg,
    emit,
    err,
    guarded,
    out,
    progress,
    resolve_spec,
)
from cli.probe import plan_app, probe_app
from service.spec import parse_layer_list

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
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Override training.maxSteps.")
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Output directory (checkpoints and layer patch).")
    ] = Path("layerpilot-train"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")
    ] = False,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
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
    with progress("train", max_steps or spec.training.max_steps) as hook:
        result = run_training(spec, chosen, out_dir, resume=resume, max_steps=max_steps, on_step=hook)
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
    """Probe the shipped demo model's layers, RL-train the best one, evaluate before and after."""
    from service.demo import run_demo

    def on_unit(done: int, total: int, unit: str, score: float) -> None:
        err.print(
            f"  probe [{done}/{total}] {'layer ' + unit if unit.isdigit() else unit}: score {score:.4f}"
        )

    with progress("train", max_steps or 60) as hook:
        summary = run_demo(
            workdir,
            max_steps=max_steps,
            probe_steps=probe_steps,
            on_unit=on_unit,
            on_step=hook,
            log=err.print,
        )

    def render() -> None:
        from cli.probe import _layer_table
        from service.report import read_report

        out.print(_layer_table(read_report(Path(summary["probeDir"]))))
        out.print(
            f"eval score {summary['before']:.3f} → {summary['after']:.3f} "
            f"after training layers {summary['layers']} for {summary['steps']} steps"
        )
        out.print(f"probe report: {summary['probeDir']}/probe_report.json (chart: probe_report.png)")
        out.print(f"layer patch:  {summary['patchDir']}")
        out.print(f"full model:   {summary['appliedDir']}  (base + patch)")

    emit(summary, as_json, render)


def main() -> None:
    # Library chatter (weight-loading bars, deprecation notices) would bury our progress and results.
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="trl")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    app()


if __name__ == "__main__":
    main()
