"""reasoning-gym as a dataset source: generated rows from disjoint seeds, scored by each task's own
scorer (also in a process that did not generate them), and bad tasks or settings refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import app
from service import procedural
from service.data import load_rows
from service.rewards.reasoning import ReasoningGym, extract_answer
from service.spec.loading import load_spec
from tests.cli.helpers import runner

reasoning_gym = ReasoningGym()
ARITH = {"uri": "reasoning-gym:basic_arithmetic", "params": {"max_terms": 2, "operators": ["+", "-"]}}


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}


def test_rows_come_from_disjoint_seeds_and_the_task_scores_its_own_answers() -> None:
    spec = load_spec({"dataset": {**ARITH, "size": 40, "evalSize": 8}})
    assert [r.name for r in spec.rewards] == ["reasoning_gym"]  # the default reward for such data
    train, evaluation = load_rows(spec.prompts)
    assert (len(train), len(evaluation)) == (40, 8)
    assert [r["rg_seed"] + r["rg_index"] for r in train] == list(range(0, 40))
    assert [r["rg_seed"] + r["rg_index"] for r in evaluation] == list(range(1_000_000, 1_000_008))
    assert train[0]["prompt"].startswith("Calculate") and train == load_rows(spec.prompts)[0]  # reproducible

    right = reasoning_gym([r["answer"] for r in evaluation], **_columns(evaluation))
    wrong = reasoning_gym(
        [f"<answer>{int(r['answer']) + 1}</answer>" for r in evaluation], **_columns(evaluation)
    )
    assert right == [1.0] * 8 and wrong == [0.0] * 8
    # a process that never generated the rows (a reward worker, another pod) regenerates the items
    procedural._ITEMS.clear()
    procedural.generator.cache_clear()
    tagged = [f"Let me add.\n<answer> {r['answer']} </answer>" for r in evaluation]
    assert reasoning_gym(tagged, **_columns(evaluation)) == [1.0] * 8


def test_a_mix_draws_from_its_tasks_and_each_scores_its_own() -> None:
    tasks = [{"name": "basic_arithmetic", "weight": 3, "params": {"max_terms": 2}}, {"name": "leg_counting"}]
    spec = load_spec({"dataset": {"uri": "reasoning-gym:mix", "tasks": tasks, "size": 60, "evalSize": 16}})
    train, evaluation = load_rows(spec.prompts)
    legs = [r for r in train if "legs" in r["prompt"]]
    assert 0 < len(legs) < 30  # weight 3 : 1
    assert reasoning_gym([r["answer"] for r in evaluation], **_columns(evaluation)) == [1.0] * 16


def test_the_answer_is_the_last_answer_tag_else_the_last_line() -> None:
    assert extract_answer("<answer>1</answer> no, <answer>2</answer>") == "2"
    assert extract_answer("reasoning first\n\n  42  \n") == "42"
    assert extract_answer("") is None


def test_last_number_reads_a_numeric_answer_written_as_a_sentence(tmp_path: Path) -> None:
    spec = load_spec({"dataset": {**ARITH, "size": 4, "evalSize": 8}})
    evaluation = load_rows(spec.prompts)[1]
    sentences = [f"The answer is {r['answer']}." for r in evaluation]
    # the last line is the sentence: the task's scorer gives only partial credit for the answer inside it
    assert max(reasoning_gym(sentences, **_columns(evaluation))) < 0.5
    by_number = ReasoningGym(answer="last-number")
    assert by_number(sentences, **_columns(evaluation)) == [1.0] * 8
    assert by_number(["I cannot say."] * 8, **_columns(evaluation)) == [0.0] * 8
    bad = {"dataset": ARITH, "rewards": [{"name": "reasoning_gym", "params": {"answer": "number"}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"spec": bad}))
    result = runner.invoke(app, ["eval", str(path)])
    assert result.exit_code == 2
    assert "rewards[0].params.answer: 'number' is not a way to read the answer; use tag or last-number" in (
        result.output
    )


@pytest.mark.parametrize(
    ("dataset", "words"),
    [
        (
            {"uri": "reasoning-gym:basic_arithmetc"},
            "error: dataset.uri: reasoning-gym has no task 'basic_arithmetc'; did you mean "
            "reasoning-gym:basic_arithmetic?",
        ),
        (
            {"uri": "reasoning-gym:basic_arithmetic", "params": {"min_terms": 0}},
            "error: dataset.params: basic_arithmetic: min_terms must be positive; basic_arithmetic takes "
            "min_terms, max_terms,",
        ),
        (
            {"uri": "reasoning-gym:basic_arithmetic", "params": {"max_term": 3}},
            "error: dataset.params.max_term: is not a setting of basic_arithmetic; did you mean 'max_terms'?",
        ),
        (
            {"uri": "reasoning-gym:chain_sum", "params": {"seed": 3}},
            "error: dataset.params.seed: is set by the spec; set dataset.seed instead",
        ),
        (
            {"uri": "reasoning-gym:mix", "tasks": [{"name": "leg_countin"}]},
            "error: dataset.tasks[0].name: reasoning-gym has no task 'leg_countin'; did you mean "
            "reasoning-gym:leg_counting?",
        ),
        ({"uri": "reasoning-gym:mix"}, "error: spec.dataset.tasks: is empty; reasoning-gym:mix draws from"),
        (
            {"uri": "reasoning-gym:chain_sum", "evalSeed": 500},
            "error: spec.dataset.evalSeed: evaluation seeds 500…563 overlap training seeds 0…999; set "
            "evalSeed to 1000 or more",
        ),
    ],
)
def test_a_bad_task_or_setting_is_one_line_and_exit_2_before_any_model_loads(
    tmp_path: Path, dataset: dict, words: str
) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"spec": {"dataset": dataset}}))
    result = runner.invoke(app, ["train", str(path), "--layers", "1", "--no-mlflow"])
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_reasoning_gym_reward_needs_reasoning_gym_rows(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"spec": {"rewards": [{"name": "reasoning_gym"}]}}))
    result = runner.invoke(app, ["train", str(path), "--layers", "1", "--no-mlflow"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: spec.rewards: reasoning_gym scores the items of a reasoning-gym")


def test_a_system_prompt_opens_every_conversation_and_needs_the_chat_template() -> None:
    asked = "Give only the answer, between <answer> and </answer>."
    dataset = {**ARITH, "size": 4, "evalSize": 2, "chatTemplate": True, "systemPrompt": asked}
    train, evaluation = load_rows(
        load_spec({"model": {"uri": "builtin:smollm2"}, "dataset": dataset}).prompts
    )
    assert [m["role"] for m in train[0]["prompt"]] == ["system", "user"]
    assert train[0]["prompt"][0]["content"] == asked and evaluation[0]["prompt"][1]["content"].startswith(
        "Calculate"
    )
    with pytest.raises(Exception, match="systemPrompt: is a message of a conversation"):
        load_spec({"dataset": {**ARITH, "systemPrompt": asked}})
