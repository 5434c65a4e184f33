"""The operator against the kmock Kubernetes emulator: resources declared, the operator run in the
test's own event loop, and the test playing the Job controller (and, in the e2e test, the kubelet).

kmock keeps objects and serves list/watch over HTTP, but runs no controllers: no uid or generation
on created objects, no Job pods, no garbage collection. The test sets what the API server would
(uid, generation) and writes Job status through the API, as the Job controller does, so the
operator sees the same watch events it sees on a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf

from k8s.cluster import Cluster
from k8s.naming import GROUP, PLURAL, TRAINER_GROUP, TRAINER_VERSION, TRAINJOBS, VERSION, Resource
from k8s.operator import Settings, build_registry
from k8s.reconcile import OperatorConfig

NAMESPACE = "ml"
LA = f"{GROUP}/{VERSION}/{PLURAL}"
JOBS = "batch/v1/jobs"
CONFIGMAPS = "v1/configmaps"
PVCS = "v1/persistentvolumeclaims"
EVENTS = "v1/events"
TRAINJOB_RESOURCE = f"{TRAINER_GROUP}/{TRAINER_VERSION}/{TRAINJOBS}"
VERBS = ["get", "list", "watch", "create", "patch", "update", "delete"]


def declare(kmock: Any) -> None:
    """Everything the operator lists, watches or creates; kopf waits for the CRD resource itself."""
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
        "verbs": VERBS,
    }
    kmock.resources["v1/namespaces"] = {"kind": "Namespace", "namespaced": False, "verbs": VERBS}
    kmock.resources[EVENTS] = {"kind": "Event", "namespaced": True, "verbs": VERBS}
    kmock.resources[CONFIGMAPS] = {"kind": "ConfigMap", "namespaced": True, "verbs": VERBS}
    kmock.resources[PVCS] = {"kind": "PersistentVolumeClaim", "namespaced": True, "verbs": VERBS}
    kmock.resources[JOBS] = {"kind": "Job", "namespaced": True, "verbs": VERBS, "subresources": ["status"]}
    kmock.resources[LA] = {
        "kind": "LayerAdaptation",
        "namespaced": True,
        "verbs": VERBS,
        "subresources": ["status"],
        "shortnames": ["la"],
    }
    kmock.resources[TRAINJOB_RESOURCE] = {
        "kind": "TrainJob",
        "namespaced": True,
        "verbs": VERBS,
        "subresources": ["status"],
    }


def client(kmock: Any) -> Cluster:
    return Cluster.connect(str(kmock.url).rstrip("/"))


@contextlib.asynccontextmanager
async def operator(kmock: Any, config: OperatorConfig) -> AsyncIterator[asyncio.Task[None]]:
    """The real operator (kopf) in this event loop, talking HTTP to the emulator; stopped on exit."""
    server = str(kmock.url).rstrip("/")

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server)

    registry = build_registry(Settings(config, retry_delay_s=0.5), lambda: Cluster.connect(server), login)
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop)
    )
    try:
        yield task
    finally:
        stop.set_result(None)
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(task, timeout=10)


def resource(name: str, spec: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
    """A LayerAdaptation as the API server stores it: with the uid and generation it assigns."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LayerAdaptation",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid or str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": spec,
    }


async def apply(cluster: Cluster, body: dict[str, Any]) -> None:
    await asyncio.to_thread(cluster.create, body)


def base(body: dict[str, Any]) -> str:
    """The prefix of the resource's child names (`NAME-UID5`), as the operator derives it."""
    return Resource.of(body).base


async def apply_many(kmock: Any, spec: dict[str, Any], count: int, prefix: str, timeout: float) -> float:
    """Apply `count` resources at once; seconds until every one has its first Job (the plan)."""
    cluster = client(kmock)
    bodies = [resource(f"{prefix}-{i:03d}", spec) for i in range(count)]
    started = time.perf_counter()
    await asyncio.gather(*(apply(cluster, body) for body in bodies))
    names = {f"{base(body)}-plan" for body in bodies}
    await wait_for(lambda: names <= set(objects(kmock, JOBS)), timeout=timeout, what=f"{count} plan Jobs")
    return time.perf_counter() - started


def objects(kmock: Any, resource_key: str) -> dict[str, dict[str, Any]]:
    """name -> the live object, for one resource."""
    found = {}
    for (res, _ns, name), obj in list(kmock.objects.items()):
        if (
            f"{res.group + '/' if res.group else ''}{res.version}/{res.plural}" == resource_key
            and not obj.deleted
        ):
            found[name] = obj.raw
    return found


def history(kmock: Any, resource_key: str, name: str) -> list[dict[str, Any]]:
    """Every version of one object (how many times it was created, what its status went through)."""
    return [v.raw for v in kmock.objects[resource_key, NAMESPACE, name].history if v is not None]


async def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll until `check()` is truthy (never time.sleep: this loop serves the emulator too)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.05)


def phase(kmock: Any, name: str) -> str | None:
    obj = objects(kmock, LA).get(name)
    return (obj.get("status") or {}).get("phase") if obj else None


async def set_job_status(kmock: Any, name: str, status: dict[str, Any], kind: str = "Job") -> None:
    """Write a Job's status through the API, as the Job controller does (the operator sees the event)."""
    api = client(kmock)
    if kind == "Job":
        await asyncio.to_thread(api.batch.patch_namespaced_job_status, name, NAMESPACE, {"status": status})
    else:
        await asyncio.to_thread(
            api.custom.patch_namespaced_custom_object_status,
            TRAINER_GROUP,
            TRAINER_VERSION,
            NAMESPACE,
            TRAINJOBS,
            name,
            {"status": status},
        )


def completed(succeeded: int = 1) -> dict[str, Any]:
    return {
        "succeeded": succeeded,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True", "reason": "", "message": ""},
        ],
    }


def failed(
    reason: str = "BackoffLimitExceeded",
    message: str = "Job has reached the specified backoff limit",
    failed_indexes: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "failed": 1,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": reason},
            {"type": "Failed", "status": "True", "reason": reason, "message": message},
        ],
    }
    if failed_indexes:
        status["failedIndexes"] = failed_indexes
    return status
