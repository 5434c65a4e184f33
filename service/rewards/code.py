"""`code_tests`: run a completion's Python code against the row's tests in a sandboxed child.

The parent side lives here (limits, process group, nonce, scoring); the child program is
`service.rewards.sandbox_child`, started as a script in a fresh isolated interpreter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.rewards import sandbox_child
from service.rewards.base import ParamError, column, completion_text

logger = logging.getLogger(__name__)

CHILD_PROGRAM = Path(sandbox_child.__file__)

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The Python code in a completion: the last ```python block, else the last bare ``` block,
    else the whole text. An unclosed fence (a completion cut at max length) runs to the end.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nand\\n```python\\nx = 2\\n```")
    'x = 2\\n'
    >>> extract_code("x = 3")
    'x = 3'
    """
    blocks = [(lang, body) for lang, body in _FENCE.findall(text)]
    labelled = [body for lang, body in blocks if lang]
    if labelled:
        return str(labelled[-1])
    if blocks:
        return str(blocks[-1][1])
    return text


_FILE_SIZE_LIMIT = 64 * 1024 * 1024
_CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group (it is a session leader), then the child itself."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def run_sandboxed(
    code: str, tests: str, *, timeout: float, memory_mb: int, network_namespace: bool = True
) -> float:
    """Run `code` then `tests` in a fresh, limited interpreter: 1.0 if both ran to the end, else 0.0.

    Never raises and never waits longer than about `timeout` seconds (plus interpreter start).
    """
    try:
        with tempfile.TemporaryDirectory(prefix="layerpilot-reward-", ignore_cleanup_errors=True) as tmp:
            root = Path(tmp)
            work = root / "work"
            work.mkdir()
            payload = root / "payload.json"
            payload.write_text(
                json.dumps(
                    {
                        "code": code,
                        "tests": tests,
                        "memory_bytes": memory_mb * 1024 * 1024,
                        "cpu_seconds": math.ceil(timeout) + 1,
                        "file_bytes": _FILE_SIZE_LIMIT,
                        "network_namespace": network_namespace,
                    }
                )
            )
            nonce = secrets.token_hex(16)
            env = {**_CHILD_ENV, "HOME": str(work), "TMPDIR": str(work)}
            stdout_path = root / "stdout"
            with stdout_path.open("wb") as out, (root / "stderr").open("wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-B", "-X", "utf8", str(CHILD_PROGRAM), str(payload)],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    cwd=work,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
                try:
                    assert proc.stdin is not None
                    try:
                        proc.stdin.write(nonce.encode() + b"\n")
                        proc.stdin.close()
                    except OSError:  # the child died before reading
                        pass
                    try:
                        returncode: int | None = proc.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        returncode = None
                finally:
                    _kill_group(proc)  # also reaps background children of a finished run
                    proc.wait()
            with stdout_path.open("rb") as handle:
                handle.seek(max(0, stdout_path.stat().st_size - 4096))
                tail = handle.read()
            if returncode != 0 or nonce.encode() not in tail:
                if logger.isEnabledFor(logging.DEBUG):
                    reason = "timed out" if returncode is None else f"exit {returncode}"
                    stderr = (root / "stderr").read_bytes()[-2000:].decode(errors="replace")
                    logger.debug("code_tests: %s\n%s", reason, stderr)
                return 0.0
            return 1.0
    except Exception:
        logger.warning("code_tests: could not run a completion", exc_info=True)
        return 0.0


def _as_source(value: Any) -> str:
    """A tests cell as source: a string, or a list of assert lines (MBPP's `test_list`)."""
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


class CodeTests:
    """1 if the completion's Python code passes the `tests` column's asserts (sandboxed subprocess).

    Score = 1.0 if the completion's code and then the row's tests run to exit 0, else 0.0.
    Each completion runs in a fresh `python -I` subprocess, several at a time (`max_workers`).
    This is a best-effort sandbox against accidents, NOT a security boundary against hostile
    code; train in a container without network access and with nothing precious mounted.

    What it does: a wall-clock `timeout` after which the child's whole process group is
    killed; RLIMIT_AS (`memory_mb`), RLIMIT_CPU, RLIMIT_FSIZE and RLIMIT_NOFILE limits; no
    core dumps; a private working directory (also HOME and TMPDIR) removed afterwards; a
    minimal environment; the tests are deleted from disk before the code runs; success needs
    a per-run nonce that only the child program prints after the tests, so exiting early does
    not score. Network: the child tries `unshare(CLONE_NEWUSER | CLONE_NEWNET)`, then
    `unshare(CLONE_NEWNET)`, which leaves it only a loopback device that is down; either can
    be refused (containers' seccomp profiles, no user namespaces), so it ALWAYS also installs
    an audit hook (which Python code cannot remove) that refuses non-Unix sockets, connect,
    bind, send and name resolution, starting programs (`subprocess`, `os.system`, `exec*`,
    `posix_spawn`), signalling other processes, and writing or deleting files outside the
    working directory (see `service.rewards.sandbox_child`).

    What it does not do: audit hooks only see Python-level calls, so `ctypes` or a native
    extension can make raw system calls past them (and, without the namespace, reach the
    network); reading files the training user can read is allowed; a grandchild that calls
    `setsid` escapes the group kill (the CPU limit still ends a busy one); `os.open` with
    `dir_fd` is not checked.
    """

    def __init__(
        self,
        tests_field: str = "tests",
        timeout: float = 5.0,
        memory_mb: int = 512,
        max_workers: int | None = None,
        network_namespace: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ParamError("timeout", "must be positive", "use e.g. timeout: 5")
        if memory_mb < 32:
            raise ParamError("memory_mb", "must be at least 32", "use e.g. memory_mb: 512")
        if max_workers is not None and max_workers < 1:
            raise ParamError("max_workers", "must be at least 1", "leave it out for min(4, cpu count)")
        self.tests_field = tests_field
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.workers = max_workers or min(4, os.cpu_count() or 1)
        self.network_namespace = network_namespace
        self.__name__ = "code_tests"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        cells = column(
            kwargs,
            self.tests_field,
            len(completions),
            self.__name__,
            "dataset",
            f"add a column of Python asserts named '{self.tests_field}', or set the reward's tests_field",
        )
        jobs = [
            (extract_code(completion_text(c)), _as_source(t)) for c, t in zip(completions, cells, strict=True)
        ]
        if not jobs:
            return []
        with ThreadPoolExecutor(
            max_workers=min(self.workers, len(jobs)), thread_name_prefix="code_tests"
        ) as pool:
            return list(pool.map(self._run, jobs))

    def _run(self, job: tuple[str, str]) -> float | None:
        code, tests = job
        return run_sandboxed(
            code,
            tests,
            timeout=self.timeout,
            memory_mb=self.memory_mb,
            network_namespace=self.network_namespace,
        )
