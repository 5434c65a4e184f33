"""Build `builtin:code`: small function-writing problems with tests, reproducibly from a seed.

Each problem comes from a family (add a constant, count a character, sum the multiples of k, …)
with its parameters drawn from the seed, so the set is procedurally varied: the same family with
other constants is another problem. Every problem carries a reference solution (its `answer`), and the
build checks that the solution passes the problem's tests before writing anything. The evaluation
problems are parameter draws that no training problem has (checked by prompt).

Run: `.venv/bin/python tools/build_code_tasks.py` (writes service/assets/code/{train,eval}.jsonl).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parents[1] / "service" / "assets" / "code"
SEED = 20261203
TRAIN, EVAL = 240, 64
ASK = "Reply with the function in a ```python block."

Problem = dict[str, str]


def _problem(name: str, signature: str, task: str, solution: str, cases: list[tuple[str, object]]) -> Problem:
    tests = "\n".join(f"assert {name}({args}) == {expected!r}" for args, expected in cases)
    return {
        "prompt": f"Write a Python function `{name}{signature}` that {task}. {ASK}",
        "tests": tests + "\n",
        "answer": solution,  # a reference solution: the build checks it passes the tests
        "family": name,
    }


def add_constant(rng: random.Random) -> Problem:
    k = rng.randint(2, 99)
    xs = rng.sample(range(-50, 100), 4)
    return _problem(
        "add_constant",
        "(x)",
        f"returns x plus {k}",
        f"def add_constant(x):\n    return x + {k}\n",
        [(str(x), x + k) for x in xs],
    )


def multiply(rng: random.Random) -> Problem:
    k = rng.randint(2, 30)
    xs = rng.sample(range(-20, 40), 4)
    return _problem(
        "multiply",
        "(x)",
        f"returns x times {k}",
        f"def multiply(x):\n    return x * {k}\n",
        [(str(x), x * k) for x in xs],
    )


def count_char(rng: random.Random) -> Problem:
    c = rng.choice("abcdefghijklmnopqrstuvwxyz")
    words = [
        "banana",
        "letter",
        "street",
        "initial",
        "lantern",
        "tortoise",
        "reason",
        "salt",
        "quiz",
        "jumpy",
    ]
    picked = [*rng.sample(words, 3), c * rng.randint(1, 3) + "xy"]
    return _problem(
        "count_char",
        "(s)",
        f"returns how many times the letter '{c}' occurs in the string s",
        f"def count_char(s):\n    return s.count({c!r})\n",
        [(repr(w), w.count(c)) for w in picked],
    )


def sum_multiples(rng: random.Random) -> Problem:
    k = rng.randint(2, 12)
    lists = [[rng.randint(0, 30) for _ in range(rng.randint(3, 7))] for _ in range(4)]
    return _problem(
        "sum_multiples",
        "(xs)",
        f"returns the sum of the numbers in the list xs that are divisible by {k}",
        f"def sum_multiples(xs):\n    return sum(x for x in xs if x % {k} == 0)\n",
        [(repr(xs), sum(x for x in xs if x % k == 0)) for xs in lists],
    )


def count_greater(rng: random.Random) -> Problem:
    t = rng.randint(0, 40)
    lists = [[rng.randint(-5, 50) for _ in range(rng.randint(3, 7))] for _ in range(4)]
    return _problem(
        "count_greater",
        "(xs)",
        f"returns how many numbers in the list xs are greater than {t}",
        f"def count_greater(xs):\n    return sum(1 for x in xs if x > {t})\n",
        [(repr(xs), sum(1 for x in xs if x > t)) for xs in lists],
    )


def last_items(rng: random.Random) -> Problem:
    n = rng.randint(1, 8)
    lists = [[rng.randint(0, 9) for _ in range(rng.randint(n, n + 4))] for _ in range(4)]
    if rng.random() < 0.5:
        return _problem(
            "first_items",
            "(xs)",
            f"returns a list of the first {n} items of the list xs",
            f"def first_items(xs):\n    return xs[:{n}]\n",
            [(repr(xs), xs[:n]) for xs in lists],
        )
    return _problem(
        "last_items",
        "(xs)",
        f"returns a list of the last {n} items of the list xs",
        f"def last_items(xs):\n    return xs[-{n}:]\n",
        [(repr(xs), xs[-n:]) for xs in lists],
    )


def is_divisible(rng: random.Random) -> Problem:
    k = rng.randint(2, 30)
    xs = [*rng.sample(range(0, 200), 3), k * rng.randint(1, 9)]
    return _problem(
        "is_divisible",
        "(x)",
        f"returns True if x is divisible by {k} and False otherwise",
        f"def is_divisible(x):\n    return x % {k} == 0\n",
        [(str(x), x % k == 0) for x in xs],
    )


def repeat_text(rng: random.Random) -> Problem:
    k = rng.randint(2, 9)
    separator = rng.choice(["", "-", " ", ","])
    texts = rng.sample(["ab", "x", "hi", "no", "abc", "z9", "ok"], 4)
    joined = f"separated by {separator!r}" if separator else "with nothing between the copies"
    return _problem(
        "repeat_text",
        "(s)",
        f"returns {k} copies of the string s {joined}",
        f"def repeat_text(s):\n    return {separator!r}.join([s] * {k})\n",
        [(repr(s), separator.join([s] * k)) for s in texts],
    )


def clamp(rng: random.Random) -> Problem:
    low = rng.randint(-10, 10)
    high = low + rng.randint(1, 20)
    xs = [low - rng.randint(1, 9), high + rng.randint(1, 9), rng.randint(low, high), low]
    return _problem(
        "clamp",
        "(x)",
        f"returns x limited to the range from {low} to {high} (x itself when it lies in between)",
        f"def clamp(x):\n    return max({low}, min({high}, x))\n",
        [(str(x), max(low, min(high, x))) for x in xs],
    )


def spread(rng: random.Random) -> Problem:
    lists = [[rng.randint(-20, 50) for _ in range(rng.randint(2, 6))] for _ in range(4)]
    offset = rng.randint(0, 30)
    task = "returns the largest number in the non-empty list xs minus the smallest"
    body = "max(xs) - min(xs)"
    if offset:
        task += f", plus {offset}"
        body += f" + {offset}"
    return _problem(
        "spread",
        "(xs)",
        task,
        f"def spread(xs):\n    return {body}\n",
        [(repr(xs), max(xs) - min(xs) + offset) for xs in lists],
    )


FAMILIES: list[Callable[[random.Random], Problem]] = [
    add_constant,
    multiply,
    count_char,
    sum_multiples,
    count_greater,
    last_items,
    is_divisible,
    repeat_text,
    clamp,
    spread,
]


def code_problems(seed: int = SEED) -> tuple[list[Problem], list[Problem]]:
    """(training, evaluation) problems: the families in turn, parameters from the seed; evaluation
    problems are distinct from every training prompt and from each other."""
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(count: int) -> list[Problem]:
        out: list[Problem] = []
        for _ in range(100 * count):  # a family whose parameters are spent gives way to the others
            problem = rng.choice(FAMILIES)(rng)
            if problem["prompt"] not in seen:
                seen.add(problem["prompt"])
                out.append(problem)
            if len(out) == count:
                return out
        raise RuntimeError(f"the families hold fewer than {count} more distinct problems")

    evaluation = draw(EVAL)  # first, so that every family is in it before training spends the small ones
    return draw(TRAIN), evaluation


def check_solutions(problems: list[Problem]) -> None:
    """Every reference solution passes its problem's tests (plain exec: our own code)."""
    for problem in problems:
        scope: dict[str, object] = {}
        exec(problem["answer"] + problem["tests"], scope)  # the build's own reference code


def write_code(out: Path = CODE_DIR, seed: int = SEED) -> None:
    train, evaluation = code_problems(seed)
    check_solutions(train + evaluation)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("eval.jsonl", evaluation)):
        with (out / name).open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    print(f"wrote {len(train)} training and {len(evaluation)} evaluation problems to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    write_code(seed=parser.parse_args().seed)
