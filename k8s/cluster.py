"""The few Kubernetes API calls the operator and `layerpilot k8s` make, on the official client.

Objects go in and come out as plain dicts (the builders' shape). Creating an object that exists
is success (`False`: it was there), which is what makes a retried handler or a restarted operator
safe. Any other API failure is a `ClusterError`, one line, which the operator retries with backoff.
"""

from __future__ import annotations

import json
import secrets
import socket
from typing import Any, Final

import kubernetes
from kubernetes.client.exceptions import ApiException

from k8s.naming import GROUP, PLURAL, TRAINER_GROUP, TRAINER_VERSION, TRAINJOBS, VERSION
from k8s.status import now
from service.errors import LayerpilotError
from service.spec.models import API_VERSION, KIND

COMPONENT: Final = "layerpilot-operator"


class ClusterError(LayerpilotError):
    """The API server refused or did not answer; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except (TypeError, ValueError):
        return str(error.reason)


class Cluster:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    @classmethod
    def connect(cls, server: str | None = None) -> Cluster:
        """In a pod: its service account; elsewhere: the kubeconfig's current context; or `server`."""
        if server is not None:
            config = kubernetes.client.Configuration()
            config.host = server
            return cls(kubernetes.client.ApiClient(config))
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            try:
                kubernetes.config.load_kube_config()
            except (kubernetes.config.ConfigException, OSError) as error:
                raise ClusterError(
                    f"no cluster to talk to: not in a pod and no usable kubeconfig ({error}); "
                    "set KUBECONFIG or run `kubectl config use-context`"
                ) from None
        return cls(kubernetes.client.ApiClient())

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    def _call(self, what: str, action: Any) -> Any:
        try:
            return action()
        except ApiException as error:
            raise ClusterError(f"{what}: {error.status} {_reason(error)}", error.status) from None
        except Exception as error:  # urllib3 connection errors and the like
            raise ClusterError(f"{what}: the API server at {self.server} did not answer ({error})") from None

    # -- read --

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object as a dict, or None when it does not exist."""
        readers = {
            KIND: lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
            "TrainJob": lambda: self.custom.get_namespaced_custom_object(
                TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOBS, name
            ),
            "Job": lambda: _raw(self.batch.read_namespaced_job(name, namespace, _preload_content=False)),
            "ConfigMap": lambda: _raw(
                self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            ),
            "PersistentVolumeClaim": lambda: _raw(
                self.core.read_namespaced_persistent_volume_claim(name, namespace, _preload_content=False)
            ),
        }
        try:
            return dict(self._call(f"reading {kind} {namespace}/{name}", readers[kind]))
        except ClusterError as error:
            if error.status == 404:
                return None
            raise

    # -- write --

    def create(self, obj: dict[str, Any]) -> bool:
        """Create `obj`; True if created, False if it already existed (which is success)."""
        kind, meta = obj["kind"], obj["metadata"]
        body: Any = obj  # the typed APIs send a plain dict as it is
        namespace = meta.get("namespace") or "default"
        creators = {
            KIND: lambda: self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj),
            "TrainJob": lambda: self.custom.create_namespaced_custom_object(
                TRAINER_GROUP, TRAINER_VERSION, namespace, TRAINJOBS, obj
            ),
            "Job": lambda: self.batch.create_namespaced_job(namespace, body, _preload_content=False),
            "ConfigMap": lambda: self.core.create_namespaced_config_map(
                namespace, body, _preload_content=False
            ),
            "PersistentVolumeClaim": lambda: self.core.create_namespaced_persistent_volume_claim(
                namespace, body, _preload_content=False
            ),
            "Event": lambda: self.core.create_namespaced_event(namespace, body, _preload_content=False),
        }
        try:
            self._call(f"creating {kind} {namespace}/{meta.get('name')}", creators[kind])
        except ClusterError as error:
            if error.status == 409:
                return False
            raise
        return True

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge `status` into the resource's status subresource."""
        self._call(
            f"updating the status of {KIND} {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}
            ),
        )

    def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the resource (what `kubectl describe` shows); best effort."""
        meta = body.get("metadata", {})
        stamp = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{secrets.token_hex(8)}",
                "namespace": meta.get("namespace") or "default",
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta.get("name"),
                "namespace": meta.get("namespace") or "default",
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": COMPONENT},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": socket.gethostname()[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self.create(event)


def _raw(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.data))


def default_namespace() -> str:
    """The namespace of the kubeconfig's current context (in a pod: the pod's), else `default`."""
    in_pod = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(in_pod) as handle:
            return handle.read().strip() or "default"
    except OSError:
        pass
    try:
        _, current = kubernetes.config.list_kube_config_contexts()
    except (kubernetes.config.ConfigException, OSError, TypeError):
        return "default"
    return str((current or {}).get("context", {}).get("namespace") or "default")
