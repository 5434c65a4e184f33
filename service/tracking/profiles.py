"""Probe reports kept in MLflow, found again by the base model they measured (`probe.reuse: mlflow`).

Every probe run carries its base's weights fingerprint as a tag (`layerpilot.base_fingerprint`, the
tag a registered version carries too) and its report as an artifact (`probe_report.json`). A job
that reuses a profile asks for the newest finished probe run of its base in its experiment, or for
one run by id, and reads that report. Runs that themselves reused a profile are passed over: the
profile named is always the probe that measured it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import InputError, LayerpilotError
from service.tracking import review
from service.tracking.client import client_for, error_code
from service.tracking.retries import short_error
from service.tracking.uris import without_credentials

SEARCHED = 50  # probe runs of one base looked at, newest first


@dataclass(frozen=True)
class StoredProfile:
    """A probe report downloaded from a run."""

    run_id: str
    path: Path  # the downloaded probe_report.json


def newest_profile(
    tracking_uri: str, experiment: str, fingerprint: str, artifact: str, dest: Path, *, field: str
) -> StoredProfile:
    """The report (`artifact`) of the newest finished probe of the base `fingerprint` in `experiment`."""
    client = client_for(tracking_uri)
    where = f"experiment '{experiment}' at {without_credentials(tracking_uri)}"
    found = _call(
        tracking_uri, "looking up the experiment", lambda: client.get_experiment_by_name(experiment)
    )
    # Only probe runs and trainings that took a profile carry the tag; the latter are passed over below.
    query = f"tags.`{review.BASE_FINGERPRINT}` = '{fingerprint}' and attributes.status = 'FINISHED'"
    runs: list[Any] = []
    if found is not None:
        runs = _call(
            tracking_uri,
            "searching probe runs",
            lambda: client.search_runs(
                [found.experiment_id],
                filter_string=query,
                order_by=["attributes.start_time DESC"],
                max_results=SEARCHED,
            ),
        )
    for run in runs:
        if run.data.tags.get(review.PROBE_REUSED):
            continue
        path = _download(client, tracking_uri, run.info.run_id, artifact, dest)
        if path is not None:
            return StoredProfile(run.info.run_id, path)
    raise InputError(
        field,
        f"{where} holds no finished probe of this base model ({fingerprint[:19]}…)",
        "probe it once (`layerpilot probe` or `adapt` without probe.reuse), or give a report's path",
    )


def profile_of_run(tracking_uri: str, run_id: str, artifact: str, dest: Path, *, field: str) -> StoredProfile:
    """The report (`artifact`) of probe run `run_id`."""
    client = client_for(tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as error:
        if error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise InputError(
                field,
                f"MLflow at {without_credentials(tracking_uri)} has no run {run_id}",
                "copy the probe run's id from the MLflow UI or `layerpilot runs`",
            ) from None
        raise _unreachable(tracking_uri, "reading the run", error) from None
    path = _download(client, tracking_uri, run_id, artifact, dest)
    if path is None:
        raise InputError(
            field,
            f"MLflow run {run_id} has no {artifact} artifact: it is not a finished probe",
            "name the run of a probe (`layerpilot probe`, or an `adapt` job's `probe` run)",
        )
    return StoredProfile(run_id, path)


def _download(client: Any, tracking_uri: str, run_id: str, artifact: str, dest: Path) -> Path | None:
    target = dest / run_id
    target.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, artifact, str(target)))
    except Exception as error:
        if error_code(error) == "RESOURCE_DOES_NOT_EXIST" or isinstance(error, OSError):
            return None  # a probe that never got as far as its report
        raise _unreachable(tracking_uri, f"downloading run {run_id}'s report", error) from None


def _call(tracking_uri: str, what: str, action: Any) -> Any:
    try:
        return action()
    except Exception as error:
        raise _unreachable(tracking_uri, what, error) from None


def _unreachable(tracking_uri: str, what: str, error: BaseException) -> LayerpilotError:
    return LayerpilotError(
        f"MLflow at {without_credentials(tracking_uri)}: {what} for probe.reuse failed "
        f"({short_error(error)}); retry when it is up, or give probe.reuse a report's path"
    )
