"""The reward registry: names in the spec become reward callables and weights.

The spec names rewards (`rewards: [{name: exact_answer}]`); `build_rewards` turns those names and
their `params` into callables and weights, and rejects a bad name or parameter with a `InputError`
that names the field, before any model is loaded. `module:function` names a reward of your own.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from typing import Any

from service.errors import InputError, first_line
from service.imports import import_named
from service.rewards.answers import Format, MathEquivalence, exact_answer
from service.rewards.base import ParamError, RewardFunc, completion_text
from service.rewards.code import CodeTests
from service.rewards.reasoning import ReasoningGym
from service.spec.models import RewardSpec

REGISTRY: dict[str, Any] = {
    "exact_answer": exact_answer,
    "math_equivalence": MathEquivalence,
    "format": Format,
    "code_tests": CodeTests,
    "reasoning_gym": ReasoningGym,
}
"""Registered rewards: a class whose constructor takes the spec's `params`, or a reward function
that takes none. The first line of each docstring is its description in `layerpilot rewards`."""


def available_rewards() -> dict[str, str]:
    """Registered reward names with a one-line description each (for `layerpilot rewards`).

    >>> sorted(available_rewards())
    ['code_tests', 'exact_answer', 'format', 'math_equivalence', 'reasoning_gym']
    """
    return {name: first_line(inspect.getdoc(kind) or name) for name, kind in REGISTRY.items()}


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


def _check_params(name: str, kind: Any, params: dict[str, Any], index: int) -> None:
    """Each param must be one the reward's constructor takes, of the type it is annotated with."""
    takes = inspect.isclass(kind)
    signature = inspect.signature(kind) if takes else None
    accepted = list(signature.parameters) if signature is not None else []
    hints = typing.get_type_hints(kind.__init__) if takes else {}
    for key, value in params.items():
        field = f"rewards[{index}].params.{key}"
        if key not in accepted:
            fix = f"{name} accepts {', '.join(accepted)}" if accepted else f"{name} takes no params"
            close = difflib.get_close_matches(key, accepted, n=1)
            if close:
                fix = f"did you mean '{close[0]}'? {fix}"
            raise InputError(field, f"unexpected parameter for {name}", fix)
        if key in hints and not _matches_type(value, hints[key]):
            raise InputError(
                field,
                f"must be {_type_name(hints[key])}, got {type(value).__name__} {value!r}",
                f"give a {_type_name(hints[key])}",
            )


def _build_custom(spec: RewardSpec, index: int) -> RewardFunc:
    """`module:function` (or `module:Class.attr`): imported as-is, `params` bound as keywords."""
    field = f"rewards[{index}].name"
    fix = "write module:function with an importable module (on PYTHONPATH) and a callable in it"
    if ":" not in spec.name or not all(spec.name.partition(":")[::2]):
        raise InputError(field, f"'{spec.name}' is not module:function", fix)
    target = import_named(spec.name, field, fix)
    if not callable(target):
        raise InputError(field, f"'{spec.name}' is a {type(target).__name__}, not a function", fix)
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: trust them
        parameters = None
    if parameters is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise InputError(
            field,
            f"'{spec.name}' does not accept **kwargs",
            "define it as def f(completions, **kwargs): TRL passes every dataset column",
        )
    return _TextCompletions(target, spec.params)


class _TextCompletions:
    """Your `module:function` reward, given each completion as text (conversational completions are
    message lists in TRL) and the spec's `params` as keywords. A class, so it pickles."""

    def __init__(self, function: Any, params: dict[str, Any]) -> None:
        self.function, self.params = function, dict(params)
        self.__name__ = getattr(function, "__name__", type(function).__name__)

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        return typing.cast(list[float | None], self.function(completions=texts, **kwargs, **self.params))


def build_reward(spec: RewardSpec, index: int = 0) -> RewardFunc:
    """The reward callable for one spec entry; `index` is its position, for error messages.

    A registered class is built with `params`; `module:function` imports your own.
    """
    kind = REGISTRY.get(spec.name)
    if kind is None:
        if ":" in spec.name:
            return _build_custom(spec, index)
        names = ", ".join(REGISTRY)
        fix = f"use one of {names} or module:function"
        close = difflib.get_close_matches(spec.name, list(REGISTRY), n=1)
        if close:
            fix = f"did you mean '{close[0]}'? {fix}"
        raise InputError(f"rewards[{index}].name", f"unknown reward '{spec.name}'", fix)
    _check_params(spec.name, kind, spec.params, index)
    if not inspect.isclass(kind):
        return typing.cast(RewardFunc, kind)
    try:
        return typing.cast(RewardFunc, kind(**spec.params))
    except ParamError as err:
        raise InputError(f"rewards[{index}].params.{err.key}", err.problem, err.fix) from None


def build_rewards(specs: list[RewardSpec]) -> tuple[list[RewardFunc], list[float]]:
    """Reward callables and their weights, in spec order (TRL's `reward_funcs`, `reward_weights`)."""
    return [build_reward(spec, i) for i, spec in enumerate(specs)], [spec.weight for spec in specs]
