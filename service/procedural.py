"""Procedurally generated tasks from reasoning-gym: dataset rows, and the task's own scorer.

`dataset.uri: reasoning-gym:<task>` generates `dataset.size` training items from seeds
`dataset.seed` … and `dataset.evalSize` evaluation items from `dataset.evalSeed` … (item i of a
task draws from seed + i, so the two ranges never overlap: the spec checks it). `dataset.params`
is the task's own configuration. `reasoning-gym:mix` draws from `dataset.tasks` by weight.

Each row carries its prompt (the question), its answer, and where it came from (`rg_task`,
`rg_params`, `rg_seed`, `rg_size`, `rg_index`). The `reasoning_gym` reward regenerates the item from those
columns (items are cached) and asks the task's own `score_answer`. No data is downloaded: the
generators and their data files ship inside the package.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from typing import Any

from service.errors import InputError, first_line
from service.spec.models import DatasetSpec

SCHEME = "reasoning-gym:"
MIX = "mix"
OWNED = ("seed", "size")  # set by dataset.seed / dataset.size, not by a task's params

_ITEMS: dict[tuple[str, str, int, int], dict[str, Any]] = {}
"""Generated items by (task, params, seed, index): rows fill it, the reward reads it."""


def is_procedural(dataset: DatasetSpec) -> bool:
    return dataset.uri.startswith(SCHEME)


def task_names() -> list[str]:
    """reasoning-gym's task names (its generators), sorted."""
    from reasoning_gym.factory import DATASETS  # deferred: importing reasoning-gym takes a second

    return sorted(name for name in DATASETS if name != "composite")


def check(dataset: DatasetSpec) -> None:
    """Refuse an unknown task or a configuration the task itself rejects, naming the field."""
    generator(dataset.uri.removeprefix(SCHEME), _params_json(dataset), dataset.seed, dataset.size)


def rows(dataset: DatasetSpec, split: str, count: int) -> list[dict[str, Any]]:
    """`count` items of the training (`split="train"`, from `seed`) or evaluation seeds, as rows."""
    task = dataset.uri.removeprefix(SCHEME)
    params = _params_json(dataset)
    seed = dataset.seed if split == "train" else dataset.eval_seed
    source = generator(task, params, seed, count)
    out = []
    for index in range(count):
        item = source[index]
        _ITEMS[(task, params, seed, index)] = item  # the reward's lookup, before it would regenerate it
        out.append(
            {
                "prompt": str(item["question"]),
                "answer": str(item["answer"]),
                "rg_task": task,
                "rg_params": params,
                "rg_seed": seed,
                "rg_size": count,
                "rg_index": index,
            }
        )
    return out


def score(row: dict[str, Any], answer: str | None) -> float:
    """The task's own score of `answer` for a row's item, in [0, 1]; the item is regenerated from
    the row's columns when this process has not generated it."""
    task, params, seed, size, index = (
        row[k] for k in ("rg_task", "rg_params", "rg_seed", "rg_size", "rg_index")
    )
    source = generator(task, params, int(seed), int(size))
    key = (task, params, int(seed), int(index))
    if key not in _ITEMS:
        _ITEMS[key] = source[int(index)]
    return float(source.score_answer(answer, _ITEMS[key]))


@functools.lru_cache(maxsize=64)
def generator(task: str, params: str, seed: int, size: int) -> Any:
    """reasoning-gym's dataset object for a task (or a mix) with its configuration, as JSON."""
    import reasoning_gym
    from reasoning_gym.composite import DatasetSpec as Part

    config = json.loads(params)
    if task == MIX:
        parts = config["tasks"]
        for i, part in enumerate(parts):
            _check_task(part["name"], f"dataset.tasks[{i}].name")
            _check_params(part["name"], part["params"], f"dataset.tasks[{i}].params")
        specs = [Part(name=p["name"], weight=float(p["weight"]), config=dict(p["params"])) for p in parts]
        return _create(reasoning_gym, "composite", {"datasets": specs}, seed, size, "dataset.tasks")
    _check_task(task, "dataset.uri")
    _check_params(task, config, "dataset.params")
    return _create(reasoning_gym, task, config, seed, size, "dataset.params")


def _create(module: Any, task: str, config: dict[str, Any], seed: int, size: int, field: str) -> Any:
    try:
        return module.create_dataset(task, **config, seed=seed, size=size)
    except (AssertionError, TypeError, ValueError, KeyError) as err:
        raise InputError(
            field, f"{task}: {first_line(err) or type(err).__name__}", _fields_hint(task)
        ) from None


def _check_task(task: str, field: str) -> None:
    names = task_names()
    if task not in names:
        close = difflib.get_close_matches(task, names, n=1)
        hint = f"did you mean reasoning-gym:{close[0]}? " if close else ""
        raise InputError(
            field,
            f"reasoning-gym has no task '{task}'",
            f"{hint}reasoning-gym {_version()} has {len(names)} tasks, e.g. basic_arithmetic, chain_sum, "
            "leg_counting (all: reasoning_gym.factory.DATASETS)",
        )


def _version() -> str:
    from importlib.metadata import version

    return version("reasoning-gym")


def _check_params(task: str, params: dict[str, Any], field: str) -> None:

    known = _settings(task)
    for key in params:
        if key in OWNED:
            raise InputError(f"{field}.{key}", "is set by the spec", f"set dataset.{key} instead")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise InputError(f"{field}.{key}", f"is not a setting of {task}", f"{hint}{_fields_hint(task)}")


def _fields_hint(task: str) -> str:
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS or task == "composite":
        return "see reasoning-gym's task configuration"
    return f"{task} takes {', '.join(_settings(task))}"


def _settings(task: str) -> list[str]:
    """The configuration fields of a task that `dataset.params` may set."""
    from reasoning_gym.factory import DATASETS

    return [f.name for f in dataclasses.fields(DATASETS[task][1]) if f.name not in OWNED]


def _params_json(dataset: DatasetSpec) -> str:
    """The generator's configuration as canonical JSON (a row column, and a cache key)."""
    if dataset.uri.removeprefix(SCHEME) == MIX:
        tasks = [{"name": t.name, "weight": t.weight, "params": t.params} for t in dataset.tasks]
        return json.dumps({"tasks": tasks}, sort_keys=True)
    return json.dumps(dataset.params, sort_keys=True)
