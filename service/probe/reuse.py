"""Profile once per base model: a job takes a finished probe's report instead of probing (`probe.reuse`).

Where the report comes from, as `probe.reuse` says:
- a path: a `probe_report.json`, a probe directory, or an `adapt` work directory (its `probe/`);
- `mlflow`: the newest finished probe of the same base in the spec's experiment, found by the
  weights fingerprint every probe run carries as a tag (`service.tracking.profiles`);
- `mlflow:RUN_ID`: that probe run's report.

A report is taken only for the same weights: its `baseFingerprint` must equal the base's, hashed
from the model's files (`--from-probe` makes the same check). This job's selection rule then picks
from the report's ranking, and the copy the job keeps (`probe_report.json` in its probe directory,
or in `train --out`) names where it came from and what it was measured on (`reusedFrom`, `task`).
A job run again keeps the copy it made, so a newer probe in MLflow never changes its layers half way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from service.errors import InputError
from service.models.weights import model_fingerprint
from service.probe.chart import write_report
from service.probe.recorded import record_probe
from service.probe.report import REPORT_JSON, ProbeReport, check_same_base, measured_on, read_report
from service.probe.selection import select_layers
from service.progress import SILENT, Progress
from service.record import Record
from service.spec.models import REUSE_MLFLOW, LayerAdaptationSpec
from service.tracking.profiles import StoredProfile, newest_profile, profile_of_run
from service.tracking.uris import ENV_TRACKING_URI, configured_tracking_uri

REUSE_FIELD = "spec.probe.reuse"
ADAPT_PROBE_DIR = "probe"  # where an `adapt` work directory keeps its probe


def reuse_into(
    spec: LayerAdaptationSpec,
    directory: Path,
    *,
    record: Record | None = None,
    progress: Progress = SILENT,
) -> ProbeReport:
    """The profile `spec.probe.reuse` names, written into `directory` and recorded in `record`."""
    return take_profile(reused_profile(spec, directory), directory, record=record, progress=progress)


def take_profile(
    report: ProbeReport, directory: Path, *, record: Record | None = None, progress: Progress = SILENT
) -> ProbeReport:
    """A job's probe stage when it reuses `report`: keep the copy and record it as the probe's answer."""
    keep_profile(report, directory)
    if record is not None:
        record_probe(record, report, directory)
    progress.note(f"no layers probed: the {report.describe()}")
    return report


def check_no_mode(spec: LayerAdaptationSpec, mode: str | None) -> None:
    """A probe mode given for a job that reuses a profile is a contradiction: refuse it."""
    if spec.probe.reuse is not None and mode is not None and mode != spec.probe.mode:
        raise InputError(
            "--mode",
            f"the spec reuses a profile (probe.reuse: {spec.probe.reuse}), so nothing is probed",
            "drop it, or remove probe.reuse from the spec to probe",
        )


def reused_profile(spec: LayerAdaptationSpec, directory: Path) -> ProbeReport:
    """The report `spec.probe.reuse` names, checked against the base, with this spec's selection.

    A copy of the same source already in `directory` (a job run again) is taken instead of looking
    the source up anew.
    """
    source = str(spec.probe.reuse)
    fingerprint = model_fingerprint(spec.model)
    kept = _kept_copy(directory / REPORT_JSON, source)
    if kept is not None:
        report, where = kept, f"{directory / REPORT_JSON}"
    elif source == REUSE_MLFLOW or source.startswith(f"{REUSE_MLFLOW}:"):
        report, where = _from_mlflow(spec, source, fingerprint)
    else:
        path = report_path(Path(source).expanduser())
        report, where = read_report(path, REUSE_FIELD), str(path)
        report.reused_from = {"source": source, "path": str(path.resolve())}
    check_same_base(report, spec.model.uri, fingerprint, field=REUSE_FIELD, where=where)
    report.reused_from = {**(report.reused_from or {}), "reusedFor": measured_on(spec)}
    report.strategy = spec.selection.strategy
    report.selected = select_layers(spec.selection, report)
    return report


def keep_profile(report: ProbeReport, directory: Path) -> None:
    """Write the job's copy of a reused report: probe_report.json and its chart."""
    directory.mkdir(parents=True, exist_ok=True)
    write_report(report, directory)


def report_path(path: Path) -> Path:
    """The probe_report.json a path means: the file, a probe directory's, or an adapt work directory's."""
    if (
        path.is_dir()
        and not (path / REPORT_JSON).is_file()
        and (path / ADAPT_PROBE_DIR / REPORT_JSON).is_file()
    ):
        return path / ADAPT_PROBE_DIR / REPORT_JSON
    return path / REPORT_JSON if path.is_dir() else path


def _kept_copy(path: Path, source: str) -> ProbeReport | None:
    if not path.is_file():
        return None
    try:
        report = read_report(path, REUSE_FIELD)
    except InputError:
        return None
    same = report.reused_from is not None and report.reused_from.get("source") == source
    return report if same else None


def _from_mlflow(spec: LayerAdaptationSpec, source: str, fingerprint: str) -> tuple[ProbeReport, str]:
    uri = configured_tracking_uri(spec.mlflow)
    if uri is None:
        raise InputError(
            REUSE_FIELD,
            f"`{source}` looks the probe up on a tracking server, and neither spec.mlflow.trackingUri nor "
            f"{ENV_TRACKING_URI} names one",
            "set one of them, or give probe.reuse the path of a probe report",
        )
    run_id = source.partition(":")[2]
    with tempfile.TemporaryDirectory(prefix="layerpilot-profile-") as scratch:
        stored: StoredProfile = (
            profile_of_run(uri, run_id, REPORT_JSON, Path(scratch), field=REUSE_FIELD)
            if run_id
            else newest_profile(
                uri, spec.mlflow.experiment, fingerprint, REPORT_JSON, Path(scratch), field=REUSE_FIELD
            )
        )
        report = read_report(stored.path, REUSE_FIELD)
    report.reused_from = {"source": source, "runId": stored.run_id}
    return report, f"MLflow run {stored.run_id}"
