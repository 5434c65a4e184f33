"""One entry point for every probe mode: run it, select layers, write the report.

A spec with `probe.reuse` takes a finished probe's report instead (`service.probe.reuse`).
Exact mode runs the research protocol (`service.probe.exact`), `halving` the same runs by
successive halving (`service.probe.halving`); `gradient` and `spectrum` are fast proxies
(`service.probe.proxies`). Whatever the mode, the result is a `ProbeReport` written as
`probe_report.json` and `probe_report.png` in the probe directory, and recorded in the probe's
record when there is one (`service.probe.recorded`).
"""

from __future__ import annotations

from pathlib import Path

from service.errors import InputError
from service.probe.chart import write_report
from service.probe.exact import run_exact
from service.probe.fast import run_proxy
from service.probe.halving import run_halving
from service.probe.recorded import record_probe
from service.probe.report import REPORT_JSON, ProbeReport, read_report
from service.probe.reuse import check_no_mode, reuse_into
from service.progress import SILENT, Progress
from service.record import Record
from service.spec.models import LayerAdaptationSpec, ProbeMode


def run_probe(
    spec: LayerAdaptationSpec,
    out_dir: Path,
    *,
    mode: str | None = None,
    parallel: int | None = None,
    keep_runs: bool = False,
    progress: Progress = SILENT,
    record: Record | None = None,
) -> ProbeReport:
    """Probe in the spec's mode (or `mode`), select layers, write probe_report.json and .png, and
    record the answer in `record` (the probe directory's record).

    A spec that reuses a profile (`probe.reuse`) probes nothing: the profile is checked and kept.
    """
    check_probe_dir(out_dir, spec)
    if spec.probe.reuse is not None:
        check_no_mode(spec, mode)
        return reuse_into(spec, out_dir, record=record, progress=progress)
    mode = mode or spec.probe.mode
    if mode == ProbeMode.exact.value:
        report = run_exact(spec, out_dir, parallel=parallel, keep_runs=keep_runs, progress=progress)
    elif mode == ProbeMode.halving.value:
        report = run_halving(spec, out_dir, parallel=parallel, keep_runs=keep_runs, progress=progress)
    elif mode in (ProbeMode.gradient.value, ProbeMode.spectrum.value, ProbeMode.knockout.value):
        report = run_proxy(spec, mode, progress=progress)
    else:
        raise InputError(
            "--mode", f"'{mode}' is not a probe mode", "use exact, halving, gradient, spectrum or knockout"
        )
    write_report(report, out_dir)
    if record is not None:
        record_probe(record, report, out_dir)
    return report


def check_probe_dir(out_dir: Path, spec: LayerAdaptationSpec) -> None:
    """A probe directory holds one model's probe: refuse to overwrite another model's report."""
    if not (out_dir / REPORT_JSON).is_file():
        return
    try:
        previous = read_report(out_dir / REPORT_JSON, "--out").model
    except InputError:
        return  # not a report we can read: nothing of ours to protect
    if previous != spec.model.uri:
        raise InputError(
            "--out",
            f"{out_dir} holds a probe of {previous}, not of {spec.model.uri}",
            "choose another --out directory (or remove the old probe)",
        )
