"""Where MLflow tracking goes, how hard to try, and what is kept when it fails.

Tracking URIs and the `mlflow ui` command, the retry policy, and the ledger of calls that did not
reach MLflow. No mlflow import here (`service.tracking` is the only module that has one): an MLflow
error is recognised by its HTTP status method, so these rules are testable without a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from service.errors import SpecError
from service.spec import MlflowSpec

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
UNLOGGED_FILE = "mlflow_unlogged.jsonl"
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"  # the directory name `mlflow server` uses for served artifacts
_URI_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")

T = TypeVar("T")
log = logging.getLogger("service.tracking")


# --- where runs go ---------------------------------------------------------------------------------


def local_store_uri(workdir: Path) -> str:
    """The local store of a workdir: `sqlite:////abs/workdir/mlflow.db` (artifacts in `mlartifacts/`)."""
    return "sqlite:///" + str((workdir / LOCAL_DB).resolve())


def resolve_tracking_uri(spec: MlflowSpec | None, workdir: Path) -> str:
    """`mlflow.trackingUri` from the spec, else env `MLFLOW_TRACKING_URI`, else the workdir's local store."""
    if spec is not None and spec.tracking_uri:
        return check_tracking_uri(spec.tracking_uri, "mlflow.trackingUri")
    if os.environ.get(ENV_TRACKING_URI):
        return check_tracking_uri(os.environ[ENV_TRACKING_URI], ENV_TRACKING_URI)
    return local_store_uri(workdir)


def check_tracking_uri(uri: str, field: str) -> str:
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme.split("+")[0] not in _URI_SCHEMES:
        raise SpecError(field, f"'{uri}' is not an MLflow tracking URI", "write e.g. http://mlflow:5000")
    return uri


def ui_command(tracking_uri: str, port: int = 5000) -> str | None:
    """The shell command that opens a local store in the MLflow UI (None for a server: open its URL).

    >>> ui_command("sqlite:////tmp/w/mlflow.db")
    'mlflow ui --backend-store-uri sqlite:////tmp/w/mlflow.db --port 5000'
    """
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri, "--port", str(port)])


def run_url(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """The UI page of a run on a tracking server; None for local stores."""
    if not tracking_uri.startswith(("http://", "https://")) or not run_id or not experiment_id:
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def where_to_look(tracking_uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """One line for users: the run's URL, or the `mlflow ui` command for a local store."""
    url = run_url(tracking_uri, experiment_id, run_id)
    if url:
        return f"MLflow run: {url}"
    command = ui_command(tracking_uri)
    if command:
        return f"MLflow: {command}  (then open http://127.0.0.1:5000)"
    return f"MLflow: {tracking_uri}"


def local_db_path(tracking_uri: str) -> Path | None:
    if tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        return Path(tracking_uri[len("sqlite:///") :])
    return None


# --- retries ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff; the defaults give up on a dead server in ~1.5 s.

    After a call finally fails, tracking skips MLflow for `cooldown_s` (recording what it skips), then
    tries again once: a hung server then costs one request timeout per cooldown, not one per step.
    """

    attempts: int = 3
    initial_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 4.0
    request_timeout_s: int = 15
    cooldown_s: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Override with LAYERPILOT_MLFLOW_ATTEMPTS / _BACKOFF_S / _TIMEOUT_S / _COOLDOWN_S."""
        values: dict[str, Any] = {}
        for env, name, kind in (
            ("LAYERPILOT_MLFLOW_ATTEMPTS", "attempts", int),
            ("LAYERPILOT_MLFLOW_BACKOFF_S", "initial_delay_s", float),
            ("LAYERPILOT_MLFLOW_TIMEOUT_S", "request_timeout_s", int),
            ("LAYERPILOT_MLFLOW_COOLDOWN_S", "cooldown_s", float),
        ):
            raw = os.environ.get(env)
            if raw is None:
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                raise SpecError(env, f"'{raw}' is not a number", "unset it or set e.g. 3") from None
            if values[name] <= 0:
                raise SpecError(env, f"must be positive, got {raw}", "unset it or set e.g. 3")
        return cls(**values)


@contextlib.contextmanager
def _http_limits(policy: RetryPolicy) -> Iterator[None]:
    # MLflow's own HTTP client retries 7 times with backoff factor 2 and waits 120 s per request:
    # minutes of stall per call against a dead server. Our policy replaces it for the call, unless
    # the user set MLflow's variables explicitly.
    mine = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(policy.request_timeout_s),
    }
    added = [name for name in mine if name not in os.environ]
    os.environ.update({name: mine[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: connection failures, timeouts, 5xx and 429 — not a rejected request."""
    status_of = getattr(error, "get_http_status_code", None)  # MlflowException and its subclasses
    if callable(status_of):
        status = int(status_of())
        return status >= 500 or status == 429
    return isinstance(error, OSError | TimeoutError)


def short_error(error: BaseException) -> str:
    """A one-line reason: 'connection refused' rather than three lines of urllib3."""
    text = str(error)
    for marker, short in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("Max retries exceeded", "no connection"),
    ):
        if marker in text:
            return short
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return first[:200]


def with_retries(policy: RetryPolicy, action: Callable[[], T], attempts: int | None = None) -> T:
    """Run `action`, retrying transient failures with exponential backoff; re-raise the last error."""
    delay, tries = policy.initial_delay_s, attempts or policy.attempts
    for attempt in range(1, tries + 1):
        try:
            with _http_limits(policy):
                return action()
        except Exception as error:
            if attempt == tries or not is_transient(error):
                raise
            time.sleep(min(delay, policy.max_delay_s))
            delay *= policy.factor
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


# --- what did not reach MLflow ---------------------------------------------------------------------


@dataclass(frozen=True)
class NotLogged:
    """A tracking call that did not reach MLflow; `payload` holds what it carried."""

    kind: str  # metric | param | tag | artifact | run | status
    count: int
    run_id: str | None
    what: str
    error: str
    transient: bool
    payload: dict[str, Any]


@dataclass
class Ledger:
    """The calls that did not reach MLflow: counted for the summary, appended to a JSONL file."""

    path: Path
    failures: list[NotLogged] = field(default_factory=list)

    def record(self, failure: NotLogged, quiet: bool = False) -> None:
        self.failures.append(failure)
        if not quiet:  # one warning per outage, not one per skipped step
            log.warning("MLflow: not logged %s (%s): %s", failure.what, failure.kind, failure.error)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps(asdict(failure), default=str) + "\n")
        except OSError as error:  # a full disk must not turn a tracking hiccup into a failed run
            log.warning("cannot write %s: %s", self.path, error)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.kind] = counts.get(failure.kind, 0) + failure.count
        return counts

    def summary(self, tracking_uri: str) -> str | None:
        """`MLflow at URI unreachable: not logged: 12 metrics, 3 artifacts (kept in …)`, or None.

        >>> ledger = Ledger(Path("/w/unlogged.jsonl"))
        >>> ledger.failures.append(NotLogged("metric", 12, None, "12 metrics", "timed out", True, {}))
        >>> ledger.summary("http://mlflow:5000")
        'MLflow at http://mlflow:5000 unreachable: not logged: 12 metrics (kept in /w/unlogged.jsonl)'
        """
        counts = self.counts()
        if not counts:
            return None
        parts = ", ".join(f"{n} {_plural(kind, n)}" for kind, n in counts.items())
        state = "unreachable" if any(f.transient for f in self.failures) else "refused some calls"
        return f"MLflow at {tracking_uri} {state}: not logged: {parts} (kept in {self.path})"


def _plural(kind: str, count: int) -> str:
    """
    >>> _plural("metric", 2), _plural("status", 2), _plural("artifact", 1)
    ('metrics', 'statuses', 'artifact')
    """
    if count == 1:
        return kind
    return kind + ("es" if kind.endswith(("s", "x", "sh", "ch")) else "s")
