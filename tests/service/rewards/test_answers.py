"""Answer-comparing rewards (exact_answer, math_equivalence, format) and completion text."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from service.errors import InputError
from service.rewards.base import completion_text
from tests.service.rewards.helpers import chat, reward

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
    with pytest.raises(InputError) as info:
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
    with pytest.raises(InputError) as info:
        reward("format", pattern="(unclosed")
    assert info.value.field == "rewards[0].params.pattern"
