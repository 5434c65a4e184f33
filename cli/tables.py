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
    return f"{report.mode} probe of {report.model}: selected layers {report.selected} ({report.strategy})"


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
    for layer in sorted(report.layers, key=lambda item: item.index):
        mark = " *" if layer.index in report.selected else "  "
        row = [f"{layer.index}{mark}"]
        if steps:
            row.append(f"{layer.details.get('steps', math.nan):.0f}")
        row.append(score(layer.score))
        if exact:
            row.append(score(layer.contribution, 3))
        if spans:
            span = layer.contribution_interval
            row.append(f"{span[0]:.2f} … {span[1]:.2f}" if span else "-")
        row.append(str(layer.rank))
        table.add_row(*row)
    return table
