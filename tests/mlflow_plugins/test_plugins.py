"""The run context and request header plugins, discovered through MLflow's own registries: present in
their environment, silent outside it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from mlflow import MlflowClient
from mlflow.tracking.context.registry import _run_context_provider_registry, resolve_tags
from mlflow.tracking.request_header.registry import _request_header_provider_registry, resolve_request_headers

from mlflow_plugins.auth_header import BearerTokenHeaderProvider
from mlflow_plugins.k8s_context import KubernetesRunContext
from service.record import Record
from service.spec.models import MlflowSpec
from service.tracking.publish import publish
from service.tracking.publishing import tracking_for
from tests.mlflow_server import MlflowServer


def test_mlflow_discovers_both_plugins_through_entry_points() -> None:
    assert any(isinstance(p, KubernetesRunContext) for p in _run_context_provider_registry)
    assert any(isinstance(p, BearerTokenHeaderProvider) for p in _request_header_provider_registry)


def test_silent_outside_kubernetes_and_without_a_token(clean_mlflow_env: pytest.MonkeyPatch) -> None:
    clean_mlflow_env.setenv("LAYERPILOT_NAMESPACE", "ml")  # set, but not inside a pod
    assert KubernetesRunContext().in_context() is False
    assert not any(key.startswith("layerpilot.") for key in resolve_tags())
    assert BearerTokenHeaderProvider().in_context() is False
    assert "Authorization" not in resolve_request_headers()


def test_runs_started_in_a_pod_carry_its_kubernetes_context(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "LAYERPILOT_NAMESPACE": "ml-team",
        "LAYERPILOT_RESOURCE": "demo-arith",
        "LAYERPILOT_JOB": "demo-arith-probe-3",
        "POD_NAME": "demo-arith-probe-3-x7k2p",
    }.items():
        clean_mlflow_env.setenv(name, value)
    # The context is resolved where the job runs and kept in its record: a later publish from
    # elsewhere (a sync on a laptop) still tags the run with the pod it ran in.
    tracking = tracking_for(MlflowSpec(trackingUri=mlflow_server.uri, experiment="k8s-context"), tmp_path)
    Record.start(tmp_path / "job", "adapt", tracking=tracking).end()
    for name in ("KUBERNETES_SERVICE_HOST", "LAYERPILOT_NAMESPACE", "LAYERPILOT_JOB", "POD_NAME"):
        clean_mlflow_env.delenv(name)
    run_id = publish(tmp_path / "job").runs["."]
    tags = MlflowClient(mlflow_server.uri).get_run(run_id).data.tags
    assert tags["layerpilot.k8s.namespace"] == "ml-team"
    assert tags["layerpilot.k8s.resource"] == "demo-arith"
    assert tags["layerpilot.k8s.job"] == "demo-arith-probe-3"
    assert tags["layerpilot.k8s.pod"] == "demo-arith-probe-3-x7k2p"

    clean_mlflow_env.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    clean_mlflow_env.setenv("HOSTNAME", "fallback-pod")
    assert KubernetesRunContext().tags()["layerpilot.k8s.pod"] == "fallback-pod"


class _Recorder(BaseHTTPRequestHandler):
    """Answers MLflow's get-experiment-by-name and remembers each request's Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = json.dumps(
            {
                "experiment": {
                    "experiment_id": "7",
                    "name": "x",
                    "lifecycle_stage": "active",
                    "artifact_location": "",
                }
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str | None]]]:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_bearer_token_reaches_the_server(
    recorder: tuple[str, list[str | None]], tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    uri, seen = recorder
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("x").experiment_id == "7"
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_TOKEN", "s3cret")
    client.get_experiment_by_name("x")
    # A mounted token file is re-read per request, so a rotated token is used at once.
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    clean_mlflow_env.delenv("LAYERPILOT_MLFLOW_TOKEN")
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_TOKEN_FILE", str(token_file))
    client.get_experiment_by_name("x")
    token_file.write_text("rotated")
    client.get_experiment_by_name("x")
    assert seen == [None, "Bearer s3cret", "Bearer first", "Bearer rotated"]
