"""Reward functions in TRL's shape, and the registry that builds them from the spec.

TRL's `GRPOTrainer` calls every reward as `fn(prompts=..., completions=..., completion_ids=...,
trainer_state=..., log_extra=..., log_metric=..., **dataset_columns)` and expects one float (or
None) per completion. So every reward here:

* accepts and ignores keyword arguments it does not use (TRL passes every dataset column),
* reads completions of both shapes, plain strings and conversational message lists
  (`completion_text`),
* has `__name__` equal to its registry name, because TRL logs each reward under `fn.__name__`.

The spec names rewards (`rewards: [{name: exact_answer}]`); `build_rewards` turns those names and
their `params` into callables and weights, and rejects a bad name or parameter with a `SpecError`
that names the field, before any model is loaded. `module:function` names a reward of your own.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import inspect
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
import threading
import types
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from service.errors import SpecError
from service.spec import RewardSpec

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float | None]]
RewardFactory = Callable[..., RewardFunc]


class _ParamError(Exception):
    """A factory's complaint about one parameter; `build_reward` adds the `rewards[i]` prefix."""

    def __init__(self, key: str, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem
        self.fix = fix


def completion_text(completion: Any) -> str:
    """Plain text of one completion, whether plain or conversational.

    Conversational completions are message lists; their contents are joined in order.

    >>> completion_text("82")
    '82'
    >>> completion_text([{"role": "assistant", "content": "82"}])
    '82'
    >>> completion_text({"role": "assistant", "content": "x"})
    'x'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, list | tuple):
        return "".join(completion_text(part) for part in completion)
    return "" if completion is None else str(completion)


def _content_text(content: Any) -> str:
    """A message's `content`: a string, or a list of typed parts (`{"type": "text", "text": ...}`)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _named(func: RewardFunc, name: str) -> RewardFunc:
    """Give a built reward its registry name: TRL logs each reward under `__name__`."""
    func.__name__ = name
    func.__qualname__ = name
    return func


def _column(kwargs: dict[str, Any], key: str, n: int, reward: str, field: str, fix: str) -> list[Any]:
    """The dataset column `key`, checked to be present and one value per completion."""
    if key not in kwargs or kwargs[key] is None:
        raise SpecError(field, f"{reward} needs a '{key}' column but the dataset rows have none", fix)
    values = kwargs[key]
    if isinstance(values, str) or not isinstance(values, list | tuple) or len(values) != n:
        raise SpecError(field, f"{reward} got a '{key}' column that is not one value per completion", fix)
    return list(values)


_ANSWER_FIX = "set dataset.answerField to the column holding the reference answer"

# ----------------------------------------------------------------------------------------------
# exact_answer

# Thousands groups only where they are real (`1,234`), so that `1,2,3` is not read as 123.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_GSM8K_MARK = "####"


def _last_boxed(text: str) -> str | None:
    r"""Contents of the last `\boxed{...}`, with nested braces (`\boxed{\frac{1}{2}}`)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: truncated completion


def _as_number(text: str) -> Decimal | None:
    """`text` as a number if it is exactly one (`82`, `82.0`, `1,234`, `$5`), else None."""
    cleaned = text.strip().strip("$").strip().rstrip(".")
    if not _NUMBER.fullmatch(cleaned):
        return None
    try:
        return Decimal(cleaned.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None


def _extract_answer(text: str) -> str | None:
    """The completion's answer: after `####`, else the last `\\boxed{}`, else the first number."""
    if _GSM8K_MARK in text:
        tail = text.rsplit(_GSM8K_MARK, 1)[1]
        match = _NUMBER.search(tail)
        return match.group(0) if match else tail.strip() or None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    match = _NUMBER.search(text)
    return match.group(0) if match else None


def _reference_answer(ref: Any) -> str:
    """The reference, unwrapped from a GSM8K-style `... #### 72` or a `\\boxed{}` if it has one."""
    text = str(ref)
    if _GSM8K_MARK in text:
        return text.rsplit(_GSM8K_MARK, 1)[1].strip()
    boxed = _last_boxed(text)
    return (boxed if boxed is not None else text).strip()


def _answers_match(found: str | None, ref: Any) -> bool:
    if found is None or ref is None:
        return False
    reference = _reference_answer(ref)
    ref_number = _as_number(reference)
    if ref_number is not None:
        found_number = _as_number(found)
        return found_number is not None and found_number == ref_number
    return found.strip() == reference


def exact_answer(completions: list[Any], **kwargs: Any) -> list[float | None]:
    r"""1.0 when the completion's answer equals the reference `answer` column, else 0.0.

    The completion's answer is the number after `####` (GSM8K), else the last `\boxed{...}`,
    else the first number in the text: a model answering `37+45=` with `82 and then 9` is
    scored on 82, not on whatever it rambles afterwards. Numbers compare as numbers (`82.0`
    equals `82`, `1,234` equals `1234`); other references compare as stripped strings.

    >>> exact_answer(["82", "82.0", "#### 82", "\\boxed{82}", "81", "8 2"], answer=["82"] * 6)
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    answers = _column(kwargs, "answer", len(completions), "exact_answer", "dataset.answerField", _ANSWER_FIX)
    return [
        1.0 if _answers_match(_extract_answer(completion_text(c)), ref) else 0.0
        for c, ref in zip(completions, answers, strict=True)
    ]


def _exact_answer_factory() -> RewardFunc:
    """1 if the answer (after ####, in the last \\boxed{}, else the first number) equals `answer`."""
    return exact_answer


# ----------------------------------------------------------------------------------------------
# math_equivalence


def _math_equivalence_factory(timeout: int = 5) -> RewardFunc:
    """1 if the completion is mathematically equivalent to `answer` (math-verify; 1/2 == 0.5)."""
    if timeout < 1:
        raise _ParamError("timeout", "must be at least 1 second", "use e.g. timeout: 5")

    def math_equivalence(completions: list[Any], **kwargs: Any) -> list[float | None]:
        """Score with math-verify's `parse` and `verify`; a parse failure scores 0.0, never raises.

        math-verify enforces its timeouts with `signal.alarm`, which works only in the main
        thread; anywhere else it raises. So in other threads (an async trainer, an evaluation
        pool) the timeouts are switched off: the comparison then cannot be interrupted.
        """
        answers = _column(
            kwargs, "answer", len(completions), "math_equivalence", "dataset.answerField", _ANSWER_FIX
        )
        from math_verify import parse, verify  # deferred: importing it costs about half a second

        seconds: int | None = timeout if threading.current_thread() is threading.main_thread() else None
        scores: list[float | None] = []
        for completion, ref in zip(completions, answers, strict=True):
            try:
                gold = parse(str(ref), parsing_timeout=seconds)
                pred = parse(completion_text(completion), parsing_timeout=seconds)
                ok = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=seconds))
            except Exception:  # math-verify raises on odd input despite raise_on_error=False
                logger.debug("math_equivalence: could not compare", exc_info=True)
                ok = False
            scores.append(1.0 if ok else 0.0)
        return scores

    return math_equivalence


# ----------------------------------------------------------------------------------------------
# format

R1_FORMAT = r"<think>.*?</think>\s*<answer>.*?</answer>"


def _format_factory(pattern: str = R1_FORMAT) -> RewardFunc:
    """1 if the whole completion matches `pattern` (default <think>…</think><answer>…</answer>)."""
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as err:
        raise _ParamError("pattern", f"is not a valid regular expression ({err})", "fix the regex") from None

    def format(completions: list[Any], **_: Any) -> list[float | None]:
        """`re.fullmatch` with DOTALL on the stripped completion."""
        return [1.0 if compiled.fullmatch(completion_text(c).strip()) else 0.0 for c in completions]

    return format


# ----------------------------------------------------------------------------------------------
# code_tests

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


# The bootstrap runs in the child interpreter. It reads the nonce from stdin and the code from a
# payload file it then deletes (so the code cannot read the tests), lowers its limits, tries to
# leave the network namespace, installs the audit hook, and only then executes the untrusted code.
# Success is exit 0 AND the nonce on stdout, so `os._exit(0)` or `sys.exit(0)` in the completion
# (skipping the tests) does not score.
_BOOTSTRAP = r"""
import ctypes, json, os, resource, socket, sys, traceback

CLONE_NEWUSER, CLONE_NEWNET, PR_SET_DUMPABLE = 0x10000000, 0x40000000, 4
AF_UNIX = socket.AF_UNIX
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BLOCKED = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname",
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
    "os.forkpty", "pty.spawn",
})
# event -> ((path argument, its dir_fd argument or None), ...)
PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.truncate": ((0, None),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "shutil.rmtree": ((0, 1),), "os.setxattr": ((0, None),), "os.removexattr": ((0, None),),
    "os.chflags": ((0, None),), "os.lchflags": ((0, None),),
}
DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})


def set_limits(cfg):
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


def isolate(want_netns):
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


def make_guard(root):
    inside_prefix = root + os.sep
    own_pid, own_pgid = os.getpid(), os.getpgid(0)

    def resolve(path, dir_fd):
        if isinstance(path, int):
            return os.readlink("/proc/self/fd/%d" % path)
        path = os.fsdecode(os.fspath(path))
        if path in DEVICES:
            return root
        if dir_fd not in (None, -1) and not os.path.isabs(path):
            path = os.path.join(os.readlink("/proc/self/fd/%d" % dir_fd), path)
        return os.path.realpath(path)

    def inside(path, dir_fd=None):
        try:
            real = resolve(path, dir_fd)
        except Exception:
            return False
        return real == root or real.startswith(inside_prefix)

    def deny(event):
        raise PermissionError("sandbox: %s is not allowed here" % event)

    def hook(event, args):
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
        elif event == "os.killpg":
            if args[0] not in (0, own_pgid):
                deny("signalling other processes")

    return hook


def main():
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


main()
"""

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
            bootstrap = root / "bootstrap.py"
            bootstrap.write_text(_BOOTSTRAP)
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
                    [sys.executable, "-I", "-B", "-X", "utf8", str(bootstrap), str(payload)],
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


def _code_tests_factory(
    tests_field: str = "tests",
    timeout: float = 5.0,
    memory_mb: int = 512,
    max_workers: int | None = None,
    network_namespace: bool = True,
) -> RewardFunc:
    """1 if the completion's Python code passes the `tests` column's asserts (sandboxed subprocess)."""
    if timeout <= 0:
        raise _ParamError("timeout", "must be positive", "use e.g. timeout: 5")
    if memory_mb < 32:
        raise _ParamError("memory_mb", "must be at least 32", "use e.g. memory_mb: 512")
    if max_workers is not None and max_workers < 1:
        raise _ParamError("max_workers", "must be at least 1", "leave it out for min(4, cpu count)")
    workers = max_workers or min(4, os.cpu_count() or 1)

    def code_tests(completions: list[Any], **kwargs: Any) -> list[float | None]:
        """Score = 1.0 if the completion's code and then the row's tests run to exit 0, else 0.0.

        Each completion runs in a fresh `python -I` subprocess, several at a time (`max_workers`).
        This is a best-effort sandbox against accidents, NOT a security boundary against hostile
        code; train in a container without network access and with nothing precious mounted.

        What it does: a wall-clock `timeout` after which the child's whole process group is
        killed; RLIMIT_AS (`memory_mb`), RLIMIT_CPU, RLIMIT_FSIZE and RLIMIT_NOFILE limits; no
        core dumps; a private working directory (also HOME and TMPDIR) removed afterwards; a
        minimal environment; the tests are deleted from disk before the code runs; success needs
        a per-run nonce that only the bootstrap prints after the tests, so exiting early does not
        score. Network: the child tries `unshare(CLONE_NEWUSER | CLONE_NEWNET)`, then
        `unshare(CLONE_NEWNET)`, which leaves it only a loopback device that is down; either can
        be refused (containers' seccomp profiles, no user namespaces), so it ALWAYS also installs
        an audit hook (which Python code cannot remove) that refuses non-Unix sockets, connect,
        bind, send and name resolution, starting programs (`subprocess`, `os.system`, `exec*`,
        `posix_spawn`), signalling other processes, and writing or deleting files outside the
        working directory.

        What it does not do: audit hooks only see Python-level calls, so `ctypes` or a native
        extension can make raw system calls past them (and, without the namespace, reach the
        network); reading files the training user can read is allowed; a grandchild that calls
        `setsid` escapes the group kill (the CPU limit still ends a busy one); `os.open` with
        `dir_fd` is not checked.
        """
        column = _column(
            kwargs,
            tests_field,
            len(completions),
            "code_tests",
            "dataset",
            f"add a column of Python asserts named '{tests_field}', or set the reward's tests_field",
        )
        jobs = [
            (extract_code(completion_text(c)), _as_source(t))
            for c, t in zip(completions, column, strict=True)
        ]
        if not jobs:
            return []

        def run(job: tuple[str, str]) -> float:
            return run_sandboxed(
                job[0], job[1], timeout=timeout, memory_mb=memory_mb, network_namespace=network_namespace
            )

        with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="code_tests") as pool:
            return list(pool.map(run, jobs))

    return code_tests


# ----------------------------------------------------------------------------------------------
# registry

REGISTRY: dict[str, RewardFactory] = {
    "exact_answer": _exact_answer_factory,
    "math_equivalence": _math_equivalence_factory,
    "format": _format_factory,
    "code_tests": _code_tests_factory,
}
"""Registered rewards: name -> factory taking the spec's `params` as keyword arguments.
The first line of each factory's docstring is its description in `layerpilot rewards`."""


def available_rewards() -> dict[str, str]:
    """Registered reward names with a one-line description each (for `layerpilot rewards`).

    >>> sorted(available_rewards())
    ['code_tests', 'exact_answer', 'format', 'math_equivalence']
    """
    return {name: (inspect.getdoc(factory) or name).splitlines()[0] for name, factory in REGISTRY.items()}


def _matches_type(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a factory's annotation (bool, int, float, str and their unions)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _check_params(name: str, factory: RewardFactory, params: dict[str, Any], index: int) -> None:
    signature = inspect.signature(factory)
    accepted = list(signature.parameters)
    hints = typing.get_type_hints(factory)
    for key, value in params.items():
        field = f"rewards[{index}].params.{key}"
        if key not in signature.parameters:
            fix = f"{name} accepts {', '.join(accepted)}" if accepted else f"{name} takes no params"
            close = difflib.get_close_matches(key, accepted, n=1)
            if close:
                fix = f"did you mean '{close[0]}'? {fix}"
            raise SpecError(field, f"unexpected parameter for {name}", fix)
        if key in hints and not _matches_type(value, hints[key]):
            raise SpecError(
                field,
                f"must be {_type_name(hints[key])}, got {type(value).__name__} {value!r}",
                f"give a {_type_name(hints[key])}",
            )


def _build_custom(spec: RewardSpec, index: int) -> RewardFunc:
    """`module:function` (or `module:Class.attr`): imported as-is, `params` bound as keywords."""
    field = f"rewards[{index}].name"
    module_name, _, attr_path = spec.name.partition(":")
    fix = "write module:function with an importable module (on PYTHONPATH) and a callable in it"
    if not module_name or not attr_path:
        raise SpecError(field, f"'{spec.name}' is not module:function", fix)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:
        raise SpecError(
            field, f"cannot import module '{module_name}' ({type(err).__name__}: {err})", fix
        ) from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SpecError(field, f"module '{module_name}' has no attribute '{attr_path}'", fix) from None
    if not callable(target):
        raise SpecError(field, f"'{spec.name}' is a {type(target).__name__}, not a function", fix)
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: trust them
        parameters = None
    if parameters is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise SpecError(
            field,
            f"'{spec.name}' does not accept **kwargs",
            "define it as def f(completions, **kwargs): TRL passes every dataset column",
        )
    if not spec.params:
        return typing.cast(RewardFunc, target)
    bound = functools.partial(target, **spec.params)
    return typing.cast(RewardFunc, functools.update_wrapper(bound, target))


def build_reward(spec: RewardSpec, index: int = 0) -> RewardFunc:
    """The reward callable for one spec entry; `index` is its position, for error messages.

    A registered name calls its factory with `params`; `module:function` imports your own.
    """
    factory = REGISTRY.get(spec.name)
    if factory is None:
        if ":" in spec.name:
            return _build_custom(spec, index)
        names = ", ".join(REGISTRY)
        fix = f"use one of {names} or module:function"
        close = difflib.get_close_matches(spec.name, list(REGISTRY), n=1)
        if close:
            fix = f"did you mean '{close[0]}'? {fix}"
        raise SpecError(f"rewards[{index}].name", f"unknown reward '{spec.name}'", fix)
    _check_params(spec.name, factory, spec.params, index)
    try:
        func = factory(**spec.params)
    except _ParamError as err:
        raise SpecError(f"rewards[{index}].params.{err.key}", err.problem, err.fix) from None
    return _named(func, spec.name)


def build_rewards(specs: list[RewardSpec]) -> tuple[list[RewardFunc], list[float]]:
    """Reward callables and their weights, in spec order (TRL's `reward_funcs`, `reward_weights`)."""
    return [build_reward(spec, i) for i, spec in enumerate(specs)], [spec.weight for spec in specs]
