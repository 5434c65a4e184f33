"""Successive halving's schedule: rungs of doubling steps, each keeping the better half.

The halving probe races layers through it, and `learningRateMultiplier: auto` races multipliers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    steps: int  # the step of the probe's schedule its layers train to
    layers: int  # how many layers it trains


def rung_schedule(candidates: int, steps: int, finalists: int, rungs: int | None = None) -> list[Rung]:
    """The rungs for `candidates` layers: steps double up to `steps`, layers halve down to `finalists`.

    By default there are just enough rungs to leave `finalists` layers for the last one, as long as
    the first rung still trains at least one step.

    >>> def shown(schedule): return [(rung.steps, rung.layers) for rung in schedule]
    >>> shown(rung_schedule(30, 20, 2))
    [(2, 30), (3, 15), (5, 8), (10, 4), (20, 2)]
    >>> shown(rung_schedule(6, 20, 2)), shown(rung_schedule(6, 20, 2, rungs=2))
    ([(5, 6), (10, 3), (20, 2)], [(10, 6), (20, 3)])
    >>> shown(rung_schedule(2, 20, 2))
    [(20, 2)]
    """
    needed = 1 + max(0, math.ceil(math.log2(candidates / finalists))) if candidates > finalists else 1
    count = min(rungs or needed, 1 + int(math.log2(steps)))
    schedule, layers = [], candidates
    for r in range(count):
        schedule.append(Rung(steps=math.ceil(steps / 2 ** (count - 1 - r)), layers=layers))
        layers = max(min(finalists, layers), math.ceil(layers / 2))
    return schedule
