"""How hard a request to MLflow tries: MLflow's own HTTP retries, bounded, and which failures pass.

MLflow's REST client already retries every request (urllib3 `Retry`: refused and reset connections,
read timeouts, 408/429/5xx; from MLflow 3.18 a write that may have landed, such as creating a run, only
when the server surely did not process it), with its backoff and a per-request timeout read from
`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `_BACKOFF_FACTOR`, `_BACKOFF_JITTER` and `_TIMEOUT` at each
request. Its defaults (7 retries, factor 2, 120 s per request) would hold a publish for minutes
against a dead server; `RetryPolicy.apply` sets layerpilot's bounds in those variables for the
process, except the ones the user set. Nothing here retries on top: the work directory is the
record, and the next publish simply tries again.

A local store (sqlite) has no HTTP layer: MLflow waits on a locked database itself. An MLflow error
is recognised by its HTTP status method, so these rules need no mlflow import.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from service.errors import InputError, first_line

MAX_ATTEMPTS = 11  # MLflow refuses more than 10 retries (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)
MAX_BACKOFF_S = 120  # and a backoff factor above 120 (_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT)
_SET_BY_US: set[str] = set()  # the variables `apply` wrote (the others in the environment are the user's)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded tries per request, in MLflow's terms; the defaults give up on a dead server in ~3 s.

    `attempts` is 1 + MLflow's max retries. `initial_delay_s` is MLflow's backoff factor: urllib3
    retries once at once, then waits factor × 2, × 4, … seconds; MLflow reads the factor in whole
    seconds, so the fraction only spreads the waits (as MLflow's jitter).
    """

    attempts: int = 3
    initial_delay_s: float = 1.0
    request_timeout_s: int = 15

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Override with LAYERPILOT_MLFLOW_ATTEMPTS / _BACKOFF_S / _TIMEOUT_S."""
        values: dict[str, Any] = {}
        for env, name, kind, most in (
            ("LAYERPILOT_MLFLOW_ATTEMPTS", "attempts", int, MAX_ATTEMPTS),
            ("LAYERPILOT_MLFLOW_BACKOFF_S", "initial_delay_s", float, MAX_BACKOFF_S),
            ("LAYERPILOT_MLFLOW_TIMEOUT_S", "request_timeout_s", int, None),
        ):
            raw = os.environ.get(env)
            if raw is None:
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                raise InputError(env, f"'{raw}' is not a number", "unset it or set e.g. 3") from None
            if values[name] <= 0:
                raise InputError(env, f"must be positive, got {raw}", "unset it or set e.g. 3")
            if most is not None and values[name] > most:
                raise InputError(env, f"MLflow allows at most {most}, got {raw}", "unset it or set e.g. 3")
        return cls(**values)

    def mlflow_env(self) -> dict[str, str]:
        """The policy as MLflow's HTTP variables.

        >>> RetryPolicy().mlflow_env()["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        '2'
        >>> env = RetryPolicy(attempts=1, initial_delay_s=0.05, request_timeout_s=2).mlflow_env()
        >>> [env[f"MLFLOW_HTTP_REQUEST_{name}"] for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT")]
        ['0', '0', '2']
        """
        tries = min(max(self.attempts, 1), MAX_ATTEMPTS)
        delay = min(max(self.initial_delay_s, 0.0), MAX_BACKOFF_S)
        return {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(tries - 1),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(math.floor(delay)),  # MLflow parses an int
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(delay),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout_s),
            # A gateway's Retry-After (urllib3 honours it unbounded) must not hold a publish for
            # minutes either: the next publish tries again.
            "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
        }

    def apply(self) -> None:
        """Bound this process's MLflow requests by the policy; a variable the user set wins.

        Called once where a client is made, before any thread publishes (changing the environment
        while another thread reads it is not safe).
        """
        for name, value in self.mlflow_env().items():
            if name not in os.environ or name in _SET_BY_US:
                os.environ[name] = value
                _SET_BY_US.add(name)


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
