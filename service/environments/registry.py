"""`environment.uri` → a factory of fresh environments, with bad input refused before any model loads.

`builtin:<name>` and `gymnasium:<id>` are ours; `module:Class` imports your class from where the
job runs (as `module:function` rewards do: the module must be on `PYTHONPATH`, in the operator's
image too). A class with `reset` and `step` speaks our protocol; a class in the shape of TRL's
`environment_factory` (`reset(**row)`, tools as public methods, optional `get_reward()`) is wrapped
by `service.environments.trl_tools`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

from service.environments.gridworld import GridWorld
from service.environments.toytext import ToyText, check_toy_text
from service.environments.trl_tools import ToolEnvironment, tool_names
from service.errors import InputError
from service.imports import import_named
from service.spec.models import EnvironmentSpec

BUILTIN: dict[str, type] = {"gridworld": GridWorld}
"""The built-in environments, by the name after `builtin:`."""

Factory = Callable[[], Any]


def environment_factory(spec: EnvironmentSpec, *, state_key: bool = False) -> Factory:
    """A function building one fresh environment per episode.

    Raises `InputError` naming `environment.uri` or `environment.params` for an unknown name, a
    class that cannot be imported or lacks `reset`, or parameters its constructor does not take;
    with `state_key` (GiGPO's anchor states), naming `algorithm.advantageEstimator` for an
    environment without `state_key()`.
    """
    factory = _factory(spec)
    if state_key:
        env = factory()
        if not callable(getattr(env.build() if isinstance(env, ToolEnvironment) else env, "state_key", None)):
            raise InputError(
                "algorithm.advantageEstimator",
                f"gigpo groups actions by the state they were taken in, and {spec.uri} has no state_key()",
                "add a state_key() method returning a hashable state (see examples/my_env.py), or use grpo",
            )
    return factory


def _factory(spec: EnvironmentSpec) -> Factory:
    scheme, _, name = spec.uri.partition(":")
    if scheme == "builtin":
        if name not in BUILTIN:
            close = difflib.get_close_matches(name, list(BUILTIN), n=1)
            hint = f"did you mean builtin:{close[0]}? " if close else ""
            raise InputError(
                "environment.uri",
                f"no built-in environment '{name}'",
                f"{hint}the built-in ones are {', '.join('builtin:' + n for n in BUILTIN)}",
            )
        kind: Any = BUILTIN[name]
        _check_params(kind, spec.params)
        kind(**spec.params)  # its own checks of the values, before any model loads
        return functools.partial(kind, **spec.params)
    if scheme == "gymnasium":
        check_toy_text(name)
        _check_params(ToyText, {"name": name, **spec.params})
        return functools.partial(ToyText, name, **spec.params)
    kind = _import_class(spec.uri)
    _check_params(kind, spec.params)
    if callable(getattr(kind, "step", None)):
        return functools.partial(kind, **spec.params)
    if not tool_names(kind):
        raise InputError(
            "environment.uri",
            f"'{spec.uri}' has reset but no step, and no tools (public methods) as a TRL environment has",
            "add step(action) -> (observation, reward, done) (see examples/my_env.py)",
        )
    return functools.partial(ToolEnvironment, functools.partial(kind, **spec.params))


def _import_class(uri: str) -> Any:
    field = "environment.uri"
    fix = "write module:Class with an importable module (on PYTHONPATH) and a class with reset and step"
    target = import_named(uri, field, fix)
    if not inspect.isclass(target) and not callable(target):
        raise InputError(field, f"'{uri}' is a {type(target).__name__}, not a class", fix)
    if not callable(getattr(target, "reset", None)):
        raise InputError(field, f"'{uri}' has no reset method", fix)
    return target


def _check_params(kind: Any, params: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(kind)
    except (TypeError, ValueError):
        return
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = [p.name for p in parameters]
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            takes = ", ".join(accepted) or "no parameters"
            raise InputError(
                f"environment.params.{key}",
                "is not a parameter of this environment",
                f"{hint}it takes {takes}",
            )
