"""Run context provider: tags every MLflow run started in a layerpilot Kubernetes Job with where it ran.

MLflow asks each registered provider `in_context()` at every run creation, so the check is one
environment lookup: `KUBERNETES_SERVICE_HOST`, which the kubelet sets in every pod. Outside a pod the
provider adds nothing. The operator sets the other variables on its Jobs (`POD_NAME` through the
downward API); a variable that is missing simply leaves its tag out.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking.context.abstract_context import RunContextProvider

from service import __version__

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
# tag -> environment variables tried in order
TAG_SOURCES: dict[str, tuple[str, ...]] = {
    "layerpilot.k8s.namespace": ("LAYERPILOT_NAMESPACE", "POD_NAMESPACE"),
    "layerpilot.k8s.resource": ("LAYERPILOT_RESOURCE",),
    "layerpilot.k8s.job": ("LAYERPILOT_JOB",),
    "layerpilot.k8s.pod": ("POD_NAME", "HOSTNAME"),
}
# Every pod with a service account has its namespace here, even when the Job sets no variable.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubernetesRunContext(RunContextProvider):
    def in_context(self) -> bool:
        return bool(os.environ.get(IN_CLUSTER_ENV))

    def tags(self) -> dict[str, str]:
        tags = {"layerpilot.version": __version__}
        for tag, names in TAG_SOURCES.items():
            value = next((os.environ[n] for n in names if os.environ.get(n)), None)
            if value:
                tags[tag] = value
        if "layerpilot.k8s.namespace" not in tags and SERVICE_ACCOUNT_NAMESPACE.is_file():
            tags["layerpilot.k8s.namespace"] = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return tags
