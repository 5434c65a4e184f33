"""`layerpilot registry`: review registered layer patches and move the `champion` alias."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markdown import Markdown

from cli.base import App
from cli.console import emit, err, guarded, out, say, score
from cli.options import JsonOpt
from cli.tables import plain_table
from service.errors import first_line
from service.tracking.uris import check_tracking_uri, local_store_uri

app = App(
    name="registry",
    help="Registered layer patches: list, show, promote (MLflow model registry).",
    no_args_is_help=True,
)

TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        metavar="URI",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow server URL or store URI (e.g. http://mlflow:5000 or sqlite:////abs/workdir/mlflow.db).",
        show_default=False,
    ),
]


def _registry(tracking_uri: str | None) -> Any:
    """The registry at --tracking-uri / MLFLOW_TRACKING_URI, else the local store in the current directory."""
    from service.tracking.registry import Registry  # deferred: mlflow takes seconds to import

    if tracking_uri:
        return Registry(check_tracking_uri(tracking_uri, "--tracking-uri"))
    return Registry(local_store_uri(Path.cwd()))


@app.command("list")
@guarded
def list_(*, tracking_uri: TrackingUriOpt = None, as_json: JsonOpt = False) -> None:
    """Registered models with their newest version and aliases."""
    registry = _registry(tracking_uri)
    models = registry.list_models()

    def render() -> None:
        if not models:
            say(f"no registered models in {registry.tracking_uri}")
            return
        say(f"registered models in {registry.tracking_uri}")
        table = plain_table("name", "latest", "aliases", "description")
        for model in models:
            aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(model["aliases"].items()))
            table.add_row(model["name"], model["latestVersion"] or "–", aliases, model["description"])
        out.print(table)

    emit({"trackingUri": registry.tracking_uri, "models": models}, as_json=as_json, render=render)


@app.command()
@guarded
def show(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Registered model name.")],
    version: Annotated[
        str | None, typer.Argument(metavar="VERSION", help="One version: its review and tags.")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A model's versions (score, layers, aliases), or one version's full review."""
    data = _registry(tracking_uri).show(name, version)

    def render() -> None:
        if version is not None:
            aliases = f" ({', '.join(data['aliases'])})" if data["aliases"] else ""
            out.print(
                f"[bold]{data['name']} version {data['version']}[/]{aliases}  run {data['runId']}",
                soft_wrap=True,
            )
            out.print(Markdown(data["description"] or "_no description_"))
            for key, value in sorted(data["tags"].items()):
                out.print(f"  {key} = {value}", highlight=False, markup=False, soft_wrap=True)
            return
        if data["description"]:
            say(f"{name}: {first_line(data['description'])}")
        columns = ("version", "eval score", "layers", "aliases", "created (UTC)", "run")
        table = plain_table(*columns, right=("version", "eval score", "created (UTC)", "run"))
        for item in data["versions"]:
            table.add_row(
                item["version"],
                score(item["evalScore"]),
                item["layers"] or "–",
                ", ".join(item["aliases"]),
                item["createdAt"][:16].replace("T", " "),
                (item["runId"] or "–")[:8],  # like a short commit hash; --json has the whole id
            )
        out.print(table)

    emit(data, as_json=as_json, render=render)


@app.command()
@guarded
def promote(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Registered model name.")],
    version: Annotated[str, typer.Argument(metavar="VERSION", help="Version to promote.")],
    alias: Annotated[str, typer.Option("--alias", metavar="ALIAS", help="Alias to move.")] = "champion",
    force: Annotated[
        bool,
        typer.Option("--force", help="Move the alias even if the eval score does not beat the holder's."),
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason", metavar="TEXT", help="Why (required with --force); recorded on the version."
        ),
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS at VERSION when its eval score beats the current holder's (or with --force)."""
    result = _registry(tracking_uri).promote(name, version, alias=alias, force=force, reason=reason)

    def render() -> None:
        if result["promoted"]:
            previous = f" (was version {result['previous']})" if result["previous"] else ""
            message = f"{name}: `{alias}` → version {version}{previous}: {result['reason']}"
            out.print(message, soft_wrap=True, highlight=False, markup=False)
        else:
            err.print(f"{name}: {result['reason']}; nothing changed", soft_wrap=True, highlight=False)

    emit(result, as_json=as_json, render=render)
