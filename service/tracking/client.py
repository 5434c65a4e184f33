"""The MLflow client as layerpilot uses it: one client per tracking URI, errors by code.

Every module of `service.tracking` that talks to MLflow gets its client here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service import utils as tracking_utils

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
    """An MlflowClient whose registry is the tracking server too (MLflow's default outside Databricks)."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def error_code(error: BaseException) -> str | None:
    """MLflow's error code (`RESOURCE_DOES_NOT_EXIST`, …), or None for a non-MLflow error."""
    return error.error_code if isinstance(error, MlflowException) else None
