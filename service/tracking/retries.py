"""How hard tracking tries: MLflow's own HTTP retries, bounded, and which failures are worth retrying.

MLflow's REST client already retries every request (urllib3 `Retry`: refused and reset connections,
read timeouts, 408/429/5xx), with its backoff and a per-request timeout read from
`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `_BACKOFF_FACTOR`, `_BACKOFF_JITTER` and `_TIMEOUT` at each
request. Its defaults (7 retries, factor 2, 120 s per request) stall a training loop for minutes
per call against a dead server, so each tracking call runs with layerpilot's bounds in those
variables (`RetryPolicy.mlflow_env`) unless the user set MLflow's variables explicitly. Retrying
per request, not per call, also means a composite call (log a model: create it, upload its files,
finalize it) is never redone from the start, which would leave a second model behind.

A local store (sqlite) has no HTTP layer: MLflow waits on a locked database itself (busy timeout)
and nothing here retries it. An MLflow error is recognised by its HTTP status method, so these
rules need no mlflow import and are testable without a server.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from service.errors import SpecError, first_line

T = TypeVar("T")

MAX_ATTEMPTS = 11  # MLflow refuses more than 10 retries (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)
MAX_BACKOFF_S = 120  # and a backoff factor above 120 (_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded tries per request, in MLflow's terms; the defaults give up on a dead server in ~3 s.

    `attempts` is 1 + MLflow's max retries. `initial_delay_s` is MLflow's backoff factor: urllib3
    retries once at once, then waits factor × 2, × 4, … seconds; MLflow reads the factor in whole
    seconds, so the fraction only spreads the waits (as MLflow's jitter, up to `initial_delay_s`).
    `factor` and `max_delay_s` are urllib3's own (2, and 120 s) and only kept so that existing
    configurations still construct.

    After a call finally fails, tracking skips MLflow for `cooldown_s` (recording what it skips), then
    tries again once: a hung server then costs one request timeout per cooldown, not one per step.
    """

    attempts: int = 3
    initial_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 4.0
    request_timeout_s: int = 15
    cooldown_s: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Override with LAYERPILOT_MLFLOW_ATTEMPTS / _BACKOFF_S / _TIMEOUT_S / _COOLDOWN_S."""
        values: dict[str, Any] = {}
        for env, name, kind, most in (
            ("LAYERPILOT_MLFLOW_ATTEMPTS", "attempts", int, MAX_ATTEMPTS),
            ("LAYERPILOT_MLFLOW_BACKOFF_S", "initial_delay_s", float, MAX_BACKOFF_S),
            ("LAYERPILOT_MLFLOW_TIMEOUT_S", "request_timeout_s", int, None),
            ("LAYERPILOT_MLFLOW_COOLDOWN_S", "cooldown_s", float, None),
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
            if most is not None and values[name] > most:
                raise SpecError(env, f"MLflow allows at most {most}, got {raw}", "unset it or set e.g. 3")
        return cls(**values)

    def mlflow_env(self, attempts: int | None = None) -> dict[str, str]:
        """The policy as MLflow's HTTP variables (for one call; `attempts` overrides the policy's).

        >>> RetryPolicy().mlflow_env()["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        '2'
        >>> env = RetryPolicy(initial_delay_s=0.05, request_timeout_s=2).mlflow_env(attempts=1)
        >>> [env[f"MLFLOW_HTTP_REQUEST_{name}"] for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT")]
        ['0', '0', '2']
        """
        tries = min(max(attempts or self.attempts, 1), MAX_ATTEMPTS)
        delay = min(max(self.initial_delay_s, 0.0), MAX_BACKOFF_S)
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(tries - 1),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(math.floor(delay)),  # MLflow parses an int
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(delay),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout_s),
            # A gateway's Retry-After (urllib3 honours it unbounded) must not hold training for
            # minutes either: the call is recorded and the cooldown spaces out the next tries.
            "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
        }


@contextlib.contextmanager
def _http_limits(policy: RetryPolicy, attempts: int | None = None) -> Iterator[None]:
    # MLflow reads these at every request, so they bound exactly the requests of this call; a
    # variable the user set explicitly wins (and is never multiplied by a retry loop of ours).
    mine = policy.mlflow_env(attempts)
    added = [name for name in mine if name not in os.environ]
    os.environ.update({name: mine[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def is_transient(error: BaseException) -> bool:
    """Worth trying again later: connection failures, timeouts, 5xx and 429 — not a rejected request."""
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
    return first_line(error, limit=200)


def with_retries(policy: RetryPolicy, action: Callable[[], T], attempts: int | None = None) -> T:
    """Run `action` once, its HTTP requests retried by MLflow within `policy`; raises the last error."""
    with _http_limits(policy, attempts):
        return action()
