"""The environment protocol, the built-in environments, and the bad input an environment can be."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.environments.gridworld import GridWorld
from service.environments.protocol import as_step
from service.environments.registry import environment_factory
from service.environments.seeds import episode_starts
from service.environments.toytext import ToyText
from service.environments.trl_tools import ToolEnvironment
from service.errors import InputError
from service.spec.loading import load_spec
from service.spec.models import EnvironmentSpec

ENVS = "tests.service.environments.envs"


@pytest.mark.parametrize("params", [{"size": 3}, {"size": [4, 6], "walls": 0.4}, {"size": 6, "keys": True}])
def test_every_gridworld_is_solvable_and_its_solution_reaches_the_goal(params: dict) -> None:
    for seed in range(60):
        env = GridWorld(**params)
        first = env.reset(seed)
        assert first == GridWorld(**params).reset(seed), "a seed fixes the initial state"
        assert first.count("A") == 1 and first.count("G") == 1
        moves = env.solution()
        assert moves
        for move in moves[:-1]:
            _, reward, done, _ = env.step(move)
            assert (reward, done) == (0.0, False)
        _, reward, done, info = env.step(moves[-1])
        assert (reward, done, info["success"]) == (1.0, True, True)


def test_a_gridworld_tells_walls_locked_doors_and_actions_it_cannot_parse() -> None:
    env = GridWorld(size=6, keys=True)
    env.reset(1)
    before = env.state_key()
    observation, reward, done, info = env.step("jump over it")
    assert info == {"invalid": True} and "say up, down, left or right" in observation
    assert env.state_key() == before and (reward, done) == (0.0, False)
    # walk into the door without the key: it stays locked
    env.grid = [["." if c not in "#D" else c for c in row] for row in env.grid]
    door = next((r, c) for r, row in enumerate(env.grid) for c, cell in enumerate(row) if cell == "D")
    env.agent, env.has_key = (door[0], door[1] - 1), False
    assert env.step("right")[0].endswith("locked")
    env.has_key = True
    env.step("right")
    assert env.agent == door


def test_frozen_lake_speaks_text_and_generates_a_lake_per_seed() -> None:
    env = ToyText("FrozenLake-v1", size=4)
    first = env.reset(3)
    assert first.startswith("A") and first.count("G") == 1 and len(first.splitlines()) == 4
    assert ToyText("FrozenLake-v1").reset(3) == first
    assert any(ToyText("FrozenLake-v1").reset(seed) != first for seed in range(4, 10))
    observation, _, _, info = env.step("fly")
    assert info == {"invalid": True} and "say left, down, right, up" in observation
    env.step("right")
    assert env.state_key() == "1"


def test_a_trl_environment_class_plays_through_tool_calls() -> None:
    env = ToolEnvironment(lambda: __import__(ENVS, fromlist=["Counter"]).Counter())
    assert env.reset(0) == "count to 2\ntools: increment"
    assert env.step("increment(by=1)") == ("count 1", 0.0, False, {})
    assert env.step('{"name": "increment", "arguments": {"by": 1}}')[0] == "count 2"
    assert env.step("I counted to two") == ("", 1.0, True, {})


def test_the_readmes_own_environment_example_speaks_the_protocol() -> None:
    env = environment_factory(EnvironmentSpec(uri="examples.my_env:Hallway", params={"length": 5}))()
    first = env.reset(7)
    assert len(first) == 5 and first.count("A") == first.count("G") == 1
    toward = "right" if first.index("G") > first.index("A") else "left"
    steps = [env.step(toward) for _ in range(abs(first.index("G") - first.index("A")))]
    assert steps[-1][1:] == (1.0, True, {"success": True})
    assert env.step("jump")[3] == {"invalid": True}


def test_a_step_in_another_shape_is_refused_with_what_to_return() -> None:
    with pytest.raises(Exception, match=r"return \(observation, reward, done\)"):
        as_step("moved")


@pytest.mark.parametrize(
    ("uri", "params", "field", "words"),
    [
        ("builtin:gridwrld", {}, "environment.uri", "did you mean builtin:gridworld?"),
        ("gymnasium:FrozenLak-v1", {}, "environment.uri", "did you mean gymnasium:FrozenLake-v1?"),
        ("no_such_module_xyz:Env", {}, "environment.uri", "cannot import module 'no_such_module_xyz'"),
        (f"{ENVS}:Missing", {}, "environment.uri", "has no attribute 'Missing'"),
        ("json:dumps", {}, "environment.uri", "has no reset method"),
        ("builtin:gridworld", {"sise": 4}, "environment.params.sise", "did you mean 'size'?"),
        ("builtin:gridworld", {"size": 40}, "environment.params.size", "is not a side from 3 to 12"),
        (f"{ENVS}:Corridor", {"width": 2}, "environment.params.width", "it takes length"),
    ],
)
def test_a_bad_environment_is_refused_naming_the_field(
    uri: str, params: dict, field: str, words: str
) -> None:
    with pytest.raises(InputError) as caught:
        environment_factory(EnvironmentSpec(uri=uri, params=params))
    assert caught.value.field == field
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_class_with_tools_and_no_step_is_played_as_a_trl_environment() -> None:
    env = environment_factory(EnvironmentSpec(uri=f"{ENVS}:Counter"))()
    assert isinstance(env, ToolEnvironment) and env.reset(0) == "count to 2\ntools: increment"
    with pytest.raises(InputError, match="has reset but no step, and no tools"):
        environment_factory(EnvironmentSpec(uri=f"{ENVS}:NoStep"))


@pytest.mark.parametrize(
    ("environment", "field", "words"),
    [
        (
            {"uri": "builtin:gridworld", "maxTurns": 0},
            "spec.environment.maxTurns",
            "greater than or equal to 1",
        ),
        ({"uri": "gridworld"}, "spec.environment.uri", "names no environment"),
        ({"uri": "builtin:gridworld", "evalSeed": 500}, "spec.environment.evalSeed", "set evalSeed to 1000"),
    ],
)
def test_a_bad_environment_section_is_refused_when_the_spec_loads(
    environment: dict, field: str, words: str
) -> None:
    with pytest.raises(InputError) as caught:
        load_spec({"spec": {"environment": environment}})
    assert caught.value.field == field, caught.value
    assert words in str(caught.value)


def test_neither_dataset_nor_environment_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        load_spec({"spec": {"dataset": None}})
    assert caught.value.field == "spec.dataset" and "or an environment" in str(caught.value)


def test_an_environment_needs_no_dataset_and_no_reward() -> None:
    spec = load_spec({"spec": {"environment": {"uri": "builtin:gridworld"}}})
    assert spec.dataset is None and spec.rewards == []
    assert load_spec(spec.model_dump(mode="json", by_alias=True)) == spec  # as the operator's pods read it


def test_training_and_evaluation_episodes_never_share_a_seed(tmp_path: Path) -> None:
    environment = EnvironmentSpec(uri="builtin:gridworld", trainEpisodes=50, evalEpisodes=20, evalSeed=50)
    train = {s.seed for s in episode_starts(environment, None, "train")}
    evaluation = {s.seed for s in episode_starts(environment, None, "eval")}
    assert len(train) == 50 and len(evaluation) == 20 and not train & evaluation
    # with a dataset, its rows pair with seeds: 90 training rows reach seed 89, past evalSeed 50
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(f'{{"prompt": "p{i}", "answer": "{i}", "size": 4}}\n' for i in range(100)))
    from service.spec.models import DatasetSpec

    dataset = DatasetSpec(uri=str(data), evalSize=10)
    with pytest.raises(InputError) as caught:
        episode_starts(environment, dataset, "train")
    assert caught.value.field == "environment.evalSeed" and "set evalSeed to 90 or more" in str(caught.value)
    environment = EnvironmentSpec(uri="builtin:gridworld", evalSeed=90)
    starts = episode_starts(environment, dataset, "eval")
    assert [s.seed for s in starts] == list(range(90, 100)) and starts[0].row == {
        "prompt": "p90",
        "answer": "90",
        "size": 4,
    }
