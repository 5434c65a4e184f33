"""Paired bootstrap over scored items: one resample of the items applied to every row at once.

The probe's intervals (`service.probe.intervals`) and the learning-rate race's
(`service.calibration`) both score several models on the same items; resampling the items once for
all of them keeps what the items have in common out of the differences. With several seeds per
row, every resample also draws the seeds with replacement (the same draw for every row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95

Interval = tuple[float, float]


def resampled_means(
    items: Mapping[str, Sequence[float] | Sequence[Sequence[float]]], seed: int = 0
) -> dict[str, np.ndarray]:
    """`RESAMPLES` bootstrap means per key, every key resampled with the same draws.

    `items` holds each key's per-item scores, in the same item order: one list, or one list per
    seed (every key with several rows has the same number).
    """
    scores = {key: np.atleast_2d(np.asarray(values, dtype=float)) for key, values in items.items()}
    counts = {values.shape[1] for values in scores.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError("every unit must be scored on the same eval items")
    seeds = {values.shape[0] for values in scores.values() if values.shape[0] > 1}
    if len(seeds) > 1:
        raise ValueError("every unit run with several seeds must have the same number of them")
    count = counts.pop()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, count, size=(RESAMPLES, count))
    picks = rng.integers(0, max(seeds, default=1), size=(RESAMPLES, max(seeds, default=1)))
    return {key: _resampled(values, draws, picks) for key, values in scores.items()}


def _resampled(values: np.ndarray, draws: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """One mean per resample: over the drawn items of each seed's row, then over the drawn seeds."""
    rows: np.ndarray = np.stack([row[draws].mean(axis=1) for row in values])  # (seeds, resamples)
    if len(rows) == 1:
        return np.asarray(rows[0])
    return np.asarray(rows[picks, np.arange(len(draws))[:, None]].mean(axis=1))


def percentiles(values: np.ndarray) -> Interval:
    """The central `LEVEL` interval of resampled values."""
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return round(float(low), 6), round(float(high), 6)
