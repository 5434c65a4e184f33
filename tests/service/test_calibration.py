"""`learningRateMultiplier: auto`: the selected layers race a ladder of multipliers on held-out
items (real TRL runs on the demo model), and the winner's run continues into the training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

import service.calibration as calibration_module
from service.calibration import CALIBRATION_JSON, Calibration, Trial, _choose, train_layers
from service.data import load_rows
from service.errors import InputError, LayerpilotError
from service.patch import PATCH_META, PATCH_TENSORS
from service.spec.models import LayerAdaptationSpec
from service.training.rundir import CALIBRATION
from service.training.task import held_out_items, training_task
from service.training.trainer import train
from tests.conftest import small_spec

LAYER = 2
ITEMS = 16


def auto_spec(**training: Any) -> LayerAdaptationSpec:
    """4 steps; the ladder races to step 1, the better two to step 2, the winner continues to 4."""
    return small_spec(
        dataset={"evalSize": 16},
        training={
            "maxSteps": 4,
            "saveSteps": 4,
            "learningRateMultiplier": "auto",
            "calibration": {"multipliers": [0.3, 1, 3], "steps": 2, "items": ITEMS},
            **training,
        },
    )


@pytest.fixture
def scored(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The items every calibration score is taken on (a spy on the real scoring, which still runs)."""
    seen: list[list[Any]] = []
    real = calibration_module.score

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(list(kwargs["items"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration_module, "score", spy)
    return seen


@pytest.fixture
def trials(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The multipliers a calibration trains (a spy on the real trial, which still runs)."""
    seen: list[float] = []
    real = calibration_module._run_trial

    def spy(spec: Any, layers: Any, root: Any, multiplier: float, *args: Any) -> Any:
        seen.append(multiplier)
        return real(spec, layers, root, multiplier, *args)

    monkeypatch.setattr(calibration_module, "_run_trial", spy)
    return seen


def test_auto_chooses_on_held_out_items_and_its_training_equals_one_run_at_the_chosen_rate(
    tmp_path: Path, scored: list[list[Any]], trials: list[float]
) -> None:
    spec = auto_spec()
    result = train_layers(spec, [LAYER], tmp_path / "auto")

    race = json.loads((tmp_path / "auto" / CALIBRATION / CALIBRATION_JSON).read_text())
    assert [(t["multiplier"], t["steps"]) for t in race["trials"]][:3] == [(0.3, 1), (1.0, 1), (3.0, 1)]
    finalists = [t for t in race["trials"] if t["steps"] == 2]
    assert len(finalists) == 2 and race["chosen"] in {t["multiplier"] for t in finalists}
    best = max(finalists, key=lambda t: (t["score"], -t["multiplier"]))
    assert race["chosen"] == best["multiplier"] or race["warnings"]
    assert all(t["interval"][0] <= t["score"] <= t["interval"][1] for t in race["trials"])
    assert trials == [0.3, 1.0, 3.0, *sorted(t["multiplier"] for t in finalists)]

    # Scored on the last training items only: never an eval item, never a row the runs train on.
    eval_prompts = {row["prompt"] for row in load_rows(spec.prompts)[1]}
    calibration_prompts = {row["prompt"] for row in held_out_items(spec, ITEMS)}
    trained_prompts = {row["prompt"] for row in training_task(spec, held_out=ITEMS).rows}
    assert len(scored) == 1 + len(race["trials"])  # the base, then every trial
    assert all({row["prompt"] for row in items} == calibration_prompts for items in scored)
    assert not calibration_prompts & eval_prompts and not calibration_prompts & trained_prompts

    # The choice is recorded in the result and the patch...
    rate = result.learning_rate
    assert rate["chosenBy"] == "calibration" and rate["multiplier"] == race["chosen"]
    assert rate["rate"] == pytest.approx(spec.algorithm.learning_rate * race["chosen"])
    meta = json.loads((tmp_path / "auto" / PATCH_META).read_text())
    assert meta["learningRate"]["calibration"]["chosen"] == race["chosen"]
    assert result.global_step == 4
    # ...and the race's weights are gone: the winner continued in the training directory.
    assert not list((tmp_path / "auto" / CALIBRATION).glob("*/checkpoints"))

    # The winner's run, continued, is the run one training at its rate gives.
    alone = train(
        spec,
        [LAYER],
        tmp_path / "alone",
        learning_rate=rate["rate"],
        held_out=ITEMS,
    )
    assert alone.global_step == 4
    continued = load_file(str(tmp_path / "auto" / PATCH_TENSORS))
    uninterrupted = load_file(str(tmp_path / "alone" / PATCH_TENSORS))
    assert continued.keys() == uninterrupted.keys()
    assert all((continued[name] == uninterrupted[name]).all() for name in continued)

    # A resumed training does not race again, and changes nothing.
    trials.clear()
    again = train_layers(spec, [LAYER], tmp_path / "auto", resume=True)
    assert trials == [] and again.learning_rate["multiplier"] == race["chosen"]
    assert json.loads((tmp_path / "auto" / CALIBRATION / CALIBRATION_JSON).read_text()) == race


def test_an_interrupted_calibration_continues_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trials: list[float]
) -> None:
    spec = auto_spec(maxSteps=2, saveSteps=2, calibration={"multipliers": [1, 3], "items": ITEMS})
    real = calibration_module._run_trial

    def dies_on_the_second(spec: Any, layers: Any, root: Any, multiplier: float, *args: Any) -> Any:
        if multiplier == 3:
            raise KeyboardInterrupt  # the Job is killed
        return real(spec, layers, root, multiplier, *args)

    monkeypatch.setattr(calibration_module, "_run_trial", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        train_layers(spec, [LAYER], tmp_path)
    with pytest.raises(InputError, match="--resume"):  # finished work is never overwritten
        train_layers(spec, [LAYER], tmp_path)
    assert trials == [1.0]
    monkeypatch.setattr(calibration_module, "_run_trial", real)  # the spy alone again
    trials.clear()
    result = train_layers(spec, [LAYER], tmp_path, resume=True)
    assert trials == [3.0]  # ×1 was scored before the kill
    race = json.loads((tmp_path / CALIBRATION / CALIBRATION_JSON).read_text())
    assert [t["multiplier"] for t in race["trials"]] == [1.0, 3.0]
    assert result.learning_rate["multiplier"] == race["chosen"] and result.global_step == 2
    # the winner ran all the steps: its run is the training, and says how its rate was chosen
    assert result.learning_rate["chosenBy"] == "calibration"
    meta = json.loads((tmp_path / PATCH_META).read_text())
    assert meta["learningRate"]["calibration"]["chosen"] == race["chosen"]


def test_a_ladder_that_only_collapses_trains_at_its_lowest_multiplier_with_a_warning(tmp_path: Path) -> None:
    """Rates of 30 and 100 × 1e-3 wreck the demo's layer: both score below the untrained model on
    the calibration items, so the run trains at the lowest and says so."""
    spec = auto_spec(maxSteps=2, saveSteps=2, calibration={"multipliers": [30, 100], "items": ITEMS})
    result = train_layers(spec, [LAYER], tmp_path)
    race = json.loads((tmp_path / CALIBRATION / CALIBRATION_JSON).read_text())
    assert all(t["score"] is None or t["score"] < race["base"]["score"] for t in race["trials"])
    assert race["chosen"] == 30.0 and result.learning_rate["multiplier"] == 30.0
    assert any("lowered the calibration score below the base" in w for w in result.warnings)


def _race(*scores: float | None, base: float = 0.2) -> tuple[Calibration, list[Trial]]:
    ladder = [1.0, 3.0, 10.0][: len(scores)]
    calibration = Calibration(ladder, ITEMS, 2, 4, [], base_score=base)
    finalists = [
        Trial(m, 2, s, [], 1.0, failed=None if s is not None else "probability tensor contains nan")
        for m, s in zip(ladder, scores, strict=True)
    ]
    return calibration, sorted(finalists, key=Trial.rank_key)


def test_the_choice_rules() -> None:
    calibration, finalists = _race(0.3, 0.5)
    assert _choose(calibration, finalists) == 3.0
    assert calibration.warnings and "highest multiplier" in calibration.warnings[0]
    calibration, finalists = _race(0.4, 0.4, None)  # a tie goes to the lower rate; a failure ranks last
    assert _choose(calibration, finalists) == 1.0 and not calibration.warnings
    with pytest.raises(LayerpilotError, match=r"training\.calibration\.multipliers"):
        _choose(*_race(None, None))


def test_too_few_training_items_for_the_calibration_are_refused_before_any_model_loads(
    tmp_path: Path,
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(20))
    )
    spec = small_spec(
        dataset={"uri": str(data), "evalSize": 4},
        training={"learningRateMultiplier": "auto", "calibration": {"items": ITEMS}},
    )
    with pytest.raises(InputError, match=r"training\.calibration\.items") as refused:
        train_layers(spec, [LAYER], tmp_path / "run")
    assert "16 calibration items would leave 0 of the 16 training items" in str(refused.value)
    assert not (tmp_path / "run").exists()
