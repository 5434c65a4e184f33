"""How hard tracking tries: bounded retries with backoff, and which failures are worth retrying.

An MLflow error is recognised by its HTTP status method, so these rules need no mlflow import and
are testable without a server.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from service.errors import SpecError, first_line

T = TypeVar("T")


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
    return first_line(error, limit=200)


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
