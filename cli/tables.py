"""Tables: one borderless style for every command, and the per-layer probe table."""

from __future__ import annotations

import math

from rich.table import Table

from cli.console import score
from service.probe.report import RL_MODES, ProbeReport
from service.spec.models import ProbeMode


def plain_table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A borderless table whose text columns fold rather than push the table past the width."""
    table = Table(box=None, padding=(0, 2), pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        if column in right:
            table.add_column(column, justify="right", no_wrap=True)
        else:
            table.add_column(column, overflow="fold")
    return table


def probe_heading(report: ProbeReport) -> str:
    """What the table shows, as a line of its own (a table title would wrap to the table's width)."""
    heading = f"{report.mode} probe of {report.model}: selected layers {report.selected} ({report.strategy})"
    if report.reused_from is None:
        return heading
    return f"{heading}\nreused, not probed: the {report.describe()}"


def layer_table(report: ProbeReport) -> Table:
    """One row per probed layer: score (S_k after RL), C(k), rank; selected layers marked `*`.

    Halving adds the steps each layer trained (the layers it cut early have fewer and no C(k)).
    """
    exact = report.mode in RL_MODES
    spans = exact and any(item.score_interval for item in report.layers)
    steps = report.mode == ProbeMode.halving.value
    columns: tuple[str, ...] = ("layer", "S_k", "C(k)", "rank") if exact else ("layer", "score", "rank")
    if spans:
        columns = ("layer", "S_k", "C(k)", "C(k) 95 % interval", "rank")
    if steps:
        columns = ("layer", "steps", *columns[1:])
    table = plain_table(*columns, right=columns)
    layers = sorted(report.layers, key=lambda item: item.index)
    shown = dict(
        zip((x.index for x in layers), distinct([x.score for x in layers], fixed=exact), strict=True)
    )
    for layer in layers:
        mark = " *" if layer.index in report.selected else "  "
        row = [f"{layer.index}{mark}"]
        if steps:
            row.append(f"{layer.details.get('steps', math.nan):.0f}")
        row.append(shown[layer.index])
        if exact:
            row.append(score(layer.contribution, 3))
        if spans:
            span = layer.contribution_interval
            row.append(f"{span[0]:.2f} … {span[1]:.2f}" if span else "-")
        row.append(str(layer.rank))
        table.add_row(*row)
    return table


def distinct(values: list[float], *, fixed: bool) -> list[str]:
    """Scores with as many digits as it takes for different values to print differently (a proxy's
    scores can differ in the sixth digit); `fixed`: four decimals, as eval scores always are.

    >>> distinct([1.23456e-5, 1.23459e-5, 2e-5], fixed=False)
    ['1.23456e-05', '1.23459e-05', '2.00000e-05']
    >>> distinct([0.5, 0.25], fixed=True), distinct([0.5, 0.5], fixed=False)
    (['0.5000', '0.2500'], ['5.000e-01', '5.000e-01'])
    """
    if fixed:
        return [score(value) for value in values]
    different = len({value for value in values if value == value})
    for digits in range(3, 12):
        shown = [f"{value:.{digits}e}" for value in values]
        if len({text for text, value in zip(shown, values, strict=True) if value == value}) == different:
            return shown
    return shown
