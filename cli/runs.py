"""MLflow for single commands (`probe`, `train`): one run, and where to look at the end; and how a
registered version is shown (`adapt`, `register`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.console import command, err, field, out, say, warn
from service.spec.models import LayerAdaptationSpec
from service.tracking.uris import LOCAL_UI, experiment_url, run_url, ui_command


@contextmanager
def tracked(spec: LayerAdaptationSpec | None, name: str, *, enabled: bool) -> Iterator[Any]:
    """An MLflow run for a single command (None when disabled); says at the end where to look.

    The run is the operator's when `MLFLOW_RUN_ID` is set. The local store is ./mlflow.db, MLflow's
    own default, so `layerpilot registry` and `mlflow ui` find it from the same directory. Without a
    spec (`probe merge` with no `--spec`) the default spec's `mlflow` section applies and no spec is
    logged.
    """
    if not enabled:
        yield None
        return
    # Deferred: mlflow takes seconds to import; --no-mlflow never pays for it.
    from service.tracking import records
    from service.tracking.runs import Tracker

    tracker = Tracker.for_spec((spec or LayerAdaptationSpec()).mlflow, Path.cwd())
    with tracker.start_run(name) as run:
        if spec is not None:
            records.log_spec(run, spec)
        yield run
    where_to_look(tracker.tracking_uri, run.experiment_id, run.run_id, tracker.summary())


def where_to_look(
    tracking_uri: str, experiment_id: str | None, run_id: str | None, not_logged: str | None
) -> None:
    """The run's URL on a server, or the `mlflow ui` command for a local store, on stderr."""
    url = run_url(tracking_uri, experiment_id, run_id)
    if url:
        err.print(f"MLflow run: {url}", soft_wrap=True, markup=False)
    else:
        fallback = LOCAL_UI if ui_command(tracking_uri) else tracking_uri  # a run never created
        show_in_mlflow(tracking_uri, experiment_url(tracking_uri, experiment_id) or fallback, "MLflow:", err)
    if not_logged:
        warn(not_logged)


def show_in_mlflow(tracking_uri: str, page: str, lead: str, console: Console) -> None:
    """Where `page` is: after `mlflow ui` for a local store (both printed whole), else the URL itself."""
    ui = ui_command(tracking_uri)
    if ui:
        console.print(f"{lead} start its UI with", markup=False)
        command(ui, console)
        console.print("and open", markup=False)
        command(page, console)
    else:
        field("MLflow:", page, console)


def show_registered(
    registered: dict[str, Any] | None, tracking_uri: str | None, experiment_id: str | None
) -> None:
    """The new version and the command to review it, then its page (else the experiment's) in MLflow."""
    if registered:
        say(
            f"registered {registered['name']} version {registered['version']} "
            f"(alias {registered.get('alias', 'candidate')}); review it with:"
        )
        command(
            f"layerpilot registry show {registered['name']} {registered['version']} "
            f"--tracking-uri {tracking_uri}"
        )
    if not tracking_uri:
        return
    page = registered.get("url") if registered else experiment_url(tracking_uri, experiment_id)
    if page:
        show_in_mlflow(tracking_uri, page, "or in MLflow:", out)
