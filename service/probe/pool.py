"""Running probe units: one by one in this process, or in a pool of worker processes whose status
lines come back through a queue, on one board of what is finished and what each unit is doing.

Exact and halving probes both run their units here (`UnitRunner`); a unit itself is
`service.probe.units.run_unit`.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from service.errors import LayerpilotError, first_line
from service.probe.units import PARTIALS, Unit, run_unit
from service.progress import Phase, Progress
from service.ranks import world_size
from service.spec.loading import parse_spec
from service.spec.models import LayerAdaptationSpec
from service.training.resident import ResidentModel

StatusSink = Callable[[Unit, str], None]


class UnitStatus:
    """A `Progress` for one unit's own `train` and `eval` phases, relayed as one line of status."""

    def __init__(self, unit: Unit, send: StatusSink) -> None:
        self.unit = unit
        self.send = send
        self.totals: dict[str, int | None] = {}

    def start(self, phase: Phase, total: int | None = None) -> None:
        self.totals[phase] = total
        self.send(self.unit, f"{self.unit.label} {phase}")

    def update(self, phase: Phase, done: int, info: str = "") -> None:
        total = self.totals.get(phase)
        text = f"{self.unit.label} {phase} {done}/{total}" if total else f"{self.unit.label} {phase}"
        self.send(self.unit, f"{text} {info}".rstrip())

    def note(self, message: str) -> None:
        pass

    def finish(self, phase: Phase, info: str = "") -> None:
        pass


class ProbeBoard:
    """The probe phase as a display sees it: units finished, and what each running unit is doing."""

    def __init__(self, progress: Progress, total: int, done: int) -> None:
        self.progress = progress
        self.total = total
        self.done = done
        self.running: dict[Unit, tuple[str, float]] = {}

    def status(self, unit: Unit, text: str) -> None:
        started = self.running.get(unit, ("", time.monotonic()))[1]
        self.running[unit] = (text, started)
        self._show()

    def finished(self, unit: Unit, record: dict[str, Any]) -> None:
        self.running.pop(unit, None)
        self.done += 1
        self.progress.note(
            f"probe [{self.done}/{self.total}] {unit.label}: score {float(record['score']):.4f} "
            f"({float(record['seconds']):.0f}s)"
        )
        self._show()

    def _show(self) -> None:
        now = time.monotonic()
        info = " · ".join(f"{text} ({now - started:.0f}s)" for text, started in self.running.values())
        self.progress.update("probe", self.done, info)


# Set in each pool worker by `_init_worker`: where its unit's status lines go, and the model it
# keeps loaded from one unit to the next (None: every unit loads its own).
_worker_status: Any = None
_worker_model: ResidentModel | None = None


def _init_worker(threads: int, status: Any, *, keep_model: bool) -> None:
    global _worker_status, _worker_model
    torch.set_num_threads(threads)
    _worker_status = status
    _worker_model = ResidentModel() if keep_model else None


def _run_unit_in_worker(
    spec_json: dict[str, Any], unit: Unit, out_dir: str, *, keep_runs: bool
) -> dict[str, Any]:
    status = UnitStatus(unit, lambda u, text: _worker_status.put((u, text)))
    return run_unit(
        parse_spec(spec_json),
        unit,
        Path(out_dir),
        keep_runs=keep_runs,
        progress=status,
        resident=_worker_model,
    )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_parallelism(num_units: int) -> int:
    """One unit at a time on a GPU (they would share it); on CPU, one per two cores."""
    if torch.cuda.is_available():
        return 1
    return max(1, min(num_units, available_cores() // 2))


class UnitRunner:
    """Runs batches of units one by one, or in one pool of `workers` processes kept for every batch
    (halving's rungs reuse the workers' loaded libraries). One failure does not stop the others; the
    error names every failed unit of the batch.

    With `keep_model` (the default), each process, this one or a worker, loads the model once and
    trains it unit after unit, putting the base weights back in between (`ResidentModel`): the
    results are the same, without a model load per unit. Under a distributed launcher every unit
    loads its own, as the ranks' sharded models cannot be kept this way.
    """

    def __init__(
        self,
        spec: LayerAdaptationSpec,
        out_dir: Path,
        *,
        workers: int,
        keep_runs: bool,
        board: ProbeBoard,
        keep_model: bool = True,
    ) -> None:
        self.spec = spec
        self.out_dir = out_dir
        self.workers = workers
        self.keep_runs = keep_runs
        self.board = board
        self.keep_model = keep_model and world_size() == 1
        self.resident = ResidentModel() if self.keep_model else None
        self.pool: ProcessPoolExecutor | None = None
        self.status: Any = None
        self._threads_before: int | None = None

    def __enter__(self) -> UnitRunner:
        # Every unit gets its share of the cores, in a worker or in this process alike: torch's own
        # default counts the machine's cores, not the ones this process may use, and oversubscribes
        # a shared machine (a 3 s unit took 115 s).
        threads = max(1, available_cores() // self.workers)
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")  # fork after torch has threads is unsafe
            self.status = context.Queue()
            self.pool = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=functools.partial(_init_worker, keep_model=self.keep_model),
                initargs=(threads, self.status),
            )
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)  # units that run here (a batch of one, or no pool)
        return self

    def __exit__(self, *_: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.resident is not None:
            self.resident.release()
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)

    def run(self, todo: list[Unit]) -> None:
        if self.pool is not None and len(todo) > 1:
            failures = self._in_pool(todo)
        else:
            failures = {}
            for unit in todo:
                self.board.status(unit, unit.label)
                progress = UnitStatus(unit, self.board.status)
                record = run_unit(
                    self.spec,
                    unit,
                    self.out_dir,
                    keep_runs=self.keep_runs,
                    progress=progress,
                    resident=self.resident,
                )
                self.board.finished(unit, record)
        if failures:
            listed = ", ".join(f"{u} ({why})" for u, why in failures.items())
            raise LayerpilotError(
                f"probe units failed: {listed}; finished units are kept in {self.out_dir / PARTIALS} and "
                "the same command re-runs only the missing ones"
            )

    def _in_pool(self, todo: list[Unit]) -> dict[Unit, str]:
        """Units in the worker processes; their status lines come back through a queue as they run."""
        assert self.pool is not None
        spec_json = self.spec.model_dump(mode="json", by_alias=True)
        failures: dict[Unit, str] = {}
        pending: dict[Future[dict[str, Any]], Unit] = {
            self.pool.submit(
                _run_unit_in_worker, spec_json, u, str(self.out_dir), keep_runs=self.keep_runs
            ): u
            for u in todo
        }
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(self.status, self.board)
            for future in finished:
                unit = pending.pop(future)
                try:
                    self.board.finished(unit, future.result())
                except Exception as error:  # one failed layer must not lose the others
                    failures[unit] = first_line(error)
        return failures


def _drain(status: Any, board: ProbeBoard) -> None:
    while True:
        try:
            unit, text = status.get_nowait()
        except queue.Empty:
            return
        board.status(unit, text)
