"""The child program of the `code_tests` sandbox: run one completion's code, then its tests.

`service.rewards.code` starts this file as a script in a fresh `python -I` interpreter, inside
bubblewrap when it can; it must import nothing but the standard library (isolated mode puts
neither layerpilot nor the project on `sys.path`). It reads the nonce and the payload from stdin
(the tests never touch the disk), lowers its limits, tries to leave the network namespace, switches
to the run's own unprivileged uid when started as root, installs the audit hook, and only then
executes the untrusted code. Success is exit 0 AND the nonce on stdout, so `os._exit(0)` or
`sys.exit(0)` in the completion (skipping the tests) does not score.

`sandbox_child.py --check [UID]` does the same set-up without running anything: the parent runs it
once to learn whether an isolation works on this machine.

The end of the file is the host's side of a run's uid (`claim_uid`, `hand_over`, `sweep`): the
parent imports them, the child program never runs them; they live here because, like the child,
they deal with processes and uids through the standard library alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import pwd
import re
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 4, 24, 38
AF_UNIX = socket.AF_UNIX
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BLOCKED = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
        "socket.sethostname",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.startfile",
        "os.forkpty",
        "pty.spawn",
    }
)
# event -> ((path argument, its dir_fd argument or None), ...)
PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.truncate": ((0, None),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "shutil.rmtree": ((0, 1),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),),
}
DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})


def libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def set_limits(cfg: dict[str, Any]) -> None:
    limits = [
        (resource.RLIMIT_AS, cfg["memory_bytes"]),
        (resource.RLIMIT_CPU, cfg["cpu_seconds"]),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, cfg["file_bytes"]),
        (resource.RLIMIT_NOFILE, 256),
    ]
    if cfg.get("uid") is not None:  # counted per uid: only meaningful for the run's own uid
        limits.append((resource.RLIMIT_NPROC, cfg["max_processes"]))
    for res, value in limits:
        try:
            hard = resource.getrlimit(res)[1]
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def isolate(*, want_netns: bool, privileged: bool) -> bool:
    """A private network namespace when the kernel allows one.

    As root it is a bare network namespace: a user namespace would map only root, leaving no uid
    to switch to afterwards. Inside bubblewrap, which made one already, this attempt fails.
    """
    if not want_netns:
        return False
    try:
        options = (CLONE_NEWNET,) if privileged else (CLONE_NEWUSER | CLONE_NEWNET, CLONE_NEWNET)
        return any(libc().unshare(flags) == 0 for flags in options)
    except Exception:
        return False


def drop_privileges(uid: int) -> None:
    """Become `uid` (group `uid`, no supplementary groups) for good, imports still working.

    Raises when the switch did not happen: the code must not run as root.
    """
    held = _open_path_entries()
    for cap in range(64):  # needs CAP_SETPCAP; inside bubblewrap the bounding set is its business
        libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid) or os.getgroups():
        raise PermissionError(f"sandbox: could not switch to uid {uid}")
    _reroute_sys_path(held)


def _open_path_entries() -> dict[str, int]:
    held = {}
    for entry in sys.path:
        try:
            held[entry] = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
    return held


def _reroute_sys_path(held: dict[str, int]) -> None:
    """Entries of `sys.path` the new uid cannot reach (an interpreter under root's 0700 home, say)
    are reached through the directories opened before the switch: a `/proc/self/fd` link resolves
    without searching the directories above. So are the packages imported already (`encodings`
    finds its codecs on its `__path__`)."""
    moved: dict[str, str] = {}
    for index, entry in enumerate(sys.path):
        fd = held.pop(entry, None)
        if fd is None:
            continue
        if os.access(entry, os.R_OK | os.X_OK):
            os.close(fd)
        else:
            moved[entry] = sys.path[index] = f"/proc/self/fd/{fd}"
    for fd in held.values():
        os.close(fd)

    def reroute(path: str) -> str:
        for old, new in moved.items():
            if path == old or path.startswith(old + os.sep):
                return new + path[len(old) :]
        return path

    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if moved and isinstance(search, list):
            search[:] = [reroute(path) for path in search]
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


def lock_down() -> None:
    """No privileges gained through exec (setuid binaries, file capabilities); no core dumps or ptrace."""
    try:
        libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except Exception:
        pass


def make_guard(root: str) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook: no network, no programs, no signals to others, no writes outside `root`,
    no reading other processes' /proc files."""
    inside_prefix = root + os.sep
    own_pid, own_pgid = os.getpid(), os.getpgid(0)

    def resolve(path: Any, dir_fd: Any) -> str:
        if isinstance(path, int):
            return os.readlink(f"/proc/self/fd/{path}")
        path = os.fsdecode(os.fspath(path))
        if path in DEVICES:
            return root
        if dir_fd not in (None, -1) and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        return str(os.path.realpath(path))

    def inside(path: Any, dir_fd: Any = None) -> bool:
        try:
            real = resolve(path, dir_fd)
        except Exception:
            return False
        return real == root or real.startswith(inside_prefix)

    def of_another_process(path: Any) -> bool:
        """A file under /proc/PID of another process: its environment, memory, maps, ..."""
        try:
            parts = resolve(path, None).split(os.sep)
        except Exception:
            return False
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) != os.getpid()

    def deny(event: str) -> None:
        raise PermissionError(f"sandbox: {event} is not allowed here")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in BLOCKED:
            deny(event)
        elif event == "socket.__new__":
            if args[1] != AF_UNIX:
                deny("a network socket")
        elif event == "open":
            path, flags = args[0], args[2]
            if isinstance(path, int):
                pass
            elif flags & WRITE_FLAGS and not inside(path):
                deny("writing outside the working directory")
            elif of_another_process(path):
                deny("reading another process's files")
        elif event in PATH_EVENTS:
            for path_at, fd_at in PATH_EVENTS[event]:
                dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
                if path_at < len(args) and not inside(args[path_at], dir_fd):
                    deny("changing files outside the working directory")
        elif event == "os.kill":
            if args[0] not in (0, own_pid, -own_pgid):
                deny("signalling other processes")
        elif event == "os.killpg":  # noqa: SIM102 - one branch per audited event, like the others
            if args[0] not in (0, own_pgid):
                deny("signalling other processes")

    return hook


def check(args: list[str]) -> None:
    """`--check [UID]`: the set-up alone, then an import that needs the stdlib after the switch."""
    if args:
        drop_privileges(int(args[0]))
    lock_down()
    importlib.import_module("decimal")


def main() -> None:
    if sys.argv[1:2] == ["--check"]:
        check(sys.argv[2:])
        return
    nonce, _, payload = sys.stdin.buffer.read().partition(b"\n")
    cfg = json.loads(payload)
    del payload
    sys.dont_write_bytecode = True
    set_limits(cfg)
    uid = cfg.get("uid")
    netns = isolate(want_netns=cfg["network_namespace"], privileged=uid is not None)
    if uid is not None:
        drop_privileges(uid)
    lock_down()
    result_fd = os.dup(1)
    sys.addaudithook(make_guard(os.path.realpath(os.getcwd())))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(cfg["code"], "solution.py", "exec"), namespace)
        exec(compile(cfg["tests"], "tests.py", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(result_fd, b"\n" + nonce + (b" netns" if netns else b" no-netns") + b"\n")
    os._exit(0)


# ---------------------------------------------------------------------------------------------
# The host's side of a run's uid (when the trainer is root)

RUN_UIDS = range(60100, 61100)  # one per run; a uid that an account has is skipped
STATE = re.compile(rb"^State:\s+(\S)", re.MULTILINE)
UIDS = re.compile(rb"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", re.MULTILINE)


@contextlib.contextmanager
def claim_uid(*, switch: bool = True) -> Iterator[int | None]:
    """A uid of `RUN_UIDS` that no other run holds right now (None when runs do not `switch`).

    Held by binding an abstract Unix socket named after it, so that runs of other processes on
    this machine skip it too, and the claim ends with the process.
    """
    if not switch:
        yield None
        return
    start = int.from_bytes(os.urandom(2), "big") % len(RUN_UIDS)
    for step in range(len(RUN_UIDS)):
        uid = RUN_UIDS[(start + step) % len(RUN_UIDS)]
        try:
            pwd.getpwuid(uid)
            continue  # an account's: not ours to use
        except KeyError:
            pass
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as claim:
            try:
                claim.bind(f"\0layerpilot-sandbox-uid-{uid}".encode())
            except OSError:
                continue
            yield uid
            return
    raise RuntimeError(f"all {len(RUN_UIDS)} sandbox uids are in use")


def hand_over(work: str, uid: int) -> None:
    """Let `uid` reach and write its working directory (the directory above: search only)."""
    os.chown(work, uid, uid)
    os.chmod(os.path.dirname(work), 0o711)


def searchable_by_others(path: str) -> bool:
    """Whether a uid of no group can reach `path`: every directory on the way is o+x."""
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        if path == os.path.dirname(path):
            return True
        path = os.path.dirname(path)


def runs_as(pid: int | str, uid: int) -> bool:
    """Whether process `pid` is alive (not a zombie) and has `uid` among its uids."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            status = handle.read()
    except OSError:
        return False
    state, uids = STATE.search(status), UIDS.search(status)
    return bool(state and uids and state[1] not in (b"Z", b"X") and str(uid).encode() in uids.groups())


def pids_running_as(uid: int) -> set[int]:
    return {int(e.name) for e in os.scandir("/proc") if e.name.isdigit() and runs_as(e.name, uid)}


def send(pid: int, uid: int, signum: int) -> None:
    """Signal `pid` only while it still runs as `uid` (through a pidfd: a recycled pid is not hit)."""
    try:
        handle = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if runs_as(pid, uid):
            signal.pidfd_send_signal(handle, signum)
    except OSError:
        pass
    finally:
        os.close(handle)


def sweep(uid: int, patience: float = 5.0) -> set[int]:
    """Kill every process still running as `uid`: what escaped the process group (`setsid`, a
    double fork). Each is stopped first, so that a fork loop cannot outrun the kill. Returns the
    processes still there after `patience` seconds (none, unless one cannot be killed)."""
    stopped: set[int] = set()
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        pids = pids_running_as(uid)
        if not pids:
            return set()
        new = pids - stopped
        for pid in new or pids:
            send(pid, uid, signal.SIGSTOP if new else signal.SIGKILL)
        stopped |= new
        if not new:
            time.sleep(0.005)
    return pids_running_as(uid)


if __name__ == "__main__":
    main()
