"""Reward functions: real scoring, real subprocess sandboxing, real imports; no mocks."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.errors import SpecError
from service.rewards import (
    REGISTRY,
    RewardFunc,
    available_rewards,
    build_reward,
    build_rewards,
    completion_text,
    extract_code,
)
from service.spec import RewardSpec


def reward(name: str, **params: Any) -> RewardFunc:
    return build_reward(RewardSpec(name=name, params=params))


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------------------------------------
# completion_text


def test_completion_text_reads_both_shapes_and_typed_parts() -> None:
    assert completion_text("plain") == "plain"
    assert completion_text(chat("hello")) == "hello"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, "b"]}]) == "ab"
    assert completion_text([{"role": "assistant", "content": None}]) == ""


# ---------------------------------------------------------------------------------------------
# exact_answer


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("82", "82", 1.0),
        (" 82\n", "82", 1.0),
        ("Natalia sold 48 clips, then 24.\n#### 72", "72", 1.0),
        ("#### 71", "72", 0.0),
        ("so the answer is \\boxed{82}.", "82", 1.0),
        ("\\boxed{7} no wait \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),
        ("82 then junk 9", "82", 1.0),
        ("9 then 82", "82", 0.0),
        ("82.0", "82", 1.0),
        ("82", 82, 1.0),
        ("The total is 1,234 dollars", "1234", 1.0),
        ("1234", "1,234", 1.0),
        ("-5", "-5", 1.0),
        ("81", "82", 0.0),
        ("no number here", "82", 0.0),
        ("", "82", 0.0),
        ("#### Paris", "Paris", 1.0),
        ("#### Paris", "London", 0.0),
        ("82", "Explanation: 80 + 2 = 82\n#### 82", 1.0),
        ("82", None, 0.0),
    ],
)
def test_exact_answer(completion: str, answer: Any, expected: float) -> None:
    assert reward("exact_answer")([completion], answer=[answer]) == [expected]


def test_exact_answer_conversational_and_extra_kwargs_ignored() -> None:
    scores = reward("exact_answer")(
        [chat("82"), chat("83")],
        answer=["82", "82"],
        prompts=[[{"role": "user", "content": "37+45="}]] * 2,
        completion_ids=[[1], [2]],
        trainer_state=None,
        some_other_column=["x", "y"],
    )
    assert scores == [1.0, 0.0]


def test_exact_answer_without_answer_column_names_the_dataset_field() -> None:
    with pytest.raises(SpecError) as info:
        reward("exact_answer")(["82"], prompts=["37+45="])
    assert info.value.field == "dataset.answerField"


# ---------------------------------------------------------------------------------------------
# math_equivalence


def test_math_equivalence_scores_equivalent_forms() -> None:
    func = reward("math_equivalence")
    scores = func(
        ["The answer is $\\frac{1}{2}$", "0.5", "\\boxed{\\frac{1}{3}}", "garbage ### }{", chat("$0.5$"), ""],
        answer=["0.5", "\\frac{1}{2}", "0.5", "0.5", "1/2", "0.5"],
    )
    assert scores == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_math_equivalence_works_from_a_worker_thread() -> None:
    func = reward("math_equivalence")
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(func(["$\\frac{1}{2}$", "3"], answer=["0.5"] * 2)))
    worker.start()
    worker.join(timeout=60)
    assert result == [[1.0, 0.0]]


# ---------------------------------------------------------------------------------------------
# format


def test_format_default_is_r1_style() -> None:
    func = reward("format")
    r1 = "<think>\n37+45: 7+5=12, carry\n</think>\n<answer>82</answer>\n"
    assert func([r1, "82", chat(r1), "<answer>82</answer>"]) == [1.0, 0.0, 1.0, 0.0]


def test_format_custom_pattern() -> None:
    func = reward("format", pattern=r"-?\d+")
    assert func(["82", " 82 ", "82 apples", "-3"]) == [1.0, 1.0, 0.0, 1.0]


def test_format_invalid_regex_names_the_param() -> None:
    with pytest.raises(SpecError) as info:
        reward("format", pattern="(unclosed")
    assert info.value.field == "rewards[0].params.pattern"


# ---------------------------------------------------------------------------------------------
# code_tests

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


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
    with pytest.raises(SpecError, match="test_list"):
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


def test_code_tests_cannot_start_programs_or_signal_the_trainer() -> None:
    codes = [
        "import subprocess\nsubprocess.run(['true'], check=True)",
        "import os\nassert os.system('true') == 0",
        "import os, signal\nos.kill(os.getppid(), 0)",
    ]
    assert reward("code_tests")(codes, tests=[""] * 3) == [0.0, 0.0, 0.0]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


def _connections(server: socket.socket) -> list[bytes]:
    """Whatever reached the listener (the child has exited, so anything sent is queued by now)."""
    received = []
    while select.select([server], [], [], 0.3)[0]:
        conn, _ = server.accept()
        conn.settimeout(0.5)
        try:
            received.append(conn.recv(100))
        except OSError:
            received.append(b"")
        conn.close()
    return received


@pytest.mark.parametrize("network_namespace", [True, False], ids=["namespace+hook", "hook-only"])
def test_code_tests_network_is_blocked(listener: socket.socket, network_namespace: bool) -> None:
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
    assert _connections(listener) == []


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
    assert _connections(listener) == []


def test_code_tests_runs_completions_concurrently() -> None:
    func = reward("code_tests", timeout=1.0, max_workers=8)
    started = time.monotonic()
    assert func(["import time\ntime.sleep(60)"] * 8, tests=[""] * 8) == [0.0] * 8
    assert time.monotonic() - started < 8 * 1.0 / 2


# ---------------------------------------------------------------------------------------------
# registry


def test_every_registered_reward_builds_with_defaults_and_is_named() -> None:
    descriptions = available_rewards()
    assert set(descriptions) == set(REGISTRY) == {"exact_answer", "math_equivalence", "format", "code_tests"}
    for name, description in descriptions.items():
        assert description and "\n" not in description
        assert build_reward(RewardSpec(name=name)).__name__ == name


def test_unknown_reward_suggests_a_close_match() -> None:
    with pytest.raises(SpecError) as info:
        build_reward(RewardSpec(name="exact_answr"), index=2)
    assert info.value.field == "rewards[2].name"
    assert "exact_answer" in (info.value.fix or "")
    assert "module:function" in (info.value.fix or "")


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("format", {"patern": "x"}, "rewards[0].params.patern"),
        ("exact_answer", {"strict": True}, "rewards[0].params.strict"),
        ("code_tests", {"timeout": "5"}, "rewards[0].params.timeout"),
        ("code_tests", {"memory_mb": 1.5}, "rewards[0].params.memory_mb"),
        ("code_tests", {"max_workers": True}, "rewards[0].params.max_workers"),
        ("code_tests", {"timeout": 0}, "rewards[0].params.timeout"),
        ("math_equivalence", {"timeout": 0}, "rewards[0].params.timeout"),
    ],
)
def test_bad_params_name_the_key(name: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        reward(name, **params)
    assert info.value.field == field


def test_misspelt_param_suggests_the_right_one() -> None:
    with pytest.raises(SpecError, match="did you mean 'pattern'"):
        reward("format", patern="x")


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"my_rewards_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            def length_bonus(completions, scale=1.0, **kwargs):
                return [scale * len(c) for c in completions]

            def strict(completions):
                return [0.0 for _ in completions]

            NOT_CALLABLE = 3

            class Scorers:
                @staticmethod
                def ones(completions, **kwargs):
                    return [1.0] * len(completions)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_custom_reward_is_imported_and_params_bound(custom_module: str) -> None:
    plain = build_reward(RewardSpec(name=f"{custom_module}:length_bonus"))
    assert plain(["ab", "abcd"], answer=["x", "y"]) == [2.0, 4.0]
    assert plain.__name__ == "length_bonus"
    scaled = build_reward(RewardSpec(name=f"{custom_module}:length_bonus", params={"scale": 0.5}))
    assert scaled(["ab", "abcd"], prompts=["p", "q"]) == [1.0, 2.0]
    assert scaled.__name__ == "length_bonus"
    nested = build_reward(RewardSpec(name=f"{custom_module}:Scorers.ones"))
    assert nested(["a"]) == [1.0]


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("no_such_module_xyz:f", "cannot import"),
        ("{m}:missing", "no attribute"),
        ("{m}:NOT_CALLABLE", "not a function"),
        ("{m}:strict", "**kwargs"),
        (":f", "not module:function"),
    ],
)
def test_bad_custom_reward_names_the_field(custom_module: str, target: str, problem: str) -> None:
    specs = [RewardSpec(name="format"), RewardSpec(name=target.format(m=custom_module))]
    with pytest.raises(SpecError) as info:
        build_rewards(specs)
    assert info.value.field == "rewards[1].name"
    assert problem in info.value.problem
    assert info.value.fix


def test_build_rewards_keeps_order_and_weights() -> None:
    specs = [
        RewardSpec(name="format", weight=0.25),
        RewardSpec(name="exact_answer", weight=2.0),
        RewardSpec(name="math_equivalence"),
    ]
    funcs, weights = build_rewards(specs)
    assert [f.__name__ for f in funcs] == ["format", "exact_answer", "math_equivalence"]
    assert weights == [0.25, 2.0, 1.0]


# ---------------------------------------------------------------------------------------------
# TRL's calling shape


def test_rewards_accept_trls_calling_convention() -> None:
    """`GRPOTrainer._calculate_rewards` calls every reward with keywords only, plus every column."""
    logged: list[tuple[Any, ...]] = []
    funcs, _ = build_rewards([RewardSpec(name=name) for name in REGISTRY])
    prompts = [[{"role": "user", "content": "Write add; what is 37+45?"}]] * 2
    completions = [
        chat(f"<think>\n```python\n{ADD}```\n</think>\n<answer>\\boxed{{82}}</answer>"),
        chat("83"),
    ]
    for func in funcs:
        scores = func(
            prompts=prompts,
            completions=completions,
            completion_ids=[[1, 2], [3]],
            answer=["82", "82"],
            tests=[ADD_TESTS, ADD_TESTS],
            trainer_state=None,
            log_extra=lambda *args: logged.append(args),
            log_metric=lambda *args: logged.append(args),
        )
        assert len(scores) == 2
        assert all(isinstance(s, float) for s in scores)
        assert scores[0] == 1.0 and scores[1] == 0.0, func.__name__


def test_rewards_of_an_empty_batch_are_empty() -> None:
    for name in REGISTRY:
        assert reward(name)([], answer=[], tests=[]) == []
