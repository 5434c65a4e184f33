"""The model registry as a reviewer uses it: list, show, promote.

Unlike a publish, these calls fail loudly: someone asked for them and must learn that they did not
happen. Every failure is one line — an `InputError` naming NAME or VERSION when they do not exist,
a `LayerpilotError` when MLflow is unreachable or refuses. The wording of a version's review and
the promotion gate are pure functions in `service.tracking.review`; registering a version is
`service.tracking.registration`, done by a publish.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from service.errors import InputError, LayerpilotError, first_line
from service.tracking import review
from service.tracking.client import client_for, error_code
from service.tracking.retries import RetryPolicy, is_transient, short_error
from service.tracking.uris import local_db_path

T = TypeVar("T")


class PromotionRefused(LayerpilotError):
    """The gate held: the version does not beat the alias's current holder."""


class Registry:
    """Registered layer patches on one tracking server (or local store)."""

    def __init__(self, tracking_uri: str, *, retry: RetryPolicy | None = None) -> None:
        db = local_db_path(tracking_uri)
        if db is not None and not db.is_file():
            # Opening a missing sqlite file would silently create an empty store and list nothing.
            raise InputError(
                "--tracking-uri",
                f"no MLflow store at {db}",
                "pass the server URL or the sqlite:/// URI printed by the run (or set MLFLOW_TRACKING_URI)",
            )
        self.tracking_uri = tracking_uri
        (retry or RetryPolicy.from_env()).apply()
        self.client = client_for(tracking_uri)

    def _call(self, action: Callable[[], T], *, name: str | None = None, version: str | None = None) -> T:
        try:
            return action()
        except LayerpilotError:
            raise
        except Exception as error:
            if error_code(error) == "RESOURCE_DOES_NOT_EXIST" and name is not None:
                if version is not None and self._model_exists(name):
                    raise InputError(
                        "VERSION",
                        f"{name} has no version {version}",
                        f"see `layerpilot registry show {name}`",
                    ) from None
                raise InputError(
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
            self.client.get_registered_model(name)
        except Exception:
            return False
        return True

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

    def _version(self, found: Any, *, brief: bool = False) -> dict[str, Any]:
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
            raise InputError(
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
            alias,
            who or _whoami(),
            datetime.now(UTC).isoformat(timespec="seconds"),
            reason=reason,
            forced=force,
            replaced=previous,
        )
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


def _bind(func: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A call with its arguments fixed now (a lambda in a loop would see only the last ones)."""
    return lambda: func(*args)


def _whoami() -> str:
    try:
        return os.environ.get("LAYERPILOT_USER") or getpass.getuser()
    except (OSError, KeyError):  # containers without a passwd entry
        return "unknown"
