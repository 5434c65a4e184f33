"""`module:name` in a spec (a reward function, an environment class): imported as it stands.

The module must be importable where the job runs (on `PYTHONPATH`; in Kubernetes, in the image).
Every failure is bad input naming the spec field.
"""

from __future__ import annotations

import importlib
from typing import Any

from service.errors import InputError


def import_named(name: str, field: str, fix: str) -> Any:
    """The object `module:attr` (or `module:Class.attr`) names; `InputError(field, …, fix)` if none.

    >>> import_named("json:dumps", "rewards[0].name", "fix it").__name__
    'dumps'
    """
    module_name, _, attr_path = name.partition(":")
    if not module_name or not attr_path:
        raise InputError(field, f"'{name}' is not module:name", fix)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:
        problem = f"cannot import module '{module_name}' ({type(err).__name__}: {err})"
        raise InputError(field, problem, fix) from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InputError(field, f"module '{module_name}' has no attribute '{attr_path}'", fix) from None
    return target
