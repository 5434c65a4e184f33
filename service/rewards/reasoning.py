"""`reasoning_gym`: each completion scored by its reasoning-gym task's own `score_answer`.

The rows of a `reasoning-gym:` dataset say which generated item each prompt is
(`service.procedural`); the task's scorer reads the completion's answer against that item, so
partial credit, equivalent forms and multiple valid answers are judged the way the task defines.
"""

from __future__ import annotations

import re
from typing import Any

from service import procedural
from service.rewards.base import ParamError, column, completion_text

_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_COLUMNS = ("rg_task", "rg_params", "rg_seed", "rg_size", "rg_index")
_FIX = "use dataset.uri: reasoning-gym:<task>, whose rows say which item each prompt is"


def extract_answer(text: str) -> str | None:
    """The answer a completion gives: what its last `<answer>…</answer>` holds (reasoning-gym's
    convention, what instruct models asked to reason first should end with); without the tag, its
    last non-empty line. None for an empty completion.

    >>> extract_answer("3 + 4 makes 7.\\n<answer> 7 </answer>")
    '7'
    >>> extract_answer("I add them.\\n12\\n")
    '12'
    >>> extract_answer("  ") is None
    True
    """
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        return str(tagged[-1]).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


ANSWER_MODES = {
    "tag": "the last `<answer>…</answer>`, else the last non-empty line",
    "last-number": "the last number in the completion (for numeric tasks, when a model answers in a "
    "sentence such as `The answer is 8.`)",
}


def last_number(text: str) -> str | None:
    """The last number a completion writes, as written (sign, digits, thousands commas, decimals).

    >>> last_number("The letter a appears 10 times."), last_number("4 - 1 - 7 = -4"), last_number("none")
    ('10', '-4', None)
    """
    found = _NUMBER.findall(text)
    return str(found[-1]).rstrip(",") if found else None


class ReasoningGym:
    """The reasoning-gym task's own score (of <answer>…</answer>, else the last line; or the last number).

    `answer` says what is read from a completion: `tag` (the default, reasoning-gym's convention)
    or `last-number`.
    """

    def __init__(self, answer: str = "tag") -> None:
        if answer not in ANSWER_MODES:
            raise ParamError(
                "answer", f"'{answer}' is not a way to read the answer", f"use {' or '.join(ANSWER_MODES)}"
            )
        self.read = extract_answer if answer == "tag" else last_number
        self.__name__ = "reasoning_gym"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        if not n:
            return []
        columns = {key: column(kwargs, key, n, "reasoning_gym", "rewards", _FIX) for key in _COLUMNS}
        scores: list[float | None] = []
        for i, completion in enumerate(completions):
            row = {key: values[i] for key, values in columns.items()}
            scores.append(procedural.score(row, self.read(completion_text(completion))))
        return scores
