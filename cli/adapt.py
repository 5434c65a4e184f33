"""`layerpilot adapt` (probe → select → train → evaluate → register) and `layerpilot demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.base import App
from cli.console import emit, err, field, guarded, out, say, warn
from cli.options import (
    DatasetOpt,
    EvalSizeOpt,
    JsonOpt,
    MaxStepsOpt,
    ModelOpt,
    ParallelOpt,
    RewardOpt,
    SpecArg,
    SpecOptions,
    announce_defaults,
    resolve_spec,
)
from cli.progress import progress_display
from cli.runs import show_registered
from cli.tables import layer_table, probe_heading
from service.files import check_output_dir
from service.probe.report import read_report
from service.spec.demo import demo_spec
from service.spec.models import ProbeMode
from service.tracking.review import rate_text

app = App()

WorkdirOpt = Annotated[
    Path,
    typer.Option("--workdir", metavar="DIR", help="Probe, training and result files (re-run to resume)."),
]


@app.command()
@guarded
def adapt(
    *,
    spec_path: SpecArg = None,
    workdir: WorkdirOpt = Path("layerpilot-adapt"),
    mode: Annotated[
        ProbeMode | None,
        typer.Option(
            "--mode",
            metavar="MODE",
            help="exact, halving, gradient, spectrum or knockout (default: the spec's probe.mode).",
        ),
    ] = None,
    parallel: ParallelOpt = None,
    max_steps: MaxStepsOpt = None,
    from_phase: Annotated[
        str,
        typer.Option(
            "--from-phase",
            metavar="PHASE",
            help="Re-run from probe, train (train again from step 0; the old training is kept aside), "
            "eval or register, reusing what the earlier phases left in --workdir.",
        ),
    ] = "probe",
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    eval_size: EvalSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Probe, select, train only the selected layers, evaluate, register (what the operator's Jobs run)."""
    check_output_dir(workdir, "--workdir")
    options = SpecOptions(spec_path, model, dataset, reward, eval_size)
    spec = resolve_spec(options)
    from service.adapt import adapt as run_adapt  # deferred, after the input checks: loads torch, TRL, mlflow

    announce_defaults(options, spec)
    with progress_display() as shown:
        result = run_adapt(
            spec,
            workdir,
            mode=mode.value if mode is not None else None,
            parallel=parallel,
            max_steps=max_steps,
            from_phase=from_phase,
            progress=shown,
        )
    finish(result.to_json(), spec.mlflow.registered_model, as_json=as_json)


@app.command()
@guarded
def demo(
    *,
    workdir: WorkdirOpt = Path("layerpilot-demo"),
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", metavar="N", min=1, help="RL steps (default: the demo spec's maxSteps)."),
    ] = None,
    probe_steps: Annotated[
        int | None,
        typer.Option(
            "--probe-steps",
            metavar="N",
            min=1,
            help="RL steps of each probe run (default: the demo spec's probe.steps).",
        ),
    ] = None,
    agent: Annotated[
        bool,
        typer.Option(
            "--agent",
            help="The agent demo (examples/agent.yaml): a small model learns to walk text gridworlds; "
            "its work directory defaults to layerpilot-demo-agent.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Probe → train → register on the shipped demo model, with a local MLflow store; says where to look."""
    name = "agent" if agent else "arith"
    if agent and workdir == Path("layerpilot-demo"):
        workdir = Path("layerpilot-demo-agent")
    check_output_dir(workdir, "--workdir")
    from service.demo import run_demo  # deferred, after the input checks: loads torch, TRL, mlflow

    with progress_display() as shown:
        summary = run_demo(workdir, name, max_steps=max_steps, probe_steps=probe_steps, progress=shown)
    finish(summary, demo_spec(name).mlflow.registered_model, as_json=as_json)


def render(summary: dict[str, Any]) -> None:
    """What a person reads at the end: the probe table, the gain, and where everything is."""
    report = read_report(Path(summary["probeDir"]))
    say(probe_heading(report))
    out.print(layer_table(report))
    for text in report.notes:
        say(f"note: {text}")
    layers = ", ".join(map(str, summary["selected"]))
    score = summary.get("scoreName", "eval score")
    say(
        f"{score} {summary['evalBefore']:.4f} → {summary['evalAfter']:.4f} after training "
        f"layer{'s' if len(summary['selected']) > 1 else ''} {layers} for {summary['trainedSteps']} steps"
    )
    if summary.get("learningRate"):
        say(f"learning rate {rate_text(summary['learningRate']).replace('**', '')}")
    field("probe report:", f"{summary['probeDir']}/probe_report.json")
    field("probe chart:", f"{summary['probeDir']}/probe_report.png")
    field("layer patch:", summary["patchDir"])
    if summary.get("appliedDir"):
        field("full model:", summary["appliedDir"])
    tracking = summary["mlflow"]
    show_registered(tracking.get("registeredModel"), tracking["trackingUri"], tracking.get("experimentId"))


def finish(summary: dict[str, Any], registered_model: str | None, *, as_json: bool) -> None:
    """Print the result; exit 1 when the job finished but its registration did not happen."""
    emit(summary, as_json=as_json, render=lambda: render(summary))
    tracking = summary["mlflow"]
    if tracking.get("notLogged"):
        warn(tracking["notLogged"])
    if registered_model and not tracking.get("registeredModel"):
        workdir = Path(summary["patchDir"]).parent
        err.print(
            f"[bold red]error:[/] trained and evaluated, but not registered as {registered_model}; "
            f"the patch is kept in {summary['patchDir']}, and `layerpilot mlflow sync {workdir}` "
            "registers it once MLflow answers",
            highlight=False,
            soft_wrap=True,
            markup=True,
        )
        raise typer.Exit(1)
