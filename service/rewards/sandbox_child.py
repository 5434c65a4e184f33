"""The child program of the `code_tests` sandbox: run one completion's code, then its tests.

`service.rewards.code` starts this file as a script in a fresh `python -I` interpreter; it must
import nothing but the standard library (isolated mode puts neither layerpilot nor the project on
`sys.path`). It reads the nonce from stdin and the code from a payload file it then deletes (so
the code cannot read the tests), lowers its limits, tries to leave the network namespace, installs
the audit hook, and only then executes the untrusted code. Success is exit 0 AND the nonce on
stdout, so `os._exit(0)` or `sys.exit(0)` in the completion (skipping the tests) does not score.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

CLONE_NEWUSER, CLONE_NEWNET, PR_SET_DUMPABLE = 0x10000000, 0x40000000, 4
AF_UNIX = socket.AF_UNIX
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BLOCKED = frozenset(
    {
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname",
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
        "os.forkpty", "pty.spawn",
    }
)  # fmt: skip
# event -> ((path argument, its dir_fd argument or None), ...)
PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.truncate": ((0, None),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "shutil.rmtree": ((0, 1),), "os.setxattr": ((0, None),), "os.removexattr": ((0, None),),
    "os.chflags": ((0, None),), "os.lchflags": ((0, None),),
}  # fmt: skip
DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})


def set_limits(cfg: dict[str, Any]) -> None:
    for res, value in (
        (resource.RLIMIT_AS, cfg["memory_bytes"]),
        (resource.RLIMIT_CPU, cfg["cpu_seconds"]),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, cfg["file_bytes"]),
        (resource.RLIMIT_NOFILE, 256),
    ):
        try:
            hard = resource.getrlimit(res)[1]
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def isolate(want_netns: bool) -> bool:
    """No core dumps or ptrace; a private network namespace when the kernel allows one."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        if want_netns:
            for flags in (CLONE_NEWUSER | CLONE_NEWNET, CLONE_NEWNET):
                if libc.unshare(flags) == 0:
                    return True
    except Exception:
        pass
    return False


def make_guard(root: str) -> Callable[[str, tuple[Any, ...]], None]:
    """The audit hook: no network, no programs, no signals to others, no writes outside `root`."""
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
            if flags & WRITE_FLAGS and not isinstance(path, int) and not inside(path):
                deny("writing outside the working directory")
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


def main() -> None:
    nonce = sys.stdin.readline().strip().encode()
    with open(sys.argv[1]) as handle:
        cfg = json.load(handle)
    os.remove(sys.argv[1])
    sys.dont_write_bytecode = True
    set_limits(cfg)
    netns = isolate(cfg["network_namespace"])
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


if __name__ == "__main__":
    main()
