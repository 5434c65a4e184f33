"""The kopf operator: which events lead to a reconcile of which resource.

- a `LayerAdaptation` created, or found when the operator (re)starts → reconcile it;
- a Job or TrainJob the operator created changes → reconcile its owner (ownerReferences);
- a resource deleted before it finished → its MLflow runs end KILLED (Jobs go with the GC).

Reconciles of one resource never overlap (a lock per resource); each runs in a worker thread
because the kubernetes client and MLflow block. An invalid spec is a `kopf.PermanentError` (the
resource is Failed with reason InvalidSpec); an API or MLflow failure is a `kopf.TemporaryError`,
retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from k8s.cluster import Cluster
from k8s.naming import (
    DEFAULT_IMAGE,
    GROUP,
    IMAGE_ENV,
    MANAGED_BY,
    MANAGER,
    PLURAL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOBS,
    VERSION,
)
from k8s.reconcile import InvalidSpec, OperatorConfig, Reconciler
from service.errors import LayerpilotError
from service.spec.models import KIND

log = logging.getLogger(__name__)
RETRY_DELAY_S = 15.0
RETRIES = 8  # with doubling delays from RETRY_DELAY_S: about half an hour before giving up
ANNOTATION_PREFIX = GROUP


@dataclass(frozen=True)
class Settings:
    config: OperatorConfig
    retry_delay_s: float = RETRY_DELAY_S

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            OperatorConfig(
                default_image=os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE,
                tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
            ),
        )


def build_registry(
    settings: Settings,
    cluster: Callable[[], Cluster],
    login: Callable[..., Any] | None = None,
) -> kopf.OperatorRegistry:
    """The operator's handlers on a fresh registry (tests run several operators in one process)."""
    registry = kopf.OperatorRegistry()
    locks: dict[tuple[str, str], asyncio.Lock] = {}
    reconciler = Reconciler(cluster(), settings.config)

    async def reconcile(namespace: str, name: str) -> str | None:
        lock = locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(reconciler.reconcile, namespace, name)

    async def reconcile_or_retry(namespace: str, name: str) -> None:
        try:
            await reconcile(namespace, name)
        except InvalidSpec as error:
            raise kopf.PermanentError(str(error)) from None
        except LayerpilotError as error:  # API server or MLflow: try again later
            raise kopf.TemporaryError(str(error), delay=settings.retry_delay_s) from None

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX)
        settings.persistence.finalizer = f"{GROUP}/operator"
        settings.posting.level = logging.WARNING

    if login is not None:
        kopf.on.login(registry=registry)(login)
    else:
        kopf.on.login(registry=registry)(kopf.login_via_client)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def start(namespace: str | None, name: str, **_: Any) -> None:
        await reconcile_or_retry(namespace or "default", name)

    async def child_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        namespace = namespace or "default"
        owner = next(
            (ref for ref in body.get("metadata", {}).get("ownerReferences") or [] if ref.get("kind") == KIND),
            None,
        )
        if owner is None:
            return
        delay = settings.retry_delay_s
        for attempt in range(1, RETRIES + 1):  # kopf does not retry event handlers: we do, with backoff
            try:
                await reconcile(namespace, owner["name"])
                return
            except InvalidSpec:
                return  # already Failed
            except LayerpilotError as error:
                log.warning(
                    "reconciling %s/%s after a change of %s (attempt %d/%d): %s",
                    namespace,
                    owner["name"],
                    body["metadata"]["name"],
                    attempt,
                    RETRIES,
                    error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)

    managed = {MANAGED_BY: MANAGER}
    kopf.on.event("batch", "v1", "jobs", labels=managed, registry=registry)(child_changed)
    kopf.on.event(TRAINER_GROUP, TRAINER_VERSION, TRAINJOBS, labels=managed, registry=registry)(child_changed)

    @kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, registry=registry)
    async def deleted(body: kopf.Body, **_: Any) -> None:
        try:
            await asyncio.to_thread(reconciler.deleted, dict(body))
        except Exception as error:
            log.warning("ending the MLflow runs of %s: %s", body["metadata"]["name"], error)

    return registry


def run(namespace: str | None = None, settings: Settings | None = None) -> None:
    """`layerpilot operator run`: watch one namespace, or all; blocks until stopped."""
    settings = settings or Settings.from_env()
    registry = build_registry(settings, Cluster.connect)
    kopf.configure(verbose=False)  # INFO: the operator's own lines (one per transition of a resource)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not "handler succeeded" per Job event
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,  # one replica (the Deployment's strategy is Recreate): no peering objects
            clusterwide=namespace is None,
            namespaces=[namespace] if namespace else (),
            liveness_endpoint="http://0.0.0.0:8080/healthz",
        )
    )
