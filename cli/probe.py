"""`layerpilot probe` (run, merge, validate) and `layerpilot plan export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table
from typer.core import TyperGroup

from cli.common import (
    DatasetOpt,
    JsonOpt,
    ModelOpt,
    NoMlflowOpt,
    ParallelOpt,
    RewardOpt,
    SpecArg,
    emit,
    err,
    guarded,
    out,
    print_unit,
    resolve_spec,
    tracked,
)
from service.spec import ProbeMode


class DefaultRunGroup(TyperGroup):
    """`layerpilot probe SPEC` means `layerpilot probe run SPEC`; `merge`/`validate` stay subcommands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer vendors its own click
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


probe_app = typer.Typer(
    cls=DefaultRunGroup,
    help="Per-layer contribution: which decoder layers are worth RL-training (`probe SPEC` = `probe run`).",
)
plan_app = typer.Typer(
    help="Export a probe's selected layers for other training tools.", no_args_is_help=True
)

OutOpt = Annotated[Path, typer.Option("--out", help="Probe directory (report, partial results, runs).")]
DEFAULT_OUT = Path("layerpilot-probe")


def _layer_table(report: Any) -> Table:
    exact = report.mode == "exact"
    table = Table(
        title=f"{report.model}: {report.mode} probe, selected {report.selected} ({report.strategy})"
    )
    table.add_column("layer", justify="right")
    table.add_column("S_k" if exact else "score", justify="right")
    if exact:
        table.add_column("C(k)", justify="right")
    table.add_column("rank", justify="right")
    for layer in sorted(report.layers, key=lambda item: item.index):
        mark = " *" if layer.index in report.selected else ""
        row = [f"{layer.index}{mark}", f"{layer.score:.4g}"]
        if exact:
            row.append("n/a" if layer.contribution is None else f"{layer.contribution:.3f}")
        row.append(str(layer.rank))
        table.add_row(*row)
    return table


@probe_app.command("run")
@guarded
def probe_run(
    spec_path: SpecArg = None,
    mode: Annotated[
        ProbeMode | None, typer.Option("--mode", help="exact | gradient | spectrum (default: probe.mode).")
    ] = None,
    out_dir: OutOpt = DEFAULT_OUT,
    parallel: ParallelOpt = None,
    layer_index: Annotated[
        str | None,
        typer.Option(
            "--layer-index",
            help="Run one exact-mode unit only (a layer index, `full`, `base`, or `job` for the unit of "
            "JOB_COMPLETION_INDEX in an Indexed Job) and write its partial result; join with `probe merge`.",
        ),
    ] = None,
    keep_runs: Annotated[
        bool, typer.Option("--keep-runs", help="Keep each exact run's checkpoints and layer patch.")
    ] = False,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    no_mlflow: NoMlflowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score every candidate layer, select the ones to train, write probe_report.json and .png."""
    from service.layers import inspect_stack
    from service.probe import candidate_layers, parse_unit, run_probe, run_unit

    spec = resolve_spec(spec_path, model, dataset, reward)
    chosen_mode = mode.value if mode is not None else spec.probe.mode
    if layer_index is not None:
        if chosen_mode != ProbeMode.exact.value:
            from service.errors import SpecError

            raise SpecError(
                "--layer-index", f"applies to exact mode, not {chosen_mode}", "drop --mode or use exact"
            )
        unit = parse_unit(layer_index, candidate_layers(spec, len(inspect_stack(spec.model))))
        err.print(f"probe unit {unit} of {spec.model.uri} → {out_dir}")
        record = run_unit(spec, unit, out_dir, keep_runs=keep_runs)
        emit(
            record,
            as_json,
            lambda: out.print(f"unit {unit}: score {record['score']:.4f} ({record['seconds']}s)"),
        )
        return

    err.print(f"{chosen_mode} probe of {spec.model.uri} → {out_dir}")
    with tracked(spec, f"probe {spec.model.uri}", enabled=not no_mlflow) as run:
        report = run_probe(
            spec,
            out_dir,
            mode=chosen_mode,
            parallel=parallel,
            keep_runs=keep_runs,
            on_unit=print_unit,
            write=run is None,
        )
        if run is not None:
            from service.pipeline import log_probe

            log_probe(run, report, out_dir)
    _print_report(report, out_dir, as_json)


def _print_report(report: Any, out_dir: Path, as_json: bool) -> None:
    from service.report import REPORT_JSON, REPORT_PNG

    def render() -> None:
        out.print(_layer_table(report))
        if report.baseline_score is not None:
            out.print(f"S_base {report.baseline_score:.4f}  S_full {report.full_score:.4f}")
        for note in report.notes:
            out.print(f"note: {note}")
        out.print(f"report: {out_dir / REPORT_JSON}\nchart:  {out_dir / REPORT_PNG}")

    emit(report.to_json(), as_json, render)


@probe_app.command("merge")
@guarded
def probe_merge(
    probe_dir: Annotated[Path, typer.Argument(help="The --out directory the units wrote to.")],
    spec_path: Annotated[
        Path | None, typer.Option("--spec", help="The probe's spec (applies its selection rule).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge per-unit results (from `--layer-index` runs, e.g. an Indexed Job) into one report."""
    from service.probe import merge_partials
    from service.spec import load_spec

    spec = load_spec(spec_path) if spec_path is not None else None
    report = merge_partials(probe_dir, spec)
    if spec is None:
        from service.selection import select_layers
        from service.spec import SelectionSpec

        report.selected = select_layers(SelectionSpec(), report)
    report.write(probe_dir)
    _print_report(report, probe_dir, as_json)


@probe_app.command("validate")
@guarded
def probe_validate(
    spec_path: SpecArg = None,
    out_dir: OutOpt = Path("layerpilot-validate"),
    parallel: Annotated[int, typer.Option("--parallel", min=1, help="Exact-mode runs at once.")] = 1,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run exact and the fast modes; report how well each proxy ranks layers like exact does."""
    from service.validation import validate_proxies

    spec = resolve_spec(spec_path, model, dataset, reward)
    err.print(f"validating proxies against the exact probe of {spec.model.uri} → {out_dir}")
    result = validate_proxies(spec, out_dir, parallel=parallel)

    def render() -> None:
        table = Table(title=f"proxy vs exact on {result['model']} (exact: {result['exact']['wallSeconds']}s)")
        for column in ("proxy", "Spearman", "Kendall", "top-1", "top-3", "wall time", "share of exact"):
            table.add_column(column, justify="right")
        for name, entry in result["proxies"].items():
            share = entry.get("shareOfExactWallTime")
            table.add_row(
                name,
                str(entry["spearman"]),
                str(entry["kendall"]),
                str(entry["topK"].get("1")),
                str(entry["topK"].get("3")),
                f"{entry['wallSeconds']}s" if "wallSeconds" in entry else "-",
                f"{share:.1%}" if share is not None else "-",
            )
        out.print(table)
        out.print(f"exact ranking (best first): {result['exact']['ranking']}")

    emit(result, as_json, render)


@plan_app.command("export")
@guarded
def plan_export(
    report_path: Annotated[Path, typer.Argument(help="probe_report.json (or its directory).")],
    fmt: Annotated[
        str, typer.Option("--format", help="peft | axolotl | llamafactory | regex", show_default=False)
    ],
    as_json: JsonOpt = False,
) -> None:
    """Print the selected layers as a PEFT, axolotl, LLaMA-Factory or regex configuration."""
    from service.plan import export_plan
    from service.report import read_report

    plan = export_plan(read_report(report_path), fmt)
    emit(plan, as_json, lambda: typer.echo(yaml.safe_dump(plan, sort_keys=False).rstrip()))
