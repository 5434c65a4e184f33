"""The model registry as a reviewer uses it: register a layer patch, list, show, promote.

Unlike tracking, these calls fail loudly: someone asked for them and must learn that they did not
happen. Every failure is one line — a `SpecError` naming NAME or VERSION when they do not exist, a
`LayerpilotError` when MLflow is unreachable or refuses. The wording of a version's review and the
promotion gate are pure functions in `service.tracking.review`.
"""

from __future__ import annotations

import getpass
import importlib
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from mlflow.entities import LoggedModelOutput
from mlflow.models import Model
from mlflow.tracking.context.registry import resolve_tags

from service.errors import LayerpilotError, SpecError, first_line
from service.patch import LayerDeltas, read_patch
from service.tracking import review
from service.tracking.client import client_for, error_code, global_tracking_uri
from service.tracking.retries import RetryPolicy, is_transient, short_error, with_retries
from service.tracking.uris import local_db_path, run_url, version_url

T = TypeVar("T")

# The flavor lives in mlflow_plugins (a face of the engine, like the CLI); service reaches it by the
# same module name MLflow itself records as the pyfunc `loader_module`, never by a static import.
FLAVOR_MODULE = "mlflow_plugins.layer_patch_flavor"


class PromotionRefused(LayerpilotError):
    """The gate held: the version does not beat the alias's current holder."""


class Registry:
    """Registered layer patches on one tracking server (or local store)."""

    def __init__(self, tracking_uri: str, *, retry: RetryPolicy | None = None) -> None:
        db = local_db_path(tracking_uri)
        if db is not None and not db.is_file():
            # Opening a missing sqlite file would silently create an empty store and list nothing.
            raise SpecError(
                "--tracking-uri",
                f"no MLflow store at {db}",
                "pass the server URL or the sqlite:/// URI printed by the run (or set MLFLOW_TRACKING_URI)",
            )
        self.tracking_uri = tracking_uri
        self.retry = retry or RetryPolicy.from_env()
        self.client = client_for(tracking_uri)

    def _call(self, action: Callable[[], T], *, name: str | None = None, version: str | None = None) -> T:
        try:
            return with_retries(self.retry, action)
        except LayerpilotError:
            raise
        except Exception as error:
            if error_code(error) == "RESOURCE_DOES_NOT_EXIST" and name is not None:
                if version is not None and self._model_exists(name):
                    raise SpecError(
                        "VERSION",
                        f"{name} has no version {version}",
                        f"see `layerpilot registry show {name}`",
                    ) from None
                raise SpecError(
                    "NAME", f"no registered model '{name}'", "see `layerpilot registry list`"
                ) from None
            if is_transient(error):
                raise LayerpilotError(
                    f"MLflow at {self.tracking_uri} is unreachable ({short_error(error)}); start it or "
                    "pass --tracking-uri / set MLFLOW_TRACKING_URI"
                ) from None
            raise LayerpilotError(f"MLflow at {self.tracking_uri} refused: {short_error(error)}") from None

    def _model_exists(self, name: str) -> bool:
        try:
            with_retries(self.retry, lambda: self.client.get_registered_model(name))
        except Exception:
            return False
        return True

    # -- register --

    def register_patch(
        self,
        patch_dir: Path,
        *,
        name: str,
        run_id: str,
        experiment_id: str | None = None,
        eval_before: float | None = None,
        eval_after: float | None = None,
        eval_items: int | None = None,
        probe_report: Mapping[str, Any] | None = None,
        strategy: str | None = None,
        spec_hash: str | None = None,
        max_new_tokens: int | None = None,
        runs: Mapping[str, str] | None = None,
        alias: str = review.CANDIDATE,
        flavor: PatchFlavor | None = None,
    ) -> dict[str, Any]:
        """Log the patch (flavor `layer_patch`), register it as a new version with a Markdown review,
        tags for the gate and the listing, and point `alias` (default `candidate`) at it."""
        patch = read_patch(patch_dir)
        base = patch.meta.get("base", {})
        deltas = LayerDeltas.read(patch_dir)
        if experiment_id is None:
            experiment_id = self._call(lambda: self.client.get_run(run_id)).info.experiment_id
        run_refs = {"source run": run_id, **(runs or {})}
        summary = review.PatchReview(
            base_uri=str(base.get("uri")),
            base_fingerprint=str(base.get("fingerprint")),
            layers=patch.layers,
            eval_before=eval_before,
            eval_after=eval_after,
            eval_items=eval_items,
            training_steps=patch.meta.get("trainedSteps"),
            num_parameters=patch.meta.get("numParameters"),
            strategy=strategy or (probe_report or {}).get("strategy"),
            spec_hash=spec_hash,
            probe_layers=list((probe_report or {}).get("layers", [])),
            deltas=deltas.relative_json() if deltas is not None else {},
            runs={role: self._run_ref(experiment_id, rid) for role, rid in run_refs.items()},
        )
        tags = {
            review.LAYERS: review.layers_text(patch.layers),
            review.BASE_MODEL: summary.base_uri,
            review.BASE_FINGERPRINT: summary.base_fingerprint,
            review.TRAINING_STEPS: str(summary.training_steps),
        }
        for key, value in (
            (review.EVAL_SCORE, eval_after),
            (review.EVAL_BEFORE, eval_before),
            (review.SPEC_HASH, spec_hash),
            (review.STRATEGY, summary.strategy),
        ):
            if value is not None:
                tags[key] = str(value)
        model_uri = self._call(
            lambda: log_patch_model(
                self.client, flavor or load_flavor(), patch_dir, run_id=run_id,
                experiment_id=str(experiment_id), max_new_tokens=max_new_tokens, tags=tags,
            )
        )  # fmt: skip
        self._ensure_model(name, summary.base_uri)
        with global_tracking_uri(self.tracking_uri):
            version = self._call(
                lambda: self.client.create_model_version(
                    name, model_uri, run_id=run_id, tags=tags,
                    description=review.describe_patch(summary, name),
                    model_id=model_uri.removeprefix("models:/"),
                ),
                name=name,
            ).version  # fmt: skip
        self._call(lambda: self.client.set_registered_model_alias(name, alias, version), name=name)
        return {
            "name": name,
            "version": str(version),
            "alias": alias,
            "modelUri": f"models:/{name}/{version}",
            "loggedModelUri": model_uri,
            "url": version_url(self.tracking_uri, name, str(version)),
            "tags": tags,
        }

    def _ensure_model(self, name: str, base_uri: str) -> None:
        def create() -> None:
            try:
                self.client.create_registered_model(
                    name, description=f"Layer patches of `{base_uri}` trained by layerpilot."
                )
            except Exception as error:
                if error_code(error) != "RESOURCE_ALREADY_EXISTS":
                    raise

        self._call(create)

    def _run_ref(self, experiment_id: str | None, run_id: str) -> str:
        url = run_url(self.tracking_uri, experiment_id, run_id)
        return f"[`{run_id}`]({url})" if url else f"`{run_id}`"

    # -- review --

    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model with its newest version and aliases."""
        found = self._call(lambda: self.client.search_registered_models(max_results=1000))
        out = []
        for model in sorted(found, key=lambda m: m.name):
            latest = max((int(v.version) for v in model.latest_versions or []), default=None)
            out.append(
                {
                    "name": model.name,
                    "latestVersion": str(latest) if latest is not None else None,
                    "aliases": dict(model.aliases or {}),
                    "description": first_line(model.description or ""),
                }
            )
        return out

    def show(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A model with all its versions, or one version with its full description and tags."""
        if version is not None:
            found = self._call(
                lambda: self.client.get_model_version(name, str(version)), name=name, version=version
            )
            return self._version(found)
        model = self._call(lambda: self.client.get_registered_model(name), name=name)
        versions = self._call(lambda: self.client.search_model_versions(f"name = '{name}'", max_results=1000))
        aliases = dict(model.aliases or {})
        held: dict[str, list[str]] = {}
        for alias, number in sorted(aliases.items()):
            held.setdefault(str(number), []).append(alias)  # searched versions come without aliases
        return {
            "name": model.name,
            "description": model.description or "",
            "aliases": aliases,
            "versions": [
                {**self._version(v, brief=True), "aliases": held.get(str(v.version), [])}
                for v in sorted(versions, key=lambda v: -int(v.version))
            ],
        }

    def _version(self, found: Any, brief: bool = False) -> dict[str, Any]:
        tags = dict(found.tags or {})
        data = {
            "name": found.name,
            "version": str(found.version),
            "aliases": sorted(found.aliases or []),
            "evalScore": review.parse_score(tags.get(review.EVAL_SCORE)),
            "layers": tags.get(review.LAYERS),
            "baseModel": tags.get(review.BASE_MODEL),
            "runId": found.run_id,
            "createdAt": datetime.fromtimestamp(found.creation_timestamp / 1000, UTC).isoformat(
                timespec="seconds"
            ),
        }
        if not brief:
            data.update({"source": found.source, "tags": tags, "description": found.description or ""})
        return data

    def promote(
        self,
        name: str,
        version: str,
        *,
        alias: str = review.CHAMPION,
        force: bool = False,
        reason: str | None = None,
        who: str | None = None,
    ) -> dict[str, Any]:
        """Point `alias` at `version` when its eval score beats the current holder's (or `force`)."""
        if force and not (reason or "").strip():
            raise SpecError(
                "--reason", "--force needs a reason", "add --reason TEXT; it is recorded on the version"
            )
        target = self._call(
            lambda: self.client.get_model_version(name, str(version)), name=name, version=version
        )
        holder = self._holder(name, alias)
        decision = review.decide_promotion(
            str(target.version),
            review.parse_score((target.tags or {}).get(review.EVAL_SCORE)),
            str(holder.version) if holder is not None else None,
            review.parse_score((holder.tags or {}).get(review.EVAL_SCORE)) if holder is not None else None,
            alias=alias,
            force=force,
        )
        previous = str(holder.version) if holder is not None else None
        result: dict[str, Any] = {
            "name": name,
            "version": str(version),
            "alias": alias,
            "promoted": decision.move,
            "reason": decision.reason,
            "previous": previous,
        }
        if not decision.move:
            if holder is not None and str(holder.version) == str(version):
                return result  # already there: nothing to do, not an error
            raise PromotionRefused(f"not promoted: {decision.reason}; pass --force --reason TEXT to override")
        record = review.promotion_tags(
            alias, who or _whoami(), datetime.now(UTC).isoformat(timespec="seconds"),
            reason=reason, forced=force, replaced=previous,
        )  # fmt: skip
        # The record goes first: a forced promotion must never be in effect without its who/why.
        for key, value in record.items():
            self._call(_bind(self.client.set_model_version_tag, name, str(version), key, value))
        self._call(lambda: self.client.set_registered_model_alias(name, alias, str(version)), name=name)
        return {**result, "tags": record}

    def _holder(self, name: str, alias: str) -> Any:
        def get() -> Any:
            try:
                return self.client.get_model_version_by_alias(name, alias)
            except Exception as error:
                if error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    # No version holds the alias yet (MLflow answers INVALID_PARAMETER_VALUE for that).
                    self.client.get_registered_model(name)  # but the model itself must exist
                    return None
                raise

        return self._call(get, name=name)


class PatchFlavor(Protocol):
    """What the registry needs from `mlflow_plugins.layer_patch_flavor`."""

    FLAVOR_NAME: str

    def save_model(
        self, patch_dir: Any, path: Any, mlflow_model: Any = None, *, max_new_tokens: int | None = None
    ) -> None: ...


def load_flavor(module: str = FLAVOR_MODULE) -> PatchFlavor:
    return cast(PatchFlavor, importlib.import_module(module))


def log_patch_model(
    client: Any,
    flavor: PatchFlavor,
    patch_dir: Path,
    *,
    run_id: str,
    experiment_id: str,
    max_new_tokens: int | None,
    tags: Mapping[str, str],
) -> str:
    """Log the patch as a LoggedModel of `run_id` through `client`; returns its `models:/m-…` URI.

    This is `Model.log` spelled out on an explicit client: `Model.log` reads the process-global
    tracking URI and experiment, which a pipeline talking to one server must not depend on.
    """
    logged = client.create_logged_model(
        experiment_id, name=flavor.FLAVOR_NAME, source_run_id=run_id, tags=resolve_tags(dict(tags))
    )
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        meta = Model(
            artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
            model_id=logged.model_id,
        )  # fmt: skip
        flavor.save_model(patch_dir, local, meta, max_new_tokens=max_new_tokens)
        client.log_model_artifacts(logged.model_id, str(local))
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return f"models:/{logged.model_id}"


def _bind(func: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A call with its arguments fixed now (a lambda in a loop would see only the last ones)."""
    return lambda: func(*args)


def _whoami() -> str:
    try:
        return os.environ.get("LAYERPILOT_USER") or getpass.getuser()
    except (OSError, KeyError):  # containers without a passwd entry
        return "unknown"
