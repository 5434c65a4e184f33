"""A layer patch becomes a registered model version, once per run, with the review a reviewer reads.

The publish (`service.tracking.publish`) calls `register_patch` for a record that asks for it (the
end of `adapt` and of `register`). It is idempotent, because a request whose answer was lost may
have landed all the same: the version from a run is looked up by model name and run id before
anything is created, a LoggedModel that an earlier attempt left behind is reused, and a version
created twice (MLflow retries a request whose answer timed out) is deleted again, the first kept.
The alias (`candidate`) is set when the version is new, or later when an earlier attempt could not
set it — never moved back once a newer version or a reviewer took it elsewhere.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model
from mlflow.tracking.context.registry import resolve_tags

from service.patch import LayerDeltas, read_patch
from service.record import Registration
from service.tracking import flavor, review
from service.tracking.client import error_code, global_tracking_uri
from service.tracking.uris import run_url, version_url


def register_patch(
    client: Any,
    tracking_uri: str,
    registration: Registration,
    patch_dir: Path,
    *,
    run_id: str,
    experiment_id: str,
    runs: Mapping[str, str],
) -> tuple[dict[str, Any], bool]:
    """The version of `registration.name` registered from `run_id` (found, or logged and registered
    now), and whether it was registered now.

    `runs` are the stage runs the description links to (role -> run id).
    """
    name = registration.name
    patch = read_patch(patch_dir)
    deltas = LayerDeltas.read(patch_dir)
    summary = _review(patch.meta, deltas, registration, runs, tracking_uri, experiment_id)
    tags = version_tags(summary)
    found = _versions_from(client, name, run_id)
    created = not found
    if created:
        _ensure_model(client, name, summary.base_uri)
        model_uri = _logged_model(client, patch_dir, run_id, experiment_id, registration, tags)
        with global_tracking_uri(tracking_uri):
            client.create_model_version(
                name,
                model_uri,
                run_id=run_id,
                tags=tags,
                description=review.describe_patch(summary, name),
                model_id=model_uri.removeprefix("models:/"),
            )
        found = _versions_from(client, name, run_id)
        for twin in found[1:]:  # a retried request that had landed the first time
            client.delete_model_version(name, twin.version)
    version = client.get_model_version(name, found[0].version)  # a search leaves the aliases out
    if not version.aliases and _newest(client, name) == int(version.version):
        client.set_registered_model_alias(name, registration.alias, version.version)
    registered = {
        "name": name,
        "version": str(version.version),
        "alias": registration.alias,
        "modelUri": f"models:/{name}/{version.version}",
        "loggedModelUri": version.source,
        "url": version_url(tracking_uri, name, str(version.version)),
        "tags": tags,
    }
    return registered, created


def version_tags(summary: review.PatchReview) -> dict[str, str]:
    """The tags the promotion gate and `registry list/show` read, without downloading anything."""
    tags = {
        review.LAYERS: review.layers_text(summary.layers),
        review.BASE_MODEL: summary.base_uri,
        review.BASE_FINGERPRINT: summary.base_fingerprint,
        review.TRAINING_STEPS: str(summary.training_steps),
    }
    for key, value in (
        (review.EVAL_SCORE, summary.eval_after),
        (review.EVAL_BEFORE, summary.eval_before),
        (review.SPEC_HASH, summary.spec_hash),
        (review.STRATEGY, summary.strategy),
        (review.PROBE, summary.probe),
    ):
        if value is not None:
            tags[key] = str(value)
    return tags


def _review(
    meta: Mapping[str, Any],
    deltas: LayerDeltas | None,
    registration: Registration,
    runs: Mapping[str, str],
    tracking_uri: str,
    experiment_id: str,
) -> review.PatchReview:
    base = meta.get("base", {})

    def link(run_id: str) -> str:
        url = run_url(tracking_uri, experiment_id, run_id)
        return f"[`{run_id}`]({url})" if url else f"`{run_id}`"

    return review.PatchReview(
        base_uri=str(base.get("uri")),
        base_fingerprint=str(base.get("fingerprint")),
        layers=list(meta["layers"]),
        eval_before=registration.eval_before,
        eval_after=registration.eval_after,
        eval_items=registration.eval_items,
        score_name=registration.score_name,
        algorithm=registration.algorithm,
        probe=registration.probe,
        training_steps=meta.get("trainedSteps"),
        num_parameters=meta.get("numParameters"),
        learning_rate=dict(meta.get("learningRate") or {}),
        strategy=registration.strategy,
        spec_hash=registration.spec_hash,
        probe_layers=list(registration.probe_layers),
        deltas=deltas.relative_json() if deltas is not None else {},
        runs={role: link(run_id) for role, run_id in runs.items()},
    )


def _versions_from(client: Any, name: str, run_id: str) -> list[Any]:
    """Versions of `name` registered from `run_id`, oldest first (none when the model is new)."""
    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except Exception as error:
        if error_code(error) == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return sorted(found, key=lambda v: int(v.version))


def _newest(client: Any, name: str) -> int:
    return max(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def _ensure_model(client: Any, name: str, base_uri: str) -> None:
    try:
        client.create_registered_model(
            name, description=f"Layer patches of `{base_uri}` trained by layerpilot."
        )
    except Exception as error:
        if error_code(error) != "RESOURCE_ALREADY_EXISTS":
            raise


def _logged_model(
    client: Any,
    patch_dir: Path,
    run_id: str,
    experiment_id: str,
    registration: Registration,
    tags: Mapping[str, str],
) -> str:
    """A finished LoggedModel of the patch from `run_id` (an earlier attempt's, else a new one).

    This is `Model.log` spelled out on an explicit client: `Model.log` reads the process-global
    tracking URI and experiment, which a publish to one server must not depend on.
    """
    earlier = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{flavor.FLAVOR_NAME}'"
    )
    for model in earlier:
        if model.status == LoggedModelStatus.READY:
            return f"models:/{model.model_id}"
    logged = client.create_logged_model(
        experiment_id, name=flavor.FLAVOR_NAME, source_run_id=run_id, tags=resolve_tags(dict(tags))
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        meta = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        flavor.save_model(patch_dir, local, meta, max_new_tokens=registration.max_new_tokens)
        client.log_model_artifacts(logged.model_id, str(local))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return f"models:/{logged.model_id}"
