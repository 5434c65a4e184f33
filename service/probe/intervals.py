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

from service.bootstrap import LEVEL, RESAMPLES, Interval, percentiles, resampled_means

METHOD = {"method": "paired bootstrap over eval items", "level": LEVEL, "resamples": RESAMPLES}


def paired_intervals(
    items: Mapping[str, Sequence[float] | Sequence[Sequence[float]]], seed: int = 0
) -> dict[str, dict[str, Interval | None]]:
    """Per unit (`base`, `full`, layer indices as strings): `score` and `contribution` intervals.

    `items` holds each unit's per-item scores, in the same item order: one list, or one list per
    seed (every unit with several rows has the same number). `contribution` is None for `base` and
    `full`, and when the full-model gain is zero in most resamples (C is undefined there).
    """
    means = resampled_means(items, seed)
    gain = means["full"] - means["base"]
    defined = gain != 0
    out: dict[str, dict[str, Interval | None]] = {}
    for unit, resampled in means.items():
        contribution = None
        if unit not in ("base", "full") and defined.mean() >= LEVEL:
            ratios = (resampled[defined] - means["base"][defined]) / gain[defined]
            contribution = percentiles(ratios)
        out[unit] = {"score": percentiles(resampled), "contribution": contribution}
    return out


def overlap(a: Interval | None, b: Interval | None) -> bool:
    """Whether two intervals share any value (unknown intervals count as overlapping).

    >>> overlap((0.1, 0.3), (0.25, 0.5)), overlap((0.1, 0.2), (0.3, 0.4))
    (True, False)
    """
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])
