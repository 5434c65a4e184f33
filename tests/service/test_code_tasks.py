"""`builtin:code`: the shipped function-writing problems are what their builder makes, every
reference solution passes its tests in the real sandboxed `code_tests` reward, and no evaluation
problem is a training problem."""

from __future__ import annotations

import json

from service.data import CODE_DIR, load_rows
from service.rewards.registry import build_rewards
from service.spec.loading import load_spec
from tools.build_code_tasks import code_problems


def test_the_shipped_problems_are_the_builders_and_evaluation_is_apart() -> None:
    train, evaluation = code_problems()
    for name, built in (("train.jsonl", train), ("eval.jsonl", evaluation)):
        shipped = [json.loads(line) for line in (CODE_DIR / name).read_text().splitlines()]
        assert shipped == built, f"{name} is stale: run tools/build_code_tasks.py"
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in evaluation}
    assert len({p["family"] for p in evaluation}) >= 8


def test_reference_solutions_pass_their_tests_in_the_sandbox_and_a_stub_does_not() -> None:
    spec = load_spec({"dataset": {"uri": "builtin:code"}})
    assert [r.name for r in spec.rewards] == ["code_tests"]  # the default reward for this data
    train, evaluation = load_rows(spec.prompts)
    rows = evaluation + train[:16]
    (reward,), _ = build_rewards(spec.rewards)
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
    prompts = [row["prompt"] for row in rows]
    solved = [f"Here it is:\n```python\n{row['answer']}```" for row in rows]
    assert reward(prompts=prompts, completions=solved, **columns) == [1.0] * len(rows)
    stubs = ["```python\ndef f(x):\n    return x\n```"] * len(rows)
    assert reward(prompts=prompts, completions=stubs, **columns) == [0.0] * len(rows)
