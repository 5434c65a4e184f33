"""What every reward shares: TRL's calling convention, completion text, dataset columns, params.

TRL's `GRPOTrainer` calls every reward as `fn(prompts=..., completions=..., completion_ids=...,
trainer_state=..., log_extra=..., log_metric=..., **dataset_columns)` and expects one float (or
None) per completion. So every reward here:

* accepts and ignores keyword arguments it does not use (TRL passes every dataset column),
* reads completions of both shapes, plain strings and conversational message lists
  (`completion_text`),
* has `__name__` equal to its registry name, because TRL logs each reward under `fn.__name__`.

Rewards with parameters are small callable classes (as TRL's own are), so they pickle into worker
processes; a bad parameter raises `ParamError`, which the registry turns into a `InputError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.errors import InputError

RewardFunc = Callable[..., list[float | None]]

ANSWER_FIX = "set dataset.answerField to the column holding the reference answer"


class ParamError(Exception):
    """A reward's complaint about one parameter; the registry adds the `rewards[i].params` prefix."""

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


def column(kwargs: dict[str, Any], key: str, n: int, reward: str, field: str, fix: str) -> list[Any]:
    """The dataset column `key`, checked to be present and one value per completion."""
    if key not in kwargs or kwargs[key] is None:
        raise InputError(field, f"{reward} needs a '{key}' column but the dataset rows have none", fix)
    values = kwargs[key]
    if isinstance(values, str) or not isinstance(values, list | tuple) or len(values) != n:
        raise InputError(field, f"{reward} got a '{key}' column that is not one value per completion", fix)
    return list(values)
