"""Progress a person and a log can follow: the CLI's side of `service.progress.Progress`.

On a terminal each phase gets its own bar when it starts (never a bar waiting on another phase),
left on screen when it ends. When stderr is not a terminal (a file, CI, a Kubernetes pod), each
phase writes a line when it starts and ends, and a line of its state every few seconds in between
(`LAYERPILOT_PROGRESS_SECONDS`, default 10).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column

from cli.console import err
from service.progress import SILENT, UNITS, Phase
from service.progress import Progress as ProgressSink
from service.ranks import is_main

INTERVAL_ENV = "LAYERPILOT_PROGRESS_SECONDS"


def _clock(seconds: float) -> str:
    """
    >>> _clock(75.2), _clock(3700)
    ('0:01:15', '1:01:40')
    """
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class TerminalProgress:
    """One rich bar per phase on stderr; notes print above the bar that is running."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars: dict[Phase, tuple[Progress, TaskID]] = {}

    def start(self, phase: Phase, total: int | None = None) -> None:
        self.finish(phase)
        bar = Progress(
            TextColumn("{task.description:<5}"),
            BarColumn(bar_width=20),
            TextColumn("{task.completed}/{task.total} {task.fields[unit]}" if total else ""),
            TimeElapsedColumn(),
            TextColumn(
                "{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)
            ),
            console=self.console,
            transient=False,
        )
        bar.start()
        self.bars[phase] = (bar, bar.add_task(phase, total=total, unit=UNITS[phase], info=""))

    def update(self, phase: Phase, done: int, info: str = "") -> None:
        if phase in self.bars:
            bar, task = self.bars[phase]
            bar.update(task, completed=done, info=info)

    def note(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def finish(self, phase: Phase, info: str = "") -> None:
        if phase not in self.bars:
            return
        bar, task = self.bars.pop(phase)
        total = bar.tasks[0].total
        bar.update(task, completed=total if total is not None else bar.tasks[0].completed, info=info)
        bar.stop()

    def close(self) -> None:
        for phase in list(self.bars):
            bar, _ = self.bars.pop(phase)
            bar.stop()


class LogProgress:
    """Plain lines for logs: `train: 20/60 steps · 0:00:10 · reward 0.512`, at most every `interval` s."""

    def __init__(self, console: Console, interval: float) -> None:
        self.console = console
        self.interval = interval
        self.started: dict[Phase, float] = {}
        self.last_line: dict[Phase, float] = {}
        self.totals: dict[Phase, int | None] = {}

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, phase: Phase, total: int | None = None) -> None:
        now = time.monotonic()
        self.started[phase] = self.last_line[phase] = now
        self.totals[phase] = total
        self._line(f"{phase}: started" + (f", {total} {UNITS[phase]}" if total else ""))

    def update(self, phase: Phase, done: int, info: str = "") -> None:
        now = time.monotonic()
        if now - self.last_line.get(phase, 0.0) < self.interval:
            return
        self.last_line[phase] = now
        total = self.totals.get(phase)
        count = f"{done}/{total} {UNITS[phase]} · " if total else ""
        elapsed = _clock(now - self.started.get(phase, now))
        self._line(f"{phase}: {count}{elapsed}" + (f" · {info}" if info else ""))

    def note(self, message: str) -> None:
        self._line(message)

    def finish(self, phase: Phase, info: str = "") -> None:
        if phase not in self.started:
            return
        elapsed = _clock(time.monotonic() - self.started.pop(phase))
        self._line(f"{phase}: done in {elapsed}" + (f" · {info}" if info else ""))

    def close(self) -> None:
        pass


def log_interval() -> float:
    raw = os.environ.get(INTERVAL_ENV, "10")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return 10.0


@contextmanager
def progress_display(console: Console = err) -> Iterator[ProgressSink]:
    """The display for this process's stderr: bars on a terminal, plain lines otherwise.

    Under a distributed launch only the main process shows progress (every rank runs the command).
    """
    if not is_main():
        yield SILENT
        return
    display = TerminalProgress(console) if console.is_terminal else LogProgress(console, log_interval())
    try:
        yield display
    finally:
        display.close()
