"""MLflow for single commands (`probe`, `train`, `probe plan`, `probe merge`): the command's record,
published while it runs (`publishing(open_record(...))`), and where to look at the end; and how a
registered version is shown (`adapt`, `register`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.console import command, err, field, out, say, warn
from service.errors import LayerpilotError
from service.spec.models import LayerAdaptationSpec
from service.tracking.uris import LOCAL_UI, experiment_url, run_url, ui_command


def open_record(
    directory: Path,
    name: str,
    spec: LayerAdaptationSpec | None,
    *,
    mlflow: bool,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """The command's record in `directory` (continued when it runs again with the same spec): where it
    is published with `mlflow` (the spec's, MLFLOW_TRACKING_URI, or ./mlflow.db, MLflow's own default,
    so `layerpilot registry` and `mlflow ui` find it from the same directory), else nowhere yet.

    Without a spec (`probe merge` with no `--spec`) the default spec's `mlflow` section applies and
    no spec is recorded. The run is the operator's when `MLFLOW_RUN_ID` is set.
    """
    # Deferred: mlflow takes seconds to import; --no-mlflow never pays for it.
    from service.tracking.publishing import job_record, tracking_for

    tracking = tracking_for((spec or LayerAdaptationSpec()).mlflow, Path.cwd()) if mlflow else None
    return job_record(directory, name, spec, tracking=tracking, params=params, tags=tags)


@contextmanager
def publishing(record: Any | None) -> Iterator[Any | None]:
    """Publish `record`'s work directory while the block runs; say at the end where to look, and
    what MLflow does not hold yet.

    Under the operator (a record continuing its run) a publish that did not finish fails the
    command (exit 1), so that the Job's retry publishes again: the operator reads that run.
    """
    from service.tracking.publishing import Publishing

    with Publishing(record) as running:  # a record without tracking just ends with the block
        yield record
    outcome = running.outcome
    if outcome is None or record is None or record.tracking is None:
        return
    where_to_look(outcome.tracking_uri, outcome.experiment_id, outcome.runs.get("."), running.summary())
    if record.tracking.run_id and not outcome.complete:
        raise LayerpilotError(
            f"the operator's run {record.tracking.run_id} does not hold this job's record yet; it is kept "
            f"in {record.directory}, and running the command again publishes it"
        )


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
