"""`layerpilot probe`: which layers matter (`probe SPEC`), `probe merge`, `probe validate`,
`probe compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.base import App, DefaultCommandGroup
from cli.console import emit, field, guarded, out, say
from cli.options import (
    DatasetOpt,
    EvalSizeOpt,
    JsonOpt,
    ModelOpt,
    NoMlflowOpt,
    ParallelOpt,
    RewardOpt,
    SpecArg,
    SpecOptions,
    announce_defaults,
    resolve_spec,
)
from cli.progress import progress_display
from cli.runs import open_record, publishing
from cli.tables import layer_table, plain_table, probe_heading
from service.errors import InputError
from service.files import check_output_dir, write_json
from service.probe.report import REPORT_JSON, REPORT_PNG, ProbeReport
from service.ranks import is_main
from service.spec.loading import load_spec
from service.spec.models import ProbeMode, SelectionSpec
from service.tracking.review import STAGE

app = App(
    name="probe",
    cls=DefaultCommandGroup,
    help="Per-layer contribution: which decoder layers are worth RL-training.",
)

PROBE_STAGE = {STAGE: "probe"}  # as an `adapt` job's probe run is tagged

OutOpt = Annotated[
    Path, typer.Option("--out", metavar="DIR", help="Probe directory (report, partial results, runs).")
]
ModeOpt = Annotated[
    ProbeMode | None,
    typer.Option(
        "--mode",
        metavar="MODE",
        help="exact, halving, gradient, spectrum or knockout (default: the spec's probe.mode).",
    ),
]


@app.command("run")
@guarded
def run(
    *,
    spec_path: SpecArg = None,
    mode: ModeOpt = None,
    out_dir: OutOpt = Path("layerpilot-probe"),
    parallel: ParallelOpt = None,
    layer_index: Annotated[
        str | None,
        typer.Option(
            "--layer-index",
            metavar="UNIT",
            help="Run one exact-mode unit only (a layer index, `full`, `base`, `K#J` for seed J of "
            "probe.seeds, or `job` for the unit of JOB_COMPLETION_INDEX in an Indexed Job) and write its "
            "partial result; join with `probe merge`.",
        ),
    ] = None,
    keep_runs: Annotated[
        bool, typer.Option("--keep-runs", help="Keep each exact run's checkpoints and layer patch.")
    ] = False,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    eval_size: EvalSizeOpt = None,
    no_mlflow: NoMlflowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score every candidate layer, select the ones to train, write probe_report.json and .png."""
    check_output_dir(out_dir, "--out")
    options = SpecOptions(spec_path, model, dataset, reward, eval_size)
    spec = resolve_spec(options)
    # Deferred, after the input checks: these load torch, transformers and TRL (seconds).
    from service.models.stack import inspect_stack
    from service.probe.reuse import check_no_mode
    from service.probe.run import check_probe_dir, run_probe
    from service.probe.units import candidate_layers, parse_unit, run_unit

    chosen_mode = mode.value if mode is not None else spec.probe.mode
    check_probe_dir(out_dir, spec)
    check_no_mode(spec, mode.value if mode is not None else None)
    if layer_index is not None:
        if spec.probe.reuse is not None:
            raise InputError(
                "--layer-index",
                f"the spec reuses a profile (probe.reuse: {spec.probe.reuse}), so there are no units to run",
                "drop --layer-index, or remove probe.reuse from the spec to probe",
            )
        if chosen_mode != ProbeMode.exact.value:
            raise InputError(
                "--layer-index", f"applies to exact mode, not {chosen_mode}", "drop --mode or use exact"
            )
        candidates = candidate_layers(spec, len(inspect_stack(spec.model)))
        unit = parse_unit(layer_index, candidates, spec.probe.seeds)
        announce_defaults(options, spec)
        with progress_display() as shown:
            shown.note(f"probe unit {unit.label} of {spec.model.uri} into {out_dir}")
            partial = run_unit(spec, unit, out_dir, keep_runs=keep_runs, progress=shown)
        if is_main():  # under torchrun every rank trains the unit; only the main one prints
            emit(
                partial,
                as_json=as_json,
                render=lambda: say(f"{unit.label}: score {partial['score']:.4f} ({partial['seconds']:.0f}s)"),
            )
        return

    announce_defaults(options, spec)
    with (
        publishing(
            open_record(out_dir, f"probe {spec.model.uri}", spec, mlflow=not no_mlflow, tags=PROBE_STAGE)
        ) as record,
        progress_display() as shown,
    ):
        if spec.probe.reuse is None:
            shown.note(f"{chosen_mode} probe of {spec.model.uri} into {out_dir}")
        report = run_probe(
            spec,
            out_dir,
            mode=mode.value if mode is not None else None,
            parallel=parallel,
            keep_runs=keep_runs,
            progress=shown,
            record=record,
        )
    print_report(report, out_dir, as_json=as_json)


def print_report(report: ProbeReport, out_dir: Path, *, as_json: bool) -> None:
    def render() -> None:
        say(probe_heading(report))
        out.print(layer_table(report))
        if report.baseline_score is not None and report.full_score is not None:
            say(f"S_base {report.baseline_score:.4f}, S_full {report.full_score:.4f}")
        for text in report.notes:
            say(f"note: {text}")
        field("report:", str(out_dir / REPORT_JSON))
        field("chart:", str(out_dir / REPORT_PNG))

    emit(report.to_json(), as_json=as_json, render=render)


@app.command("plan")
@guarded
def plan(
    *,
    spec_path: SpecArg = None,
    out_dir: OutOpt = Path("layerpilot-probe"),
    model: ModelOpt = None,
    no_mlflow: NoMlflowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """List an exact probe's units (base, full, each candidate layer): the Indexed Job's completions."""
    check_output_dir(out_dir, "--out")
    spec = resolve_spec(SpecOptions(spec_path, model))
    from service.models.stack import inspect_stack  # deferred, after the input checks: transformers
    from service.probe.run import check_probe_dir
    from service.probe.units import candidate_layers, units_for
    from service.tracking.review import PROBE_UNITS

    stack = inspect_stack(spec.model)
    units = units_for(candidate_layers(spec, len(stack)), spec.probe.seeds)
    check_probe_dir(out_dir, spec)
    labels = [unit.label for unit in units]
    result = {"model": spec.model.uri, "numLayers": len(stack), "units": len(units), "labels": labels}
    # The operator sizes its Indexed Job from the tag: under it, a plan MLflow did not get fails.
    tags = {PROBE_UNITS: str(len(units)), **PROBE_STAGE}
    with publishing(open_record(out_dir, f"probe {spec.model.uri}", spec, mlflow=not no_mlflow, tags=tags)):
        write_json(out_dir / "probe_plan.json", result)
    emit(
        result,
        as_json=as_json,
        render=lambda: say(
            f"{len(units)} units for {spec.model.uri} ({len(stack)} layers): {', '.join(labels)}"
        ),
    )


@app.command("merge")
@guarded
def merge(
    *,
    probe_dir: Annotated[
        Path, typer.Argument(metavar="PROBE_DIR", help="The --out directory the units wrote to.")
    ],
    spec_path: Annotated[
        Path | None,
        typer.Option("--spec", metavar="SPEC", help="The probe's spec (applies its selection rule)."),
    ] = None,
    no_mlflow: NoMlflowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Merge per-unit results (from `--layer-index` runs, e.g. an Indexed Job) into one tracked report.

    A halving probe's results merge with its spec (`--spec`), whose rungs say which units count.
    """
    from service.probe.chart import write_report
    from service.probe.exact import merge_partials  # deferred: loads torch (seconds)
    from service.probe.halving import merge_halving
    from service.probe.recorded import record_probe
    from service.probe.selection import select_layers

    spec = load_spec(spec_path) if spec_path is not None else None
    if spec is not None and spec.probe.mode == ProbeMode.halving.value:
        report = merge_halving(probe_dir, spec)  # the rung schedule follows from the spec
    else:
        report = merge_partials(probe_dir, spec)
    if spec is None:
        report.selected = select_layers(SelectionSpec(), report)
    # With MLFLOW_RUN_ID, the operator's probe-stage run; without --spec, the default `mlflow` section.
    record = open_record(probe_dir, f"probe {report.model}", spec, mlflow=not no_mlflow, tags=PROBE_STAGE)
    with publishing(record):
        write_report(report, probe_dir)
        record_probe(record, report, probe_dir)
    print_report(report, probe_dir, as_json=as_json)


@app.command("validate")
@guarded
def validate(
    *,
    spec_path: SpecArg = None,
    out_dir: OutOpt = Path("layerpilot-validate"),
    parallel: Annotated[
        int, typer.Option("--parallel", metavar="N", min=1, help="Exact-mode runs at once.")
    ] = 1,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    eval_size: EvalSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run exact and the fast modes; report how well each proxy ranks layers like exact does."""
    check_output_dir(out_dir, "--out")
    options = SpecOptions(spec_path, model, dataset, reward, eval_size)
    spec = resolve_spec(options)
    from service.probe.agreement import VALIDATION_JSON, validate_proxies  # deferred, after the checks

    announce_defaults(options, spec)
    with progress_display() as shown:
        shown.note(f"validating proxies against the exact probe of {spec.model.uri} into {out_dir}")
        result = validate_proxies(spec, out_dir, parallel=parallel, progress=shown)

    def render() -> None:
        say(f"proxies vs exact on {result['model']} (exact probe: {result['exact']['wallSeconds']:.0f}s)")
        out.print(_agreement_table(result))
        say(f"exact ranking, best first: {result['exact']['ranking']}")
        say(_chance_line(result["chance"]))
        field("details:", str(out_dir / VALIDATION_JSON))

    emit(result, as_json=as_json, render=render)


@app.command("compare")
@guarded
def compare(
    *,
    reports: Annotated[
        list[Path],
        typer.Argument(
            metavar="REPORT...", help="Two or more probe reports (or probe directories) of one model."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Rank agreement between probe reports of one base model measured on different tasks."""
    from service.probe.agreement import compare_reports
    from service.probe.report import read_report

    if len(reports) < 2:
        raise InputError(
            "REPORT", "compare needs two reports or more", "pass the probe_report.json of each task"
        )
    loaded = {str(path): read_report(path) for path in reports}
    result = compare_reports(loaded)

    def render() -> None:
        say(f"rank agreement of probes of {result['model']}")
        number_of = {name: i + 1 for i, name in enumerate(result["reports"])}
        for name, report in result["reports"].items():
            task = f", measured on {report['task']}" if report.get("task") else ""
            say(f"  {number_of[name]}: {name} ({report['mode']}{task})")
        numbers = ("layers", "Spearman", "Kendall", "top-1", "top-3")
        table = plain_table("reports", *numbers, right=numbers)
        for pair in result["pairs"]:
            table.add_row(
                f"{number_of[pair['first']]} vs {number_of[pair['second']]}",
                str(pair["layers"]),
                _number(pair["spearman"]),
                _number(pair["kendall"]),
                _number(pair["topK"].get("1")),
                _number(pair["topK"].get("3")),
            )
        out.print(table)
        say(_chance_line(result["pairs"][0]["chance"]))

    emit(result, as_json=as_json, render=render)


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}"


def _chance_line(chance: dict[str, Any]) -> str:
    top = ", ".join(f"top-{k} {v:.2f}" for k, v in chance["topK"].items())
    return (
        f"chance (random rankings of these layers): Spearman 95th percentile {chance['spearman95']:.2f}, "
        f"Kendall {chance['kendall95']:.2f}; mean {top}"
    )


def _agreement_table(result: dict[str, Any]) -> Table:
    numbers = ("Spearman", "Kendall", "top-1", "top-3", "time", "of exact")
    table = plain_table("proxy", *numbers, right=("proxy", *numbers))

    number = _number
    for name, entry in result["proxies"].items():
        share = entry.get("shareOfExactWallTime")
        table.add_row(
            name,
            number(entry["spearman"]),
            number(entry["kendall"]),
            number(entry["topK"].get("1")),
            number(entry["topK"].get("3")),
            f"{entry['wallSeconds']:.1f}s" if "wallSeconds" in entry else "–",
            f"{share:.1%}" if share is not None else "–",
        )
    return table
