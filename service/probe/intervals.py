"""How sure an exact probe is: 95 % intervals for S_k and C(k) by a paired bootstrap over eval items.

S_base, S_full and every S_k are scored on the same eval items, so one resample of the items (drawn
with replacement) is applied to all of them at once: what the items have in common cancels out of
the differences, and an interval says how much the figure would move on another draw of items of
the same kind. A layer whose outputs equal the base's on every item has a zero-width C(k) interval.

With several seeds (`probe.seeds`), each RL unit has one row of item scores per seed and its figure
is their mean; every resample then also draws the seeds with replacement (the same draw for every
unit, as seed J of every unit shares its data order), so the intervals cover seed-to-seed variation
of the RL runs as well. With one seed they cover the eval items only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
METHOD = {"method": "paired bootstrap over eval items", "level": LEVEL, "resamples": RESAMPLES}

Interval = tuple[float, float]


def paired_intervals(
    items: Mapping[str, Sequence[float] | Sequence[Sequence[float]]], seed: int = 0
) -> dict[str, dict[str, Interval | None]]:
    """Per unit (`base`, `full`, layer indices as strings): `score` and `contribution` intervals.

    `items` holds each unit's per-item scores, in the same item order: one list, or one list per
    seed (every unit with several rows has the same number). `contribution` is None for `base` and
    `full`, and when the full-model gain is zero in most resamples (C is undefined there).
    """
    scores = {unit: np.atleast_2d(np.asarray(values, dtype=float)) for unit, values in items.items()}
    count = scores["base"].shape[1]
    if any(values.shape[1] != count for values in scores.values()) or count == 0:
        raise ValueError("every unit must be scored on the same eval items")
    seeds = {values.shape[0] for values in scores.values() if values.shape[0] > 1}
    if len(seeds) > 1:
        raise ValueError("every unit run with several seeds must have the same number of them")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, count, size=(RESAMPLES, count))
    picks = rng.integers(0, max(seeds, default=1), size=(RESAMPLES, max(seeds, default=1)))
    means = {unit: _resampled(values, draws, picks) for unit, values in scores.items()}
    gain = means["full"] - means["base"]
    defined = gain != 0
    out: dict[str, dict[str, Interval | None]] = {}
    for unit, resampled in means.items():
        contribution = None
        if unit not in ("base", "full") and defined.mean() >= LEVEL:
            ratios = (resampled[defined] - means["base"][defined]) / gain[defined]
            contribution = _percentiles(ratios)
        out[unit] = {"score": _percentiles(resampled), "contribution": contribution}
    return out


def _resampled(values: np.ndarray, draws: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """One mean per resample: over the drawn items of each seed's row, then over the drawn seeds."""
    rows: np.ndarray = np.stack([row[draws].mean(axis=1) for row in values])  # (seeds, resamples)
    if len(rows) == 1:
        return np.asarray(rows[0])
    return np.asarray(rows[picks, np.arange(len(draws))[:, None]].mean(axis=1))


def _percentiles(values: np.ndarray) -> Interval:
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return round(float(low), 6), round(float(high), 6)


def overlap(a: Interval | None, b: Interval | None) -> bool:
    """Whether two intervals share any value (unknown intervals count as overlapping).

    >>> overlap((0.1, 0.3), (0.25, 0.5)), overlap((0.1, 0.2), (0.3, 0.4))
    (True, False)
    """
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])
