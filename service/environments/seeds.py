"""Which episodes train and which evaluate: seeds, and with a dataset, the rows they play.

Training episodes use seeds `trainSeed`, `trainSeed + 1`, …; evaluation episodes `evalSeed`, … —
two ranges that never overlap, so an evaluation grid is never one the policy trained on. With a
dataset, its training rows pair with training seeds and its evaluation rows with evaluation seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from service.data import Row, split_rows
from service.errors import InputError
from service.spec.models import DatasetSpec, EnvironmentSpec, ranges_overlap


@dataclass(frozen=True)
class EpisodeStart:
    """The seed an episode starts from, and the dataset row it plays (if any)."""

    seed: int
    row: Row | None = None

    def as_row(self, uri: str) -> Row:
        """The row TRL's dataset holds for it (`prompt` is only a label in TRL's logs)."""
        return {
            "prompt": f"{uri} seed {self.seed}",
            "seed": self.seed,
            "episode_row": json.dumps(self.row) if self.row is not None else "",
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EpisodeStart:
        given = row.get("episode_row")
        return cls(seed=int(row["seed"]), row=json.loads(given) if given else None)


def episode_starts(
    environment: EnvironmentSpec, dataset: DatasetSpec | None, split: Literal["train", "eval"]
) -> list[EpisodeStart]:
    """The training or evaluation episodes of a spec."""
    if dataset is None:
        train_seeds, eval_seeds = environment.seeds()
        return [EpisodeStart(seed) for seed in (train_seeds if split == "train" else eval_seeds)]
    train, evaluation = split_rows(dataset)
    train_seeds, eval_seeds = environment.seeds(len(train), len(evaluation))
    if ranges_overlap(train_seeds, eval_seeds):
        raise InputError(
            "environment.evalSeed",
            f"the {len(evaluation)} evaluation rows play seeds {eval_seeds.start}…{eval_seeds.stop - 1}, "
            f"which overlap the training rows' seeds {train_seeds.start}…{train_seeds.stop - 1}",
            f"set evalSeed to {train_seeds.stop} or more",
        )
    rows, seeds = (train, train_seeds) if split == "train" else (evaluation, eval_seeds)
    return [EpisodeStart(seed, row) for seed, row in zip(seeds, rows, strict=True)]
