"""`code_tests`: run a completion's Python code against the row's tests in a sandboxed child.

The parent side lives here (the isolation: bubblewrap or plain rlimits, a uid per run, the
process group, nonce, scoring); the child program is `service.rewards.sandbox_child`, started as a
script in a fresh isolated interpreter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.errors import InputError, LayerpilotError, first_line
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
_MAX_PROCESSES = 16  # processes and threads of one run (the run's own uid); x memory_mb bounds its memory
_CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

SANDBOX_ENV = "LAYERPILOT_SANDBOX"
BUBBLEWRAP, RLIMITS = "bubblewrap", "rlimits"


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """How this process isolates completions, settled once: `kind` is what `isolation()` says."""

    kind: str
    bwrap: str | None = None  # the bubblewrap executable, for kind "bubblewrap"
    switch_uid: bool = False  # root: each run switches to its own unprivileged uid


_settled: dict[str, Sandbox] = {}
_settle_lock = threading.Lock()


def isolation() -> str:
    """How `code_tests` isolates completions here: "bubblewrap" or "rlimits".

    `LAYERPILOT_SANDBOX` picks: `auto` (the default) uses bubblewrap when `bwrap` is on PATH and
    works on this machine, else rlimits; `bubblewrap` requires it; `rlimits` never uses it. The
    choice is tried once per process and logged at INFO.
    """
    return _sandbox().kind


def _sandbox() -> Sandbox:
    wanted = os.environ.get(SANDBOX_ENV, "").strip().lower() or "auto"
    with _settle_lock:
        if wanted not in _settled:
            _settled[wanted] = _settle(wanted)
        return _settled[wanted]


def _settle(wanted: str) -> Sandbox:
    if wanted not in ("auto", BUBBLEWRAP, RLIMITS):
        raise InputError(
            SANDBOX_ENV, f"'{wanted}' is not auto, bubblewrap or rlimits", "use one of those, or unset it"
        )
    root = os.geteuid() == 0
    bwrap = shutil.which("bwrap") if wanted != RLIMITS else None
    why = f"{SANDBOX_ENV}=rlimits" if wanted == RLIMITS else "bwrap is not on PATH"
    if bwrap:
        problem = _try_isolation(Sandbox(BUBBLEWRAP, bwrap, root))
        if problem is None:
            logger.info(
                "code_tests sandbox: bubblewrap (%s)%s", bwrap, ", each run as its own uid" if root else ""
            )
            return Sandbox(BUBBLEWRAP, bwrap, root)
        why = f"bwrap cannot run here: {problem}"
    if wanted == BUBBLEWRAP:
        raise LayerpilotError(
            f"{SANDBOX_ENV}=bubblewrap but {why}; install bubblewrap (apt-get install bubblewrap), "
            f"or set {SANDBOX_ENV}=rlimits to run completions with resource limits only"
        )
    sandbox = Sandbox(RLIMITS, None, root)
    if root:
        problem = _try_isolation(sandbox)
        if problem is not None:
            logger.warning(
                "code_tests sandbox: running as root and cannot switch to an unprivileged uid (%s): "
                "completions can read and write what root can",
                problem,
            )
            sandbox = Sandbox(RLIMITS)
    own_uid = ", each run as its own uid" if sandbox.switch_uid else ""
    # bwrap is here but will not run: worth a look
    logger.log(logging.WARNING if bwrap else logging.INFO, "code_tests sandbox: rlimits (%s)%s", why, own_uid)
    return sandbox


def _try_isolation(sandbox: Sandbox) -> str | None:
    """None when `sandbox` can start the child program here (`--check`), else what went wrong."""
    with (
        sandbox_child.claim_uid(switch=sandbox.switch_uid) as uid,
        tempfile.TemporaryDirectory(prefix="layerpilot-check-", dir=_work_parent(uid)) as tmp,
    ):
        work = Path(os.path.realpath(tmp)) / "work"
        work.mkdir()
        if uid is not None:
            sandbox_child.hand_over(str(work), uid)
        argv = _command(sandbox, work, network_namespace=True, uid=uid)
        try:
            done = subprocess.run(
                [*argv, "--check", *([str(uid)] if uid is not None else [])],
                cwd=work,
                env=_child_env(work),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            return first_line(err)
    lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit {done.returncode}"]
    return None if done.returncode == 0 else first_line(lines[-1])


def _child_env(work: Path) -> dict[str, str]:
    return {**_CHILD_ENV, "HOME": str(work), "TMPDIR": str(work)}


def _command(sandbox: Sandbox, work: Path, *, network_namespace: bool, uid: int | None) -> list[str]:
    """The child program's command line, inside bubblewrap for kind "bubblewrap"."""
    child = [sys.executable, "-I", "-B", "-X", "utf8", str(CHILD_PROGRAM)]
    if sandbox.kind != BUBBLEWRAP or sandbox.bwrap is None:
        return child
    argv = [sandbox.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    # The private /tmp starts empty: the interpreter and the child program stay visible if they
    # live there, and the directories bwrap makes above a bind are searchable (it makes them 0700).
    interpreter = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    binds = [("--ro-bind", path) for path in _under_tmp({*interpreter, str(CHILD_PROGRAM.parent)})]
    made: set[Path] = set()
    for how, path in [*binds, ("--bind", str(work))]:
        for parent in reversed(Path(path).parents):
            if parent.is_relative_to("/tmp") and parent != Path("/tmp") and parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += [how, path, path]
    argv += ["--chdir", str(work)]
    if uid is not None:
        # No user namespace: it would map root alone, leaving the child no uid to switch to.
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if network_namespace:
            argv.append("--unshare-net")
    else:
        argv.append("--unshare-all")
        if not network_namespace:
            argv.append("--share-net")
    argv += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in _child_env(work).items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *child]


def _under_tmp(paths: set[str]) -> list[str]:
    """Those of `paths` that bubblewrap's private /tmp would hide, outermost only."""
    hidden = sorted(os.path.realpath(p) for p in paths if os.path.realpath(p).startswith("/tmp/"))
    return [p for i, p in enumerate(hidden) if not any(p.startswith(q + "/") for q in hidden[:i])]


def _work_parent(uid: int | None) -> str | None:
    """Where runs make their directory: the temp dir, unless a run's uid could not reach it."""
    if uid is None or sandbox_child.searchable_by_others(tempfile.gettempdir()):
        return None
    return "/tmp" if sandbox_child.searchable_by_others("/tmp") else None


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
    settings = {
        "code": code,
        "tests": tests,
        "memory_bytes": memory_mb * 1024 * 1024,
        "cpu_seconds": math.ceil(timeout) + 1,
        "file_bytes": _FILE_SIZE_LIMIT,
        "network_namespace": network_namespace,
        "max_processes": _MAX_PROCESSES,
    }
    try:
        sandbox = _sandbox()
        with sandbox_child.claim_uid(switch=sandbox.switch_uid) as uid:
            return _score(sandbox, uid, settings, timeout)
    except Exception:
        logger.warning("code_tests: could not run a completion", exc_info=True)
        return 0.0


def _score(sandbox: Sandbox, uid: int | None, settings: dict[str, Any], timeout: float) -> float:
    """One run in a fresh working directory (also HOME and TMPDIR), removed afterwards."""
    with tempfile.TemporaryDirectory(
        prefix="layerpilot-reward-", dir=_work_parent(uid), ignore_cleanup_errors=True
    ) as tmp:
        root = Path(os.path.realpath(tmp))
        work = root / "work"
        work.mkdir()
        if uid is not None:
            sandbox_child.hand_over(str(work), uid)
        nonce = secrets.token_hex(16)
        stdin = nonce.encode() + b"\n" + json.dumps({**settings, "uid": uid}).encode()
        argv = _command(sandbox, work, network_namespace=settings["network_namespace"], uid=uid)
        returncode = _run_child(argv, work, root, stdin, timeout, uid)
        stdout_path = root / "stdout"
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


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _run_child(
    argv: list[str], work: Path, root: Path, stdin: bytes, timeout: float, uid: int | None
) -> int | None:
    """Start the child, feed it `stdin`, wait at most `timeout`; its exit code, None when it ran out
    of time. Whatever it started is dead afterwards."""
    with (
        open(root / "stdout", "wb", opener=_private) as out,
        open(root / "stderr", "wb", opener=_private) as err,
    ):
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            cwd=work,
            env=_child_env(work),
            start_new_session=True,
            close_fds=True,
        )
        try:
            proc.communicate(stdin, timeout=timeout)
            return proc.returncode
        except subprocess.TimeoutExpired:
            return None
        finally:
            _kill_group(proc)  # also reaps background children of a finished run
            proc.wait()
            if uid is not None and (left := sandbox_child.sweep(uid)):
                logger.warning("code_tests: processes of sandbox uid %d outlived the run: %s", uid, left)


def _as_source(value: Any) -> str:
    """A tests cell as source: a string, or a list of assert lines (MBPP's `test_list`)."""
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


class CodeTests:
    """1 if the completion's Python code passes the `tests` column's asserts (sandboxed subprocess).

    Score = 1.0 if the completion's code and then the row's tests run to exit 0, else 0.0.
    Each completion runs in a fresh `python -I` subprocess, several at a time (`max_workers`).

    Isolation (`isolation()` says which, `LAYERPILOT_SANDBOX=auto|bubblewrap|rlimits` picks):
    under bubblewrap the child sees the machine read-only, with its working directory the only
    writable place, a private /tmp, /proc and /dev, no network, IPC or other processes, and an
    empty environment; it dies with the trainer. Without ("rlimits") it runs directly, in a
    network namespace when the kernel allows one. When the trainer is root, each run switches
    to a uid of its own (60100-61099; no groups, no capabilities, no new privileges): root's
    files are out of reach, and whatever the run leaves running is found by uid and killed.

    In both: a wall-clock `timeout` (then the process group is killed); RLIMIT_AS (`memory_mb`),
    CPU, FSIZE, NOFILE and, with its own uid, NPROC; no core dumps or ptrace; a private working
    directory (also HOME and TMPDIR) removed afterwards; a minimal environment; the tests come
    on stdin, never on disk; a per-run nonce printed only after the tests, so exiting early does
    not score; an audit hook (see `service.rewards.sandbox_child`) refusing network sockets and
    name resolution, starting programs, signalling others, reading other processes' /proc
    files, and writing outside the working directory.

    What it does not do: filter system calls (no seccomp), so treat it as defence in depth and
    still train with nothing precious mounted. The audit hook sees Python-level calls only
    (`ctypes` goes past it): without bubblewrap a run can write world-writable directories (/tmp)
    and, not as root, read and write what the trainer's user can, reach the network where no
    namespace was allowed, and leave a `setsid` grandchild running (its CPU limit still applies).
    Memory is limited per process, not per run; an always-true `__eq__` still fools the asserts.
    """

    def __init__(
        self,
        tests_field: str = "tests",
        timeout: float = 5.0,
        memory_mb: int = 512,
        max_workers: int | None = None,
        *,
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
        isolation()  # settled (and logged) now: a LAYERPILOT_SANDBOX that cannot be met fails here

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
