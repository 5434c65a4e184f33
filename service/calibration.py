"""`training.learningRateMultiplier: auto`: the selected layers choose their own learning rate.

A few layers trained alone often need a higher rate than the whole model (benchmarks/RESULTS.md:
the demo's best layer gains most at 3×, SmolLM2's at 10×; 30× collapses the demo). Instead of a
guess, the selected layers race a ladder of multipliers by successive halving
(`service.training.rungs`, as the halving probe races layers): every multiplier trains to half the
calibration steps, the better half continues to the full calibration steps, and the best of those
trains the whole run. Every calibration run is one run scheduled for the training's `maxSteps`,
stopped early (`train(stop_at=...)`), so the winner's run *is* the start of the final training:
its checkpoint continues to `maxSteps`, and only the other multipliers' steps cost extra.

The ladder is scored on calibration items: the last `calibration.items` of the training split,
which these runs never train on and which never overlap the evaluation items (the rate is never
chosen on the items that report the result). The base model is scored on them too, so a ladder
where every multiplier made the model worse is seen as such: the run then trains at the ladder's
lowest multiplier, with a warning. A multiplier whose training breaks down numerically (a NaN in
sampling) is recorded as failed and ranks last.

Everything lands in `calibration.json` in the training directory as it is measured: a resumed
training continues an unfinished calibration where it stopped, and never calibrates again once a
multiplier is chosen.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from service.bootstrap import Interval, percentiles, resampled_means
from service.errors import LayerpilotError, first_line
from service.fields import Fields
from service.files import write_json
from service.patch import PATCH_FILES, PATCH_META, PATCH_TENSORS
from service.progress import SILENT, Progress
from service.ranks import is_main, world_size
from service.record import Record
from service.scoring import score
from service.spec.models import LayerAdaptationSpec
from service.tracking import review
from service.training.resident import ResidentModel
from service.training.rundir import CALIBRATION, CHECKPOINTS, RUN_FILE, check_run_dir, latest_checkpoint
from service.training.rungs import Rung, rung_schedule
from service.training.task import held_out_items
from service.training.trainer import TrainResult, rate_record, train

CALIBRATION_JSON = "calibration.json"
FINALISTS = 2  # multipliers of the last rung

T = TypeVar("T")


@dataclass
class Trial:
    """One multiplier trained to one rung's step and scored on the calibration items."""

    multiplier: float
    steps: int
    score: float | None  # None: the training broke down (`failed` says how)
    item_scores: list[float]
    seconds: float
    failed: str | None = None

    @property
    def key(self) -> str:
        return f"x{self.multiplier:g}@{self.steps}"

    def rank_key(self) -> tuple[bool, float, float]:
        """Best first: scored before failed, higher score, then the lower multiplier."""
        return (self.score is None, -(self.score or 0.0), self.multiplier)


@dataclass
class Calibration:
    """The ladder's race as far as it went (see the module)."""

    ladder: list[float]
    items: int
    steps: int
    max_steps: int
    rungs: list[Rung]
    base_score: float | None = None
    base_items: list[float] = field(default_factory=list)
    base_seconds: float = 0.0
    trials: list[Trial] = field(default_factory=list)
    chosen: float | None = None
    warnings: list[str] = field(default_factory=list)

    def trial(self, multiplier: float, steps: int) -> Trial | None:
        return next((t for t in self.trials if t.multiplier == multiplier and t.steps == steps), None)

    @property
    def seconds(self) -> float:
        return self.base_seconds + sum(t.seconds for t in self.trials)

    @property
    def extra_steps(self) -> int:
        """Optimizer steps spent beyond the winner's run, which the final training continues."""
        reached: dict[float, int] = {}
        for t in self.trials:
            reached[t.multiplier] = max(reached.get(t.multiplier, 0), t.steps)
        return sum(steps for m, steps in reached.items() if m != self.chosen)

    def intervals(self) -> dict[str, Interval]:
        """95 % intervals of every score, by a paired bootstrap over the calibration items."""
        rows = {"base": self.base_items, **{t.key: t.item_scores for t in self.trials if t.item_scores}}
        count = len(self.base_items)
        if not count or any(len(values) != count for values in rows.values()):
            return {}
        return {key: percentiles(means) for key, means in resampled_means(rows).items()}

    def to_json(self) -> dict[str, Any]:
        return CALIBRATION_FIELDS.json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        scores = data.get("itemScores") or {}
        trials = [
            Trial(
                multiplier=float(t["multiplier"]),
                steps=int(t["steps"]),
                score=t.get("score"),
                item_scores=list(scores.get(f"x{float(t['multiplier']):g}@{int(t['steps'])}", [])),
                seconds=float(t.get("seconds") or 0.0),
                failed=t.get("failed"),
            )
            for t in data.get("trials", [])
        ]
        return cls(
            ladder=[float(m) for m in data["ladder"]],
            items=int(data["items"]),
            steps=int(data["steps"]),
            max_steps=int(data["maxSteps"]),
            rungs=[Rung(steps=int(r["steps"]), layers=int(r["multipliers"])) for r in data["rungs"]],
            base_score=(data.get("base") or {}).get("score"),
            base_items=list(scores.get("base", [])),
            base_seconds=float((data.get("base") or {}).get("seconds") or 0.0),
            trials=trials,
            chosen=data.get("chosen"),
            warnings=list(data.get("warnings", [])),
        )


def _trials_json(calibration: Calibration) -> list[dict[str, Any]]:
    spans = calibration.intervals()
    return [
        {
            "multiplier": t.multiplier,
            "steps": t.steps,
            "score": t.score,
            "interval": spans.get(t.key),
            "seconds": round(t.seconds, 2),
            "failed": t.failed,
        }
        for t in calibration.trials
    ]


CALIBRATION_FIELDS: Fields[Calibration] = Fields(
    {
        "ladder": ("the multipliers raced (`training.calibration.multipliers`)", lambda c: c.ladder),
        "items": ("calibration items: the last rows (or episodes) of the training split", lambda c: c.items),
        "steps": ("the step of the last rung", lambda c: c.steps),
        "maxSteps": (
            "the steps every calibration run is scheduled for (the training's)",
            lambda c: c.max_steps,
        ),
        "rungs": (
            "the schedule: each rung's `steps` and how many `multipliers` train to it",
            lambda c: [{"steps": r.steps, "multipliers": r.layers} for r in c.rungs],
        ),
        "base": (
            "the base model on the calibration items: `score`, its 95 % `interval`, `seconds`",
            lambda c: {
                "score": c.base_score,
                "interval": c.intervals().get("base"),
                "seconds": round(c.base_seconds, 2),
            },
        ),
        "trials": (
            "every multiplier at every rung it reached: `multiplier`, `steps`, `score` (null when it "
            "`failed`, with why), its 95 % `interval` (paired bootstrap over the items), `seconds`",
            _trials_json,
        ),
        "chosen": ("the multiplier the run trains at, null until the race is over", lambda c: c.chosen),
        "warnings": ("what a person must know about the choice", lambda c: c.warnings),
        "seconds": ("wall time of the calibration's trainings and scoring", lambda c: round(c.seconds, 2)),
        "extraSteps": (
            "optimizer steps of the multipliers not chosen (the winner's are the training's first)",
            lambda c: c.extra_steps,
        ),
        "itemScores": (
            "per-item scores of `base` and of every trial (`x3@10`), for the intervals",
            lambda c: {"base": c.base_items, **{t.key: t.item_scores for t in c.trials}},
        ),
    }
)
"""Every field of `calibration.json` (the reference is generated from this)."""

CALIBRATION_METRICS: dict[str, str] = {
    "calibration/multiplier": "the multiplier `auto` chose",
    "calibration/base_score": "the base model's score on the calibration items",
    "calibration/score_x<M>": "multiplier M's score on the calibration items at the furthest rung it reached",
    "calibration/seconds": "wall time of the calibration",
    "calibration/extra_steps": "optimizer steps of the multipliers not chosen",
}
"""The metric names the training run records for `auto` (the reference lists them)."""


def train_layers(
    spec: LayerAdaptationSpec,
    layers: Sequence[int],
    out_dir: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: Progress = SILENT,
    record: Record | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train `layers` at the spec's learning rate: its multiplier, or with `auto` the one a
    calibration chooses first (see the module). Arguments as `service.training.trainer.train`."""
    if not spec.training.auto_rate:
        result = train(
            spec,
            layers,
            out_dir,
            resume=resume,
            max_steps=max_steps,
            progress=progress,
            record=record,
            device=device,
        )
        _tag_rate(record, result)
        return result
    steps = max_steps or spec.training.max_steps
    held_out = spec.training.calibration.items
    items = held_out_items(spec, held_out)  # too few training items: refused before anything loads
    check_run_dir(out_dir, spec, list(layers), resume=resume)
    resident = ResidentModel() if world_size() == 1 else None
    calibration = calibrate(
        spec, layers, out_dir, items, max_steps=steps, progress=progress, resident=resident, device=device
    )
    assert calibration.chosen is not None
    result = train(
        spec,
        layers,
        out_dir,
        resume=True,  # the winner's checkpoint, or the final run's own after an interruption
        max_steps=steps,
        progress=progress,
        record=record,
        device=device,
        learning_rate=spec.algorithm.learning_rate * calibration.chosen,
        held_out=held_out,
        calibration=_summary(calibration),
        resident=resident,
    )
    result.warnings[:0] = calibration.warnings
    if record is not None and is_main():
        record_calibration(record, calibration, out_dir / CALIBRATION / CALIBRATION_JSON)
    _tag_rate(record, result)
    return result


def _tag_rate(record: Record | None, result: TrainResult) -> None:
    """The multiplier trained at, as a tag the operator reads into the resource's status."""
    multiplier = result.learning_rate.get("multiplier")
    if record is not None and is_main() and multiplier is not None:
        record.set_tags({review.LR_MULTIPLIER: f"{float(multiplier):g}"})


def calibrate(
    spec: LayerAdaptationSpec,
    layers: Sequence[int],
    out_dir: Path,
    items: list[Any],
    *,
    max_steps: int,
    progress: Progress = SILENT,
    resident: ResidentModel | None = None,
    device: str | None = None,
) -> Calibration:
    """Race the ladder into `out_dir/calibration` (continuing what is there), scored on `items` (the
    spec's `held_out_items`), and choose; the winner's checkpoint is left in `out_dir` for the
    training to continue. A calibration already chosen is returned as it is."""
    root = out_dir / CALIBRATION
    path = root / CALIBRATION_JSON
    calibration = _read(path, spec, max_steps)
    if calibration.chosen is not None:
        progress.note(f"learning rate: ×{calibration.chosen:g}, chosen by the calibration in {root}")
        return calibration
    ladder = " ".join(f"×{m:g}" for m in calibration.ladder)
    progress.note(
        f"calibrating the learning rate of layers {list(layers)}: {ladder}, "
        + " → ".join(f"{r.layers} to step {r.steps}" for r in calibration.rungs)
        + f", scored on {len(items)} items held out from training and evaluation"
    )
    if calibration.base_score is None:
        started = time.perf_counter()
        base = _on_main(lambda: score(spec, None, resident, items=items, progress=progress))
        calibration.base_score = base.score if base else None
        calibration.base_items = base.item_scores if base else []
        calibration.base_seconds = time.perf_counter() - started
        _save(path, calibration)
    survivors = list(calibration.ladder)
    finalists: list[Trial] = []
    for r, rung in enumerate(calibration.rungs):
        finalists = []
        for multiplier in survivors:
            trial = calibration.trial(multiplier, rung.steps)
            if trial is None:
                trial = _run_trial(
                    spec, layers, root, multiplier, rung.steps, max_steps, items, resident, progress, device
                )
                calibration.trials.append(trial)
                _save(path, calibration)
                progress.note(
                    f"×{multiplier:g} to step {rung.steps}: "
                    + (f"score {trial.score:.4f}" if trial.score is not None else f"failed ({trial.failed})")
                )
            finalists.append(trial)
        finalists.sort(key=Trial.rank_key)
        if r + 1 < len(calibration.rungs):
            survivors = sorted(t.multiplier for t in finalists[: calibration.rungs[r + 1].layers])
    chosen = _choose(calibration, finalists)
    _on_main(lambda: _settle(spec, calibration, root, out_dir))  # the other ranks wait for the copy
    for text in calibration.warnings:
        progress.note(f"warning: {text}")
    progress.note(f"learning rate: ×{chosen:g} ({spec.algorithm.learning_rate * chosen:g})")
    return calibration


def _choose(calibration: Calibration, finalists: list[Trial]) -> float:
    """The best finalist; a ladder that failed or only made things worse is said so."""
    best = finalists[0]
    lowest = calibration.ladder[0]
    if best.score is None:
        reasons = "; ".join(f"×{t.multiplier:g}: {t.failed}" for t in finalists)
        raise LayerpilotError(
            f"every learning-rate multiplier failed to train ({reasons}); lower "
            "training.calibration.multipliers or algorithm.learningRate"
        )
    calibration.chosen = best.multiplier
    base = calibration.base_score
    if base is not None and best.score is not None and best.score < base:
        calibration.chosen = lowest
        calibration.warnings.append(
            f"every multiplier raced lowered the calibration score below the base model's ({base:.3f}; "
            f"the best, ×{best.multiplier:g}, scored {best.score:.3f}): trained at the ladder's lowest, "
            f"×{lowest:g}; "
            "lower training.calibration.multipliers or algorithm.learningRate, or check the rewards"
        )
    elif best.multiplier == calibration.ladder[-1] and len(calibration.ladder) > 1:
        calibration.warnings.append(
            f"the ladder's highest multiplier, ×{best.multiplier:g}, won: a higher one may be better still; "
            "extend training.calibration.multipliers upward to find out"
        )
    return calibration.chosen


def _run_trial(
    spec: LayerAdaptationSpec,
    layers: Sequence[int],
    root: Path,
    multiplier: float,
    stop_at: int,
    max_steps: int,
    items: Sequence[Any],
    resident: ResidentModel | None,
    progress: Progress,
    device: str | None,
) -> Trial:
    """Train (or continue) one multiplier's run to `stop_at` and score it on the calibration items."""
    run_dir = root / _run_name(multiplier)
    started = time.perf_counter()
    try:
        train(
            spec,
            layers,
            run_dir,
            resume=True,
            max_steps=max_steps,
            stop_at=stop_at,
            learning_rate=spec.algorithm.learning_rate * multiplier,
            held_out=len(items),
            resident=resident,
            progress=progress,
            device=device,
        )
        result = _on_main(lambda: score(spec, run_dir, resident, items=list(items), progress=progress))
    except RuntimeError as error:  # e.g. "probability tensor contains either inf, nan" in sampling
        if isinstance(error, torch.OutOfMemoryError):
            raise
        return Trial(
            multiplier, stop_at, None, [], time.perf_counter() - started, failed=first_line(str(error))
        )
    finally:
        if resident is not None:
            resident.restore()
    assert result is not None
    return Trial(multiplier, stop_at, result.score, result.item_scores, time.perf_counter() - started)


def _settle(spec: LayerAdaptationSpec, calibration: Calibration, root: Path, out_dir: Path) -> None:
    """Copy the winner's run where the training continues it, record the choice (a resumed training
    never races again), and drop the race's weights."""
    assert calibration.chosen is not None
    _continue_from(root / _run_name(calibration.chosen), out_dir)
    meta = out_dir / PATCH_META
    if meta.is_file():  # the copy says how its rate was chosen, also when it ran all the steps
        data = json.loads(meta.read_text())
        rate = spec.algorithm.learning_rate * calibration.chosen
        data["learningRate"] = rate_record(spec, rate, _summary(calibration))
        write_json(meta, data)
    _save(root / CALIBRATION_JSON, calibration)
    for run_dir in root.iterdir():
        if run_dir.is_dir():
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
            (run_dir / PATCH_TENSORS).unlink(missing_ok=True)


def _continue_from(run_dir: Path, out_dir: Path) -> None:
    """The winner's newest checkpoint and patch, where the training continues them."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return
    target = out_dir / CHECKPOINTS / checkpoint.name
    if not target.exists():
        shutil.copytree(checkpoint, target.with_name(target.name + ".partial"))
        target.with_name(target.name + ".partial").rename(target)
    for name in (*PATCH_FILES, RUN_FILE):  # a winner that ran all steps is the finished training
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)


def _run_name(multiplier: float) -> str:
    return f"x{multiplier:g}"


def _read(path: Path, spec: LayerAdaptationSpec, max_steps: int) -> Calibration:
    settings = spec.training.calibration
    steps = spec.training.calibration_steps(max_steps)
    if path.is_file():
        found = Calibration.from_json(json.loads(path.read_text()))
        if (found.ladder, found.items, found.steps, found.max_steps) == (
            settings.multipliers,
            settings.items,
            steps,
            max_steps,
        ):
            return found
        raise LayerpilotError(
            f"{path} holds a calibration of other settings (ladder {found.ladder}, {found.items} items, "
            f"{found.steps} of {found.max_steps} steps); resume with the same spec and --max-steps, or use "
            "a new --out"
        )
    schedule = rung_schedule(len(settings.multipliers), steps, FINALISTS)
    return Calibration(settings.multipliers, settings.items, steps, max_steps, schedule)


def _save(path: Path, calibration: Calibration) -> None:
    if is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, calibration.to_json())


def _summary(calibration: Calibration) -> dict[str, Any]:
    """What the patch and the training result say about the choice (the whole race: calibration.json)."""
    data = calibration.to_json()
    data.pop("itemScores")
    return data


def record_calibration(record: Record, calibration: Calibration, path: Path) -> None:
    """The choice as a tag, the race as metrics and `calibration.json` as an artifact."""
    furthest: dict[float, Trial] = {}
    for t in calibration.trials:
        if t.score is not None and (t.multiplier not in furthest or t.steps > furthest[t.multiplier].steps):
            furthest[t.multiplier] = t
    metrics = {
        "calibration/multiplier": calibration.chosen,
        "calibration/seconds": round(calibration.seconds, 2),
        "calibration/extra_steps": calibration.extra_steps,
        **({"calibration/base_score": calibration.base_score} if calibration.base_score is not None else {}),
        **{f"calibration/score_x{m:g}": t.score for m, t in furthest.items()},
    }
    record.log_metrics(metrics)
    if path.is_file():
        record.add_artifact(path, "calibration")


def _on_main(work: Callable[[], T]) -> T | None:
    """`work` done by the main process; under a distributed launch every rank gets its result."""
    value = work() if is_main() else None
    if world_size() > 1:
        from accelerate import PartialState  # joins the launcher's process group, as the trainer does

        PartialState()
        shared = [value]
        torch.distributed.broadcast_object_list(shared, src=0)
        value = shared[0]
    return value
