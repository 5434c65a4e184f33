"""The MLflow client as layerpilot uses it: one client per tracking URI, errors by code.

Every module of `service.tracking` that talks to MLflow gets its client here.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service import utils as tracking_utils

from service.tracking.uris import LOCAL_ARTIFACTS, local_db_path

# MLflow writes "🏃 View run … at: URL" to stdout whenever a run on a server ends (one extra request
# each). Stdout carries the caller's results (`--json`), and layerpilot says where runs are itself.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

# The MLflow 3 UI files runs of an unclassified experiment under GenAI "evaluation runs"; RL
# post-training is model training, so experiments we create say so.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


@contextlib.contextmanager
def global_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at `tracking_uri` for the duration of a call.

    MLflow's SQL registry resolves a `models:/m-…` version source through a fresh `MlflowClient()`,
    i.e. the process-wide URI, not the client's own (a TODO in its sqlalchemy_store); without this a
    local-store registration looks in `./mlflow.db` and fails.
    """
    # Restore exactly what was set explicitly (usually nothing): restoring the *resolved* URI would
    # pin it and hide a later change of MLFLOW_TRACKING_URI.
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = previous


def client_for(tracking_uri: str) -> Any:
    """An MlflowClient whose registry is the tracking server too (MLflow's default outside Databricks).

    A local store's directory is created first (MLflow creates the database file, not its folder).
    """
    db = local_db_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def error_code(error: BaseException) -> str | None:
    """MLflow's error code (`RESOURCE_DOES_NOT_EXIST`, …), or None for a non-MLflow error."""
    return error.error_code if isinstance(error, MlflowException) else None


_METRIC_KEY = re.compile(r"[^/\w.\- ]")


def metric_key(key: Any) -> str:
    """A metric name MLflow accepts: `_` for the characters it would reject.

    >>> metric_key("rewards/acc(x)")
    'rewards/acc_x_'
    """
    return _METRIC_KEY.sub("_", str(key))


def ensure_experiment(client: Any, tracking_uri: str, name: str) -> str:
    """The id of experiment `name`, creating it (artifacts beside a local store) when it does not exist."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    db = local_db_path(tracking_uri)
    location = (db.parent / LOCAL_ARTIFACTS).as_uri() if db is not None else None
    try:
        return str(client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS))
    except MlflowException as error:  # created meanwhile by a parallel Job
        found = client.get_experiment_by_name(name)
        if found is None:
            raise error from None
        return str(found.experiment_id)
