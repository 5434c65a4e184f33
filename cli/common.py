"""What every command group shares: consoles, option types, one-line errors, spec loading, progress."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from typer import Abort
from typer._click.exceptions import ClickException  # typer vendors click (>= 0.29 pinned)
from typer.core import TyperGroup

from service.errors import LayerpilotError, SpecError
from service.spec import LayerAdaptationSpec, RewardSpec, load_spec

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

SpecArg = Annotated[
    Path | None,
    typer.Argument(help="LayerAdaptation YAML (the whole resource or only its spec).", show_default=False),
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model URI (builtin:demo, a local dir, hf://org/name).")
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", help="Dataset URI (builtin:arith, a file, hf://…).")
]
RewardOpt = Annotated[
    list[str] | None, typer.Option("--reward", help="Reward name (repeatable); see `layerpilot rewards`.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="Override training.maxSteps.")]
ParallelOpt = Annotated[
    int | None,
    typer.Option("--parallel", min=1, help="Exact-probe runs at once (default: sized to the machine)."),
]
NoMlflowOpt = Annotated[
    bool,
    typer.Option(
        "--no-mlflow",
        help="Do not track this run in MLflow (default: the spec's trackingUri, MLFLOW_TRACKING_URI, "
        "or ./mlflow.db).",
    ),
]


def guarded(func: F) -> F:
    """Turn our errors into one line on stderr and the right exit code; never a traceback for bad input."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except LayerpilotError as error:
            err.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished checkpoints are kept (continue with --resume)")
            raise typer.Exit(130) from None
        except Exception as error:
            if os.environ.get("LAYERPILOT_DEBUG"):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            err.print(
                f"[bold red]error:[/] {type(error).__name__}: {first} "
                "(set LAYERPILOT_DEBUG=1 for the traceback)",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def resolve_spec(
    spec_path: Path | None, model: str | None, dataset: str | None, rewards: list[str] | None
) -> LayerAdaptationSpec:
    """The spec from a file, or defaults, with command-line overrides applied and re-validated."""
    if spec_path is None and model is None:
        raise SpecError("SPEC", "no spec given", "pass a SPEC file or --model URI")
    spec = load_spec(spec_path)
    data = spec.model_dump(mode="json", by_alias=True)
    if model is not None:
        data["model"] = {**data["model"], "uri": model, "revision": None}
    if dataset is not None:
        data["dataset"] = {**data["dataset"], "uri": dataset}
    if rewards:
        data["rewards"] = [RewardSpec(name=name).model_dump(by_alias=True) for name in rewards]
    spec = load_spec(data)
    # Fail on a bad model, dataset or reward before any work starts or progress is printed.
    from service.layers import resolve_model_dir
    from service.rewards import build_rewards

    resolve_model_dir(spec.model.uri, spec.model.revision)
    build_rewards(spec.rewards)
    return spec


@contextmanager
def progress(
    description: str, total: int | None = None
) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """A progress bar on stderr; yields a hook `(step, total, logs)` for the service to call."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total, info="")

        def hook(step: int, steps: int, logs: dict[str, float]) -> None:
            info = f"reward {logs['reward']:.3f}" if "reward" in logs else ""
            bar.update(task, completed=step, total=steps, info=info)

        yield hook


def emit(data: dict[str, Any], as_json: bool, render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render()


class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad choice, missing argument) as one line on stderr, exit 2.

    Typer would print usage, a hint and a boxed panel; scripts and the operator's logs want the one
    line that names the option and what is accepted, like every other bad-input error here.
    """

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        forward = {"windows_expand_args": windows_expand_args, **extra}
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **forward)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **forward)
        except ClickException as error:
            if type(error).__name__ != "NoArgsIsHelpError":  # help was printed already
                ctx = getattr(error, "ctx", None)
                where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                message = error.format_message().replace("Value error, ", "")
                err.print(f"[bold red]error:[/] {message}{where}", highlight=False, soft_wrap=True)
            sys.exit(error.exit_code)
        except Abort:
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@contextmanager
def tracked(spec: LayerAdaptationSpec, name: str, *, enabled: bool) -> Iterator[Any]:
    """An MLflow run for a single command (None when disabled); says at the end where to look.

    The local store is ./mlflow.db, MLflow's own default, so `layerpilot registry` and `mlflow ui`
    find it from the same directory.
    """
    if not enabled:
        yield None
        return
    from service.pipeline import open_tracker
    from service.tracking import where_to_look

    tracker = open_tracker(spec, Path.cwd())
    with tracker.start_run(name) as run:
        run.log_spec(spec)
        yield run
    err.print(where_to_look(tracker.tracking_uri, run.experiment_id, run.run_id), soft_wrap=True)
    missing = tracker.summary()
    if missing:
        err.print(f"[yellow]warning:[/] {missing}", highlight=False, soft_wrap=True)


def print_unit(done: int, total: int, unit: str, score: float) -> None:
    """Progress of an exact probe, one line per finished unit (a `service.probe.UnitHook`)."""
    err.print(f"  probe [{done}/{total}] {'layer ' + unit if unit.isdigit() else unit}: score {score:.4f}")
