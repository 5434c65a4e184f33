"""`layerpilot` — probe, train and ship only the decoder layers that matter.

This module only joins the command groups; each lives in its own module. Commands are thin:
parse, call `service`, print. Results go to stdout (`--json` for machines), progress and errors
to stderr. Exit codes: 0 success, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from cli import adapt, evaluate, export, k8s, patch, probe, register, registry, rewards, train
from cli import mlflow as mlflow_commands
from cli.base import App
from cli.verbosity import quiet_libraries, verbose_from_env

app = App(
    name="layerpilot",
    help="RL post-training of only the decoder layers that matter: probe, train, patch, register.",
    no_args_is_help=True,
)
for group in (
    adapt.app,
    probe.app,
    train.app,
    evaluate.app,
    patch.app,
    export.app,
    registry.app,
    rewards.app,
):
    app.add_typer(group)
app.add_typer(register.app)  # the last stage of adapt on its own
app.add_typer(mlflow_commands.app)  # replay what a tracking outage kept in a workdir
for group in (k8s.app, k8s.operator_app):
    app.add_typer(group)


def _version(value: bool) -> None:  # noqa: FBT001 - click calls an option's callback with its value
    if value:
        versions = []
        for package in ("torch", "transformers", "trl", "mlflow"):
            try:
                versions.append(f"{package} {version(package)}")
            except PackageNotFoundError:
                versions.append(f"{package} missing")
        typer.echo(f"layerpilot {version('layerpilot')} ({', '.join(versions)})")
        raise typer.Exit()


@app.callback()
def root(
    *,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Show the libraries' own logs, warnings and progress bars too."),
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the versions and exit."),
    ] = False,
) -> None:
    """RL post-training of only the decoder layers that matter: probe, train, patch, register."""
    quiet_libraries(verbose=verbose or verbose_from_env())


def main() -> None:
    # `--verbose` is an option of `layerpilot` itself; accept it after the command name too.
    args = sys.argv[1:]
    if "--verbose" in args[1:]:
        args.remove("--verbose")
        args.insert(0, "--verbose")
    app(args=args, prog_name="layerpilot")


if __name__ == "__main__":
    main()
