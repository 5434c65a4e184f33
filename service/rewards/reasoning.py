"""`reasoning_gym`: each completion scored by its reasoning-gym task's own `score_answer`.

The rows of a `reasoning-gym:` dataset say which generated item each prompt is
(`service.procedural`); the task's scorer reads the completion's answer against that item, so
partial credit, equivalent forms and multiple valid answers are judged the way the task defines.
"""

from __future__ import annotations

import re
from typing import Any

from service import procedural
from service.rewards.base import column, completion_text

_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)
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


def reasoning_gym(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """The reasoning-gym task's own score of the answer (tag <answer>…</answer>, else last line)."""
    n = len(completions)
    if not n:
        return []
    columns = {key: column(kwargs, key, n, "reasoning_gym", "rewards", _FIX) for key in _COLUMNS}
    scores: list[float | None] = []
    for i, completion in enumerate(completions):
        row = {key: values[i] for key, values in columns.items()}
        scores.append(procedural.score(row, extract_answer(completion_text(completion))))
    return scores
