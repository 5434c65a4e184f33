"""code_tests: real subprocess sandboxing of completions, limits, network and file isolation."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from service.errors import InputError, LayerpilotError
from service.rewards import code as code_module
from service.rewards import sandbox_child
from service.rewards.code import extract_code, isolation
from tests.service.rewards.helpers import ADD, ADD_TESTS, chat, received, reward

# ---------------------------------------------------------------------------------------------
# code_tests


def test_code_tests_pass_and_fail() -> None:
    func = reward("code_tests")
    wrong = ADD.replace("a + b", "a - b")
    assert func([ADD, wrong, chat(ADD)], tests=[ADD_TESTS] * 3) == [1.0, 0.0, 1.0]


def test_code_tests_takes_the_last_fenced_block() -> None:
    text = f"First try:\n```python\n{ADD.replace('+', '*')}```\nFixed:\n```python\n{ADD}```\nDone."
    assert extract_code(text) == ADD
    assert extract_code(f"```\n{ADD}```") == ADD
    assert extract_code(f"```python\n{ADD}") == ADD  # cut off at max length
    assert reward("code_tests")([text], tests=[ADD_TESTS]) == [1.0]


def test_code_tests_accepts_a_list_of_asserts_and_a_custom_column() -> None:
    func = reward("code_tests", tests_field="test_list")
    assert func([ADD], test_list=[["assert add(1, 1) == 2", "assert add(0, 0) == 0"]]) == [1.0]
    with pytest.raises(InputError, match="test_list"):
        func([ADD], tests=[ADD_TESTS])


def test_code_tests_exiting_early_does_not_score() -> None:
    func = reward("code_tests")
    cheats = ["import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit"]
    assert func(cheats, tests=["assert False"] * 3) == [0.0, 0.0, 0.0]


def test_code_tests_cannot_read_the_tests_from_disk() -> None:
    peek = "import glob\nassert not glob.glob('../*.json') and not glob.glob('*.json')\n"
    assert reward("code_tests")([peek], tests=["assert True"]) == [1.0]


def test_code_tests_infinite_loop_is_killed_on_time() -> None:
    func = reward("code_tests", timeout=1.0)
    started = time.monotonic()
    assert func(["while True:\n    pass"], tests=[""]) == [0.0]
    assert time.monotonic() - started < 1.0 + 2.0


def _live_processes_named(name: str) -> list[str]:
    """Pids of running (not zombie) processes whose kernel name is `name`."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                state = (comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(comm.parent.name)
        except OSError:
            continue
    return found


def test_code_tests_children_of_a_hung_run_are_killed_too() -> None:
    name = f"lp{uuid.uuid4().hex[:10]}"
    code = textwrap.dedent(
        f"""
        import ctypes, os, time
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)  # PR_SET_NAME
            while True:
                time.sleep(0.1)
        time.sleep(30)
        """
    )
    assert reward("code_tests", timeout=1.0)([code], tests=[""]) == [0.0]
    deadline = time.monotonic() + 3.0
    while _live_processes_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_processes_named(name) == []


@pytest.mark.parametrize(
    "crash",
    [
        "import os\nos.abort()",
        "import ctypes\nctypes.string_at(0)",
        "import faulthandler\nfaulthandler._sigsegv()",
    ],
)
def test_code_tests_crash_scores_zero(crash: str) -> None:
    assert reward("code_tests")([crash], tests=["assert True"]) == [0.0]


def test_code_tests_memory_bomb_hits_the_limit() -> None:
    bombs = ["data = bytearray(4 * 1024**3)", "data = [0] * (600 * 1024**2)"]
    assert reward("code_tests", memory_mb=256)(bombs, tests=["assert True"] * 2) == [0.0, 0.0]


def test_code_tests_cannot_write_outside_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    inside = "import os, shutil, tempfile\nopen('own.txt', 'w').write('ok')\nos.mkdir('d')\n"
    inside += "open('d/f', 'w').close()\nshutil.rmtree('d')\ntempfile.mkstemp()\n"
    outside = f"open({str(target)!r}, 'w').write('x')"
    remove = f"import os\nos.remove({str(tmp_path / 'keep.txt')!r})"
    (tmp_path / "keep.txt").write_text("keep")
    scores = reward("code_tests")(
        [inside, outside, remove], tests=["assert open('own.txt').read() == 'ok'", "", ""]
    )
    assert scores == [1.0, 0.0, 0.0]
    assert not target.exists()
    assert (tmp_path / "keep.txt").read_text() == "keep"


def test_code_tests_cannot_read_the_trainers_proc_files(caplog: pytest.LogCaptureFixture) -> None:
    """The trainer's environment holds tokens; a trainer that is not root shares its uid with the child."""
    caplog.set_level(logging.DEBUG, logger="service.rewards.code")
    peeks = [
        "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())",
        "import os\nos.symlink(f'/proc/{os.getppid()}/maps', 'maps')\nprint(open('maps').read())",
    ]
    assert reward("code_tests")(peeks, tests=["", ""]) == [0.0, 0.0]
    assert caplog.text.count("reading another process's files is not allowed") == 2
    own = "import os\nassert open('/proc/self/status').read() and open(f'/proc/{os.getpid()}/stat').read()"
    assert reward("code_tests")([own], tests=[""]) == [1.0]


def test_code_tests_cannot_start_programs_or_signal_the_trainer() -> None:
    codes = [
        "import subprocess\nsubprocess.run(['true'], check=True)",
        "import os\nassert os.system('true') == 0",
        "import os, signal\nos.kill(os.getppid(), 0)",
    ]
    assert reward("code_tests")(codes, tests=[""] * 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("network_namespace", [True, False], ids=["namespace+hook", "hook-only"])
def test_code_tests_network_is_blocked(listener: socket.socket, *, network_namespace: bool) -> None:
    port = listener.getsockname()[1]
    attempts = [
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'TOKEN')",
        f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\ns.sendall(b'TOKEN')",
        "import socket\nudp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"udp.sendto(b'TOKEN', ('127.0.0.1', {port}))",
        f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
    ]
    func = reward("code_tests", network_namespace=network_namespace)
    assert func(attempts, tests=["assert True"] * len(attempts)) == [0.0] * len(attempts)
    assert received(listener) == []


def _unshare_works() -> bool:
    probe = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "sys.exit(0 if libc.unshare(0x10000000 | 0x40000000) == 0 or libc.unshare(0x40000000) == 0 else 1)"
    )
    return subprocess.run([sys.executable, "-I", "-c", probe], check=False, timeout=30).returncode == 0


RAW_CONNECT = """
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", {port}) + bytes([127, 0, 0, 1]) + bytes(8)
assert libc.connect(fd, addr, len(addr)) == 0, ctypes.get_errno()
assert libc.write(fd, b"TOKEN", 5) == 5
"""


@pytest.mark.skipif(not _unshare_works(), reason="this machine refuses network namespaces")
def test_network_namespace_stops_raw_syscalls_past_the_hook(listener: socket.socket) -> None:
    """ctypes goes past the audit hook; the network namespace is what stops it here."""
    port = listener.getsockname()[1]
    code = RAW_CONNECT.format(port=port)
    assert reward("code_tests")([code], tests=[""]) == [0.0]
    assert received(listener) == []


def test_code_tests_runs_completions_concurrently() -> None:
    func = reward("code_tests", timeout=1.0, max_workers=8)
    started = time.monotonic()
    assert func(["import time\ntime.sleep(60)"] * 8, tests=[""] * 8) == [0.0] * 8
    assert time.monotonic() - started < 8 * 1.0 / 2


# ---------------------------------------------------------------------------------------------
# isolation: bubblewrap or rlimits, and a uid of its own per run when the trainer is root


@pytest.fixture
def fresh_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what this process settled, so that the next reward settles (and logs) it again."""
    monkeypatch.setattr(code_module, "_settled", {})


def _use_isolation(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERPILOT_SANDBOX", kind)
    try:
        assert isolation() == kind
    except LayerpilotError as err:
        pytest.skip(str(err))


@pytest.mark.usefixtures("fresh_isolation")
def test_isolation_follows_layerpilot_sandbox_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.rewards.code")
    monkeypatch.setenv("LAYERPILOT_SANDBOX", "rlimits")
    reward("code_tests")
    reward("code_tests", timeout=2.0)
    assert isolation() == "rlimits"
    assert caplog.text.count("code_tests sandbox: rlimits (LAYERPILOT_SANDBOX=rlimits)") == 1
    monkeypatch.delenv("LAYERPILOT_SANDBOX")
    assert isolation() == ("bubblewrap" if shutil.which("bwrap") else "rlimits")
    assert caplog.text.count("code_tests sandbox:") == 2


@pytest.mark.usefixtures("fresh_isolation")
def test_layerpilot_sandbox_that_cannot_be_met_is_refused_when_the_reward_is_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAYERPILOT_SANDBOX", "docker")
    with pytest.raises(InputError, match="LAYERPILOT_SANDBOX: 'docker' is not auto, bubblewrap or rlimits"):
        reward("code_tests")
    monkeypatch.setenv("LAYERPILOT_SANDBOX", "bubblewrap")
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(LayerpilotError, match=r"apt-get install bubblewrap.*LAYERPILOT_SANDBOX=rlimits"):
        reward("code_tests")
    monkeypatch.setenv("LAYERPILOT_SANDBOX", "auto")
    assert isolation() == "rlimits"


def test_each_run_claims_a_uid_of_its_own() -> None:
    with sandbox_child.claim_uid() as first, sandbox_child.claim_uid() as second:
        assert first != second
        assert {first, second} <= set(sandbox_child.RUN_UIDS)
    with sandbox_child.claim_uid(switch=False) as none:
        assert none is None


UNPRIVILEGED = """
import os, decimal, encodings.idna, json.tool, xml.dom.minidom
assert os.getresuid()[0] in range(60100, 61100) and os.getgroups() == [], os.getresuid()
assert not os.access("/etc/shadow", os.R_OK)
assert "bücher".encode("idna") and decimal.Decimal("1.5") * 2 == 3
try:
    os.setuid(0)
except PermissionError:
    pass
else:
    raise AssertionError("became root again")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid switch is for a trainer running as root")
@pytest.mark.parametrize("kind", ["bubblewrap", "rlimits"])
def test_as_root_each_run_is_unprivileged_and_can_still_import(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with the interpreter under root's 0700 home (pyenv as root), imports keep working."""
    _use_isolation(kind, monkeypatch)
    assert reward("code_tests")([UNPRIVILEGED, ADD], tests=["", ADD_TESTS]) == [1.0, 1.0]
