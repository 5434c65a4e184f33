"""A real `mlflow server` for tests: sqlite backend, proxied local artifacts, a free port on 127.0.0.1.

One server serves the whole session (it takes ≈7-13 s to answer /health); tests that kill a server
start their own with `start_server`. Every server runs in its own session so that stopping it by its
process-group id also stops the uvicorn worker it spawned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# MLflow would otherwise try to send usage telemetry; these machines have no network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STARTUP_TIMEOUT_S = 90.0


@dataclass
class MlflowServer:
    uri: str
    root: Path
    process: subprocess.Popen[bytes]
    started_in_s: float

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def store_uri(self) -> str:
        """The server's own backend store, for reading back after the server is gone."""
        return f"sqlite:///{self.db}"

    def pause(self) -> None:
        """Freeze the server (a hung server: connections open, no answers)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """A crash: SIGKILL to the server's process group, no clean shutdown."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"mlflow did not answer /health within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def launch(args: list[str], url: str, root: Path) -> MlflowServer:
    """Start an mlflow CLI command that serves `url` and wait until it is healthy."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "server.log"
    started = time.monotonic()
    # The server's job runner (7 huey consumer processes, polling all the time) would take about a
    # core of these 2-core machines from the tests; layerpilot runs no MLflow server jobs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("ab") as sink:  # a restarted server's log follows the crashed one's
        process = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, cwd=root, env=env
        )
    server = MlflowServer(uri=url, root=root, process=process, started_in_s=0.0)
    try:
        wait_healthy(url, process, log, STARTUP_TIMEOUT_S)
    except BaseException:
        server.stop()
        raise
    server.started_in_s = time.monotonic() - started
    return server


def start_server(root: Path, port: int | None = None) -> MlflowServer:
    """A server on `port` (default: a free one) whose store and artifacts live in `root`.

    Started again with the same `root` and `port`, it is the same server after a crash: the same
    URI, the same backend store and artifacts.
    """
    port = port or free_port()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    args = [
        mlflow,
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return launch(args, f"http://127.0.0.1:{port}", root)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real tracking server for the session."""
    server = start_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clean_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No tracking variables leak in from the machine or from other tests, nor out of this one: the
    request bounds a publish sets for its process (`MLFLOW_HTTP_REQUEST_*`) are put back after it."""
    bounds = {name: value for name, value in os.environ.items() if name.startswith("MLFLOW_HTTP_")}
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_RUN_ID",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_TRACKING_TOKEN",
        "KUBERNETES_SERVICE_HOST",
        "LAYERPILOT_MLFLOW_TOKEN",
        "LAYERPILOT_MLFLOW_TOKEN_FILE",
        "LAYERPILOT_MLFLOW_ATTEMPTS",
        "LAYERPILOT_MLFLOW_BACKOFF_S",
        "LAYERPILOT_MLFLOW_TIMEOUT_S",
        "LAYERPILOT_PUBLISH_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    for name in [name for name in os.environ if name.startswith("MLFLOW_HTTP_")]:
        del os.environ[name]
    os.environ.update(bounds)
