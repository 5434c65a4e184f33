"""The user-facing contract as a document: `docs/reference.md`, generated from the code itself.

Commands and options come from the Typer app, the spec from the pydantic models' JSON schema (the
one the CRD is generated from), the files from the field tables beside the code that writes them,
the metric names from the modules that record them. `make reference` rewrites the file; a test fails
when the committed file differs from what this module generates.

    python -m cli.reference > docs/reference.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import typer.main
from typer.core import TyperArgument, TyperGroup

from cli.main import app
from service.adapt import RESULT_FIELDS, RESULT_JSON
from service.calibration import CALIBRATION_FIELDS, CALIBRATION_JSON, CALIBRATION_METRICS
from service.evaluation import EVAL_METRICS, EVAL_RESULT_FIELDS
from service.patch import DELTAS, PATCH_META, PATCH_META_FIELDS, PATCH_TENSORS
from service.probe.recorded import PROBE_METRICS
from service.probe.report import LAYER_FIELDS, MODE_FIELDS, REPORT_FIELDS, REPORT_JSON, REPORT_PNG
from service.record import METRICS_FILE, RECORD_FIELDS, RECORD_FILE, REGISTRATION_FIELDS, TRACKING_FIELDS
from service.register import EVAL_DIR, EVAL_JSON, REGISTER_FIELDS
from service.spec.models import API_VERSION, KIND, LayerAdaptation, LayerAdaptationSpec
from service.tracking import review
from service.tracking.publish import PUBLISHED_FILE, RECORD_KEY
from service.tracking.published import PUBLISH_FIELDS, PUBLISHED
from service.tracking.publishing import INTERVAL_ENV, SPEC_JSON
from service.training.gigpo import GIGPO_METRICS
from service.training.metrics import TRAIN_METRICS
from service.training.rollout import EPISODE_METRICS
from service.training.rundir import CALIBRATION, CHECKPOINTS, RUN_FILE, RUN_FILE_FIELDS
from service.training.trainer import TRAIN_RESULT_FIELDS

ENVIRONMENT: dict[str, str] = {
    "MLFLOW_TRACKING_URI": "tracking server or store when the spec sets no `mlflow.trackingUri`",
    "MLFLOW_RUN_ID": "publish into this existing run instead of creating a top run (the operator's Jobs)",
    "LAYERPILOT_MLFLOW_ATTEMPTS / _BACKOFF_S / _TIMEOUT_S": "how hard each request to MLflow tries "
    "(3 attempts, 1 s backoff, 15 s timeout)",
    INTERVAL_ENV: "seconds between publishes while a job runs (5)",
    "LAYERPILOT_MLFLOW_TOKEN / _TOKEN_FILE": "`Authorization: Bearer` for a tracking server behind a gateway",
    "LAYERPILOT_VERBOSE=1": "as `--verbose`: the libraries' own logs, warnings and progress bars",
    "LAYERPILOT_PROGRESS_SECONDS": "seconds between progress lines when stderr is not a terminal (10)",
    "LAYERPILOT_DEBUG=1": "the traceback of an unexpected failure",
    "LAYERPILOT_USER": "who promoted a version (default: the login name)",
    "LAYERPILOT_SANDBOX": "`code_tests` isolation: `auto` (bubblewrap when it runs, else rlimits), "
    "`bubblewrap` or `rlimits`",
    "JOB_COMPLETION_INDEX": "the unit of `probe --layer-index job` (set by Kubernetes in Indexed Jobs)",
    "HF_HUB_OFFLINE, HF_HUB_CACHE, HF_HOME, HF_TOKEN": "Hugging Face cache and access for `hf://` models",
}

EXIT_CODES: dict[str, str] = {
    "0": "success",
    "1": "runtime failure (a line says what failed; finished work is kept)",
    "2": "bad input (a line names the field or option and the fix)",
    "130": "interrupted (finished checkpoints are kept)",
}


def render() -> str:
    """The whole reference as Markdown."""
    parts = [
        "# layerpilot reference",
        "",
        "Generated from the code by `make reference` (`python -m cli.reference`); a test fails when it is",
        "stale. It is the contract scripts, the operator and reviewers rely on: fields and names are added,",
        "never renamed.",
        "",
        "Contents: [commands](#commands) · [the spec](#the-spec) · [files](#files) · [MLflow](#mlflow) ·",
        "[Kubernetes](#kubernetes) · [exit codes and environment](#exit-codes-and-environment)",
        "",
        *_commands(),
        *_spec(),
        *_files(),
        *_mlflow(),
        *_kubernetes(),
        "## Exit codes and environment",
        "",
        *_table(("exit code", "meaning"), EXIT_CODES.items()),
        "",
        *_table(("variable", "what it does"), ENVIRONMENT.items()),
    ]
    return "\n".join(parts).rstrip() + "\n"


# --- commands -------------------------------------------------------------------------------------


def _commands() -> Iterator[str]:
    yield "## Commands"
    yield ""
    yield "Every command takes `--help` and `--json` (the result, or the error, as JSON on stdout)."
    yield "Results go to stdout, progress and errors to stderr. `layerpilot --verbose COMMAND` shows"
    yield "the libraries' own output too; `layerpilot --version` prints the versions."
    yield ""
    root = typer.main.get_command(app)
    for path, command in _walk(root, ["layerpilot"]):
        yield f"### `{' '.join(path)}`"
        yield ""
        yield (command.help or "").strip()
        yield ""
        yield f"    {_usage(path, command)}"
        yield ""
        rows = [_param_row(param) for param in command.params if not getattr(param, "hidden", False)]
        if rows:
            yield from _table(("argument / option", "meaning", "default"), rows)
            yield ""


def _walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            shown = (
                [*path, f"[{name}]"] if name == getattr(command, "default_command", None) else [*path, name]
            )
            yield from _walk(sub, shown)
    else:
        yield path, command


def _usage(path: list[str], command: Any) -> str:
    pieces = [*path, "[OPTIONS]"]
    for param in command.params:
        if isinstance(param, TyperArgument):
            name = param.metavar or param.name.upper()
            pieces.append(name if param.required else f"[{name}]")
    return " ".join(pieces)


def _param_row(param: Any) -> tuple[str, str, str]:
    if isinstance(param, TyperArgument):
        name = f"`{param.metavar or param.name.upper()}`"
    else:
        metavar = "" if param.is_flag else f" {param.metavar or param.name.upper()}"
        name = f"`{', '.join(param.opts)}{metavar}`"
    default = param.default
    shown = "" if default in (None, False, [], ()) or param.required else f"`{default}`"
    return name, (param.help or "").replace("|", "\\|"), shown


# --- the spec -------------------------------------------------------------------------------------


def _spec() -> Iterator[str]:
    schema = LayerAdaptation.model_json_schema(by_alias=True)
    defaults = LayerAdaptationSpec().model_dump(mode="json", by_alias=True)
    yield "## The spec"
    yield ""
    yield "One document is both the CLI's input file and the Kubernetes custom resource: `apiVersion:"
    yield f"{API_VERSION}`, `kind: {KIND}`, `metadata` (name, namespace) and `spec`. The CLI also"
    yield "accepts the `spec` mapping alone. Keys are camelCase; unknown keys are refused with the"
    yield "closest known one. `examples/demo.yaml` is a complete example."
    yield ""
    spec_schema = schema["$defs"]["LayerAdaptationSpec"]
    for section, prop in spec_schema["properties"].items():
        yield from _section(schema, f"spec.{section}", prop, defaults[section])


def _section(schema: dict[str, Any], path: str, prop: dict[str, Any], section_default: Any) -> Iterator[str]:
    """A section's table, then one for each of its fields that is a section of its own."""
    target = _resolve(schema, prop.get("items", prop))
    yield f"### `{path}`{' (a list)' if prop.get('type') == 'array' else ''}"
    yield ""
    yield prop.get("description", "")
    yield ""
    rows = []
    nested = []
    for key, field in target.get("properties", {}).items():
        if key in target.get("required", []):
            default = "required"
        elif isinstance(section_default, dict):
            default = _default(section_default.get(key), present=True)
        else:  # a list section: its entries' own defaults
            default = _default(field.get("default"), present="default" in field)
        rows.append((f"`{key}`", _type(schema, field), default, field.get("description", "")))
        if "properties" in _resolve(schema, field.get("items", field)) and isinstance(section_default, dict):
            nested.append((key, field))
    yield from _table(("key", "type", "default", "meaning"), rows)
    yield ""
    for key, field in nested:
        yield from _section(schema, f"{path}.{key}", field, section_default.get(key))


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The definition `node` refers to; for an optional section (`Section | None`), the section's."""
    options = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1 and "$ref" in options[0]:
        node = options[0]
    ref = node.get("$ref")
    return schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else node


def _type(schema: dict[str, Any], field: dict[str, Any]) -> str:
    if "anyOf" in field:
        return " or ".join(_type(schema, option) for option in field["anyOf"])
    node = _resolve(schema, field)
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    kind = str(node.get("type", "any"))
    if kind == "array":
        kind = f"list of {_type(schema, node.get('items', {}))}"
    bounds = [
        f"{symbol} {node[key]}"
        for key, symbol in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in node
    ]
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def _default(value: Any, *, present: bool) -> str:
    if not present:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`".replace("|", "\\|")


# --- files and MLflow -----------------------------------------------------------------------------


def _files() -> Iterator[str]:
    yield "## Files"
    yield ""
    yield f"A probe directory (`probe --out`) holds `{REPORT_JSON}`, its chart `{REPORT_PNG}`, one result"
    yield "per exact unit under `partials/`, and under `runs/` one directory per layer and seed: the"
    yield "unit's record, and its training while it runs (its weights are dropped after it unless"
    yield "`--keep-runs`)."
    yield f"A training directory (`train --out`) holds `{PATCH_TENSORS}` (only the trained layers'"
    yield f"tensors, under their full parameter names), `{PATCH_META}`, `{DELTAS}` (relative weight change"
    yield f"‖ΔW‖/‖W‖ per layer and per tensor), `{RUN_FILE}` and resumable `{CHECKPOINTS}/`. `adapt` writes"
    yield f"both into its work directory, plus `{EVAL_DIR}/{EVAL_JSON}` and `{RESULT_JSON}`; `register`"
    yield f"writes `{EVAL_DIR}/{EVAL_JSON}` into its `--out`."
    yield ""
    yield "**The work directory is the record.** Every command that runs a job (`adapt`, `probe`,"
    yield "`probe plan`, `probe merge`, `train`, `register`) keeps in its directory the record of each"
    yield f"run MLflow will show: `{RECORD_FILE}` (what the run is and holds) and `{METRICS_FILE}` (its"
    yield "metric points, appended as they happen, one line per logged step), and the spec as"
    yield f"`{SPEC_JSON}`. A probe's units keep theirs under `runs/`, an adapt's stages under `probe/`,"
    yield f"`train/` and `{EVAL_DIR}/`. MLflow is published from these files (see [MLflow](#mlflow)); each"
    yield f"publish writes `{PUBLISHED_FILE}` ({', '.join(f'`{k}`' for k in PUBLISHED)}): where the"
    yield "work directory is in MLflow, and whether all of it is."
    yield ""
    for title, fields in (
        (f"`{REPORT_JSON}`", {**REPORT_FIELDS.help, **MODE_FIELDS}),
        (f"`{REPORT_JSON}`: an entry of `layers`", LAYER_FIELDS.help),
        (f"`{PATCH_META}`", PATCH_META_FIELDS.help),
        (f"`{RUN_FILE}`", RUN_FILE_FIELDS.help),
        (f"`{CALIBRATION}/{CALIBRATION_JSON}` (`learningRateMultiplier: auto`)", CALIBRATION_FIELDS.help),
        (f"`{RECORD_FILE}`", RECORD_FIELDS.help),
        (f"`{RECORD_FILE}`: `registration`", REGISTRATION_FIELDS.help),
        (f"`{RECORD_FILE}`: `tracking`", TRACKING_FIELDS.help),
        (f"`{RESULT_JSON}`", RESULT_FIELDS.help),
        ("`layerpilot train --json`", TRAIN_RESULT_FIELDS.help),
        (f"`layerpilot eval --json` (and `{EVAL_DIR}/{EVAL_JSON}`)", EVAL_RESULT_FIELDS.help),
        ("`layerpilot register --json`", REGISTER_FIELDS.help),
        (f"`layerpilot mlflow sync --json` (and `{PUBLISHED_FILE}`)", PUBLISH_FIELDS.help),
    ):
        yield f"### {title}"
        yield ""
        yield from _table(("field", "meaning"), ((f"`{k}`", v) for k, v in fields.items()))
        yield ""


def _mlflow() -> Iterator[str]:
    yield "## MLflow"
    yield ""
    yield "Each record of a work directory is one MLflow run: `adapt` shows as a top run with child runs"
    yield "`probe` (and, in exact and halving mode, one child per probe unit: per layer and seed, its"
    yield "halving rungs as steps), `train` and `eval`; `probe`, `probe merge` and `train` alone show as"
    yield "one run each. The result is a registered model version (flavor `layer_patch`) with alias"
    yield f"`{review.CANDIDATE}`; `registry promote` moves `{review.CHAMPION}` only to a version whose eval"
    yield "score beats the holder's."
    yield ""
    yield "A job publishes its work directory when it starts, every few seconds while it runs, and when it"
    yield "ends. A publish is idempotent: it finds each run by the record's key (tag"
    yield f"`{RECORD_KEY}`), sends only what the run does not hold yet (metric points keep the step and"
    yield "timestamp they were recorded at) and registers a version once. A server that is down costs a"
    yield "delay, nothing else: `layerpilot mlflow sync WORKDIR` publishes what is left (exit 1 while"
    yield "something is), and a second sync sends nothing. MLflow's own `MLFLOW_HTTP_REQUEST_*`"
    yield "variables, when you set them, take precedence over layerpilot's request bounds."
    yield ""
    yield "The operator runs the stages as Jobs: it creates the top run and one child per stage"
    yield f"(`{review.STAGE}` = `probe`, `train`), and each Job publishes into its run (`MLFLOW_RUN_ID`):"
    yield "the probe units record themselves, `probe merge` publishes the probe and its units, `train` the"
    yield "training, and `register`, in the top run, adds the `eval` child and registers the version from"
    yield "the top run, linking the stage runs it finds under it. Such a Job fails (and is retried) when"
    yield "its publish did not finish, since the operator reads those runs."
    yield ""
    metrics = {
        **TRAIN_METRICS,
        **EPISODE_METRICS,
        **GIGPO_METRICS,
        **PROBE_METRICS,
        **CALIBRATION_METRICS,
        **EVAL_METRICS,
    }
    yield from _table(("metric", "meaning"), ((f"`{k}`", v) for k, v in metrics.items()))
    yield ""
    tags = {
        review.MODEL: "the base model's URI (runs)",
        review.SPEC_HASH: "hash of the spec (runs, versions)",
        review.STRATEGY: "the selection rule (runs, versions)",
        review.STAGE: "`adapt`, `register`, `probe`, `train` or `eval`: what a run is in its job (runs)",
        review.PROBE_MODE: "the probe's mode (probe runs)",
        review.SELECTED_LAYERS: "the selected layers, e.g. `3,4` (adapt and probe runs)",
        review.TOP_LAYERS: "the probe's three best layers, best first, e.g. `4,3,5` (probe runs)",
        review.REGISTERED_MODEL: "the registered model a version was registered in (the run it comes from)",
        review.MODEL_VERSION: "that version's number (the run it comes from)",
        review.PROBE_UNITS: "the exact probe's unit count, from `probe plan` (probe runs)",
        review.PROBE_TASK: "what the probe measured on, its report's `task` (probe runs)",
        review.PROBE_REUSED: (
            "the reused profile, e.g. `exact probe on builtin:arith, reused from MLflow run …` (probe and "
            "train runs of a job with `probe.reuse`)"
        ),
        RECORD_KEY: "the key of the record a run shows (`record.json`): how a publish finds it (runs)",
        review.LAYERS: "the trained layers (versions)",
        review.EVAL_SCORE: "eval score after training: what the promotion gate compares (versions)",
        review.EVAL_BEFORE: "eval score of the base model (versions)",
        review.BASE_MODEL: "the base model (versions)",
        review.BASE_FINGERPRINT: "the base weights' fingerprint (versions; probe runs, where "
        "`probe.reuse: mlflow` finds them by it)",
        review.PROBE: "what the layers were chosen on: the probe's mode and task, and its source when "
        "reused (versions)",
        review.TRAINING_STEPS: "optimizer steps (versions)",
    }
    yield from _table(("tag", "meaning"), ((f"`{k}`", v) for k, v in tags.items()))
    yield ""


def _kubernetes() -> Iterator[str]:
    from k8s.builders import STAGES_EXACT
    from k8s.crd import PHASES, status_schema
    from k8s.naming import GROUP, PLURAL, RESOURCE_LABEL, SHORT_NAME, STAGE_LABEL, UID_LABEL, VERSION
    from k8s.status import CONDITION_OF_STAGE, READY

    yield "## Kubernetes"
    yield ""
    yield (
        f"Custom resource `{KIND}` in `{GROUP}/{VERSION}` (plural `{PLURAL}`, short name `{SHORT_NAME}`), "
        "namespaced, with a status subresource; its `spec` is the spec above and is immutable once "
        f"created. `status.phase`: {' → '.join(PHASES[:5])} (or {PHASES[5]}). Stages, in order: "
        f"{', '.join(f'`{s}`' for s in STAGES_EXACT)} (gradient, spectrum and knockout probes have no plan "
        "or merge; a spec with `probe.reuse` has only `train` and `register`). Each runs as a Job named "
        "`NAME-UID5-STAGE` (`NAME-UID5-train` is a Kubeflow `TrainJob` "
        "when `resources.nodes` > 1) with an ownerReference to the resource and the labels "
        f"`{RESOURCE_LABEL}`, `{UID_LABEL}`, `{STAGE_LABEL}`; the spec ConfigMap is `NAME-UID5-spec`, "
        "the workspace claim `NAME-UID5-workspace`."
    )
    yield ""
    conditions = [*dict.fromkeys(CONDITION_OF_STAGE.values()), READY]
    yield (
        f"Conditions (type, status, reason, message, lastTransitionTime, observedGeneration): "
        f"{', '.join(f'`{c}`' for c in conditions)}. Reasons: the phase while running, `ProbeComplete`, "
        "`ProfileReused` (a reused profile), `TrainingComplete`, `Registered`, `Succeeded`; on failure "
        "`InvalidSpec`, `JobFailed`, `PlanMissing`, `ProfileMissing`, `VersionMissing`. An Event is "
        "posted on the resource at each transition."
    )
    yield ""
    status = status_schema()["properties"]
    rows = [(f"`{key}`", prop.get("description", "")) for key, prop in status.items()]
    yield from _table(("status field", "meaning"), rows)
    yield ""


def _table(header: tuple[str, ...], rows: Any) -> Iterator[str]:
    yield "| " + " | ".join(header) + " |"
    yield "|" + "---|" * len(header)
    for row in rows:
        yield "| " + " | ".join(str(cell).replace("\n", " ") for cell in row) + " |"


if __name__ == "__main__":
    sys.stdout.write(render())
