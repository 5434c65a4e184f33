"""The reward registry: names and params from the spec, custom module:function rewards, TRL's shape."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.errors import InputError
from service.rewards.registry import REGISTRY, available_rewards, build_reward, build_rewards
from service.spec.models import RewardSpec
from tests.service.rewards.helpers import ADD, ADD_TESTS, chat, reward

# ---------------------------------------------------------------------------------------------
# registry


def test_every_registered_reward_builds_with_defaults_and_is_named() -> None:
    descriptions = available_rewards()
    assert (
        set(descriptions)
        == set(REGISTRY)
        == {
            "exact_answer",
            "math_equivalence",
            "format",
            "code_tests",
            "reasoning_gym",
        }
    )
    for name, description in descriptions.items():
        assert description and "\n" not in description
        assert build_reward(RewardSpec(name=name)).__name__ == name


def test_unknown_reward_suggests_a_close_match() -> None:
    with pytest.raises(InputError) as info:
        build_reward(RewardSpec(name="exact_answr"), index=2)
    assert info.value.field == "rewards[2].name"
    assert "exact_answer" in (info.value.fix or "")
    assert "module:function" in (info.value.fix or "")


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("format", {"patern": "x"}, "rewards[0].params.patern"),
        ("exact_answer", {"strict": True}, "rewards[0].params.strict"),
        ("code_tests", {"timeout": "5"}, "rewards[0].params.timeout"),
        ("code_tests", {"memory_mb": 1.5}, "rewards[0].params.memory_mb"),
        ("code_tests", {"max_workers": True}, "rewards[0].params.max_workers"),
        ("code_tests", {"timeout": 0}, "rewards[0].params.timeout"),
        ("math_equivalence", {"timeout": 0}, "rewards[0].params.timeout"),
    ],
)
def test_bad_params_name_the_key(name: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        reward(name, **params)
    assert info.value.field == field


def test_misspelt_param_suggests_the_right_one() -> None:
    with pytest.raises(InputError, match="did you mean 'pattern'"):
        reward("format", patern="x")


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"my_rewards_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            def length_bonus(completions, scale=1.0, **kwargs):
                return [scale * len(c) for c in completions]

            def strict(completions):
                return [0.0 for _ in completions]

            NOT_CALLABLE = 3

            class Scorers:
                @staticmethod
                def ones(completions, **kwargs):
                    return [1.0] * len(completions)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_custom_reward_is_imported_and_params_bound(custom_module: str) -> None:
    plain = build_reward(RewardSpec(name=f"{custom_module}:length_bonus"))
    assert plain(["ab", "abcd"], answer=["x", "y"]) == [2.0, 4.0]
    assert plain.__name__ == "length_bonus"
    scaled = build_reward(RewardSpec(name=f"{custom_module}:length_bonus", params={"scale": 0.5}))
    assert scaled(["ab", "abcd"], prompts=["p", "q"]) == [1.0, 2.0]
    assert scaled.__name__ == "length_bonus"
    nested = build_reward(RewardSpec(name=f"{custom_module}:Scorers.ones"))
    assert nested(["a"]) == [1.0]


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("no_such_module_xyz:f", "cannot import"),
        ("{m}:missing", "no attribute"),
        ("{m}:NOT_CALLABLE", "not a function"),
        ("{m}:strict", "**kwargs"),
        (":f", "not module:function"),
    ],
)
def test_bad_custom_reward_names_the_field(custom_module: str, target: str, problem: str) -> None:
    specs = [RewardSpec(name="format"), RewardSpec(name=target.format(m=custom_module))]
    with pytest.raises(InputError) as info:
        build_rewards(specs)
    assert info.value.field == "rewards[1].name"
    assert problem in info.value.problem
    assert info.value.fix


def test_build_rewards_keeps_order_and_weights() -> None:
    specs = [
        RewardSpec(name="format", weight=0.25),
        RewardSpec(name="exact_answer", weight=2.0),
        RewardSpec(name="math_equivalence"),
    ]
    funcs, weights = build_rewards(specs)
    assert [f.__name__ for f in funcs] == ["format", "exact_answer", "math_equivalence"]
    assert weights == [0.25, 2.0, 1.0]


# ---------------------------------------------------------------------------------------------
# TRL's calling shape


def test_rewards_accept_trls_calling_convention() -> None:
    """`GRPOTrainer._calculate_rewards` calls every reward with keywords only, plus every column."""
    logged: list[tuple[Any, ...]] = []
    # reasoning_gym reads rows of generated items: tests/service/test_procedural.py calls it so
    funcs, _ = build_rewards([RewardSpec(name=name) for name in REGISTRY if name != "reasoning_gym"])
    prompts = [[{"role": "user", "content": "Write add; what is 37+45?"}]] * 2
    completions = [
        chat(f"<think>\n```python\n{ADD}```\n</think>\n<answer>\\boxed{{82}}</answer>"),
        chat("83"),
    ]
    for func in funcs:
        scores = func(
            prompts=prompts,
            completions=completions,
            completion_ids=[[1, 2], [3]],
            answer=["82", "82"],
            tests=[ADD_TESTS, ADD_TESTS],
            trainer_state=None,
            log_extra=lambda *args: logged.append(args),
            log_metric=lambda *args: logged.append(args),
        )
        assert len(scores) == 2
        assert all(isinstance(s, float) for s in scores)
        assert scores[0] == 1.0 and scores[1] == 0.0, func.__name__


def test_rewards_of_an_empty_batch_are_empty() -> None:
    for name in REGISTRY:
        assert reward(name)([], answer=[], tests=[]) == []
