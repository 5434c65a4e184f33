"""Where MLflow tracking goes, and how a person finds it afterwards.

The spec's `mlflow.trackingUri`, else `MLFLOW_TRACKING_URI`, else a local sqlite store in the
work directory; the `mlflow ui` command for a local store, a run's URL on a server. No mlflow
import: these rules are testable without a server.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from service.errors import InputError
from service.spec.models import MlflowSpec

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"  # the directory name `mlflow server` uses for served artifacts
_URI_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def local_store_uri(workdir: Path) -> str:
    """The local store of a workdir: `sqlite:////abs/workdir/mlflow.db` (artifacts in `mlartifacts/`)."""
    return "sqlite:///" + str((workdir / LOCAL_DB).resolve())


def resolve_tracking_uri(spec: MlflowSpec | None, workdir: Path) -> str:
    """`mlflow.trackingUri` from the spec, else env `MLFLOW_TRACKING_URI`, else the workdir's local store."""
    return configured_tracking_uri(spec) or local_store_uri(workdir)


def configured_tracking_uri(spec: MlflowSpec | None) -> str | None:
    """`mlflow.trackingUri` from the spec, else env `MLFLOW_TRACKING_URI`, else None (no server named)."""
    if spec is not None and spec.tracking_uri:
        return check_tracking_uri(spec.tracking_uri, "mlflow.trackingUri")
    if os.environ.get(ENV_TRACKING_URI):
        return check_tracking_uri(os.environ[ENV_TRACKING_URI], ENV_TRACKING_URI)
    return None


def check_tracking_uri(uri: str, field: str) -> str:
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme.split("+")[0] not in _URI_SCHEMES:
        raise InputError(field, f"'{uri}' is not an MLflow tracking URI", "write e.g. http://mlflow:5000")
    return uri


def ui_command(tracking_uri: str, port: int = 5000) -> str | None:
    """The shell command that opens a local store in the MLflow UI (None for a server: open its URL).

    >>> ui_command("sqlite:////tmp/w/mlflow.db")
    'mlflow ui --backend-store-uri sqlite:////tmp/w/mlflow.db --port 5000'
    """
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri, "--port", str(port)])


LOCAL_UI = "http://127.0.0.1:5000"
# The MLflow 3 UI opens in its GenAI mode unless told otherwise; this is model training.
_TRAINING_VIEW = "?workflowType=machine_learning"


def ui_base(tracking_uri: str) -> str | None:
    """Where the UI of a store is: the server itself, or `mlflow ui` on a local store's default port."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI if ui_command(tracking_uri) else None


def run_url(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """The UI page of a run on a tracking server; None for local stores.

    >>> run_url("http://mlflow:5000/", "3", "abc")
    'http://mlflow:5000/#/experiments/3/runs/abc?workflowType=machine_learning'
    """
    if not tracking_uri.startswith(("http://", "https://")) or not run_id or not experiment_id:
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{_TRAINING_VIEW}"


def experiment_url(tracking_uri: str, experiment_id: str | None) -> str | None:
    """The UI page listing an experiment's runs (on a server, or `mlflow ui` of a local store)."""
    base = ui_base(tracking_uri)
    return f"{base}/#/experiments/{experiment_id}/runs{_TRAINING_VIEW}" if base and experiment_id else None


def version_url(tracking_uri: str, name: str, version: str) -> str | None:
    """The UI page of a registered version, where a reviewer reads its review and promotes it.

    >>> version_url("sqlite:////w/mlflow.db", "demo-arith", "1")
    'http://127.0.0.1:5000/#/models/demo-arith/versions/1?workflowType=machine_learning'
    """
    base = ui_base(tracking_uri)
    return f"{base}/#/models/{name}/versions/{version}{_TRAINING_VIEW}" if base else None


def where_to_look(tracking_uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """One line for users: the run's URL, or the `mlflow ui` command for a local store."""
    url = run_url(tracking_uri, experiment_id, run_id)
    if url:
        return f"MLflow run: {url}"
    command = ui_command(tracking_uri)
    if command:
        return f"MLflow: {command}  (then open {experiment_url(tracking_uri, experiment_id) or LOCAL_UI})"
    return f"MLflow: {tracking_uri}"


def without_credentials(uri: str) -> str:
    """The URI as it may be written to a file: any `user:password@` removed.

    >>> without_credentials("https://bob:hunter2@mlflow.example/x"), without_credentials("sqlite:///a.db")
    ('https://mlflow.example/x', 'sqlite:///a.db')
    """
    return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", uri)


def local_db_path(tracking_uri: str) -> Path | None:
    if tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        return Path(tracking_uri[len("sqlite:///") :])
    return None
