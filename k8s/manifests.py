"""What a cluster needs to run the operator, generated: CRD, RBAC, the operator's Deployment, an example.

`layerpilot k8s manifests` prints them; the files under `k8s/manifests/` are this module's output
with the defaults (`make manifests` rewrites them; a test fails when they differ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from k8s.builders import container_security, pod_security
from k8s.crd import crd
from k8s.naming import DEFAULT_IMAGE, GROUP, IMAGE_ENV, PLURAL, TRAINER_GROUP, TRAINJOBS
from service.spec.demo import demo_document

NAMESPACE: Final = "layerpilot-system"
NAME: Final = "layerpilot-operator"
TOKEN_SECRET: Final = "layerpilot-mlflow-token"  # optional: the operator's own MLflow bearer token
DEFAULT_TRACKING_URI: Final = "http://mlflow.mlflow.svc.cluster.local:5000"
FILES: Final = ("crd.yaml", "rbac.yaml", "operator.yaml", "example.yaml")
DIRECTORY: Final = Path(__file__).parent / "manifests"
LABELS: Final = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "layerpilot"}

# Each rule names the handler that needs it (k8s/operator.py, k8s/reconcile.py); nothing else is granted.
RULES: Final[list[tuple[str, dict[str, Any]]]] = [
    (
        "kopf watches LayerAdaptations (list, watch), reconcile reads one (get), kopf keeps its handler "
        "progress in annotations (patch)",
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    ),
    (
        "StatusWriter.flush writes phase, conditions, layers and the model version",
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
    ),
    (
        "child_changed watches the Jobs it created; reconcile reads and creates them",
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create"]},
    ),
    (
        "the same for multi-node training, as Kubeflow Trainer TrainJobs",
        {"apiGroups": [TRAINER_GROUP], "resources": [TRAINJOBS], "verbs": ["get", "list", "watch", "create"]},
    ),
    (
        "reconcile creates the spec ConfigMap and the workspace claim of each resource (never reads them)",
        {"apiGroups": [""], "resources": ["configmaps", "persistentvolumeclaims"], "verbs": ["create"]},
    ),
    (
        "StatusWriter.flush (and kopf) post an Event on each transition",
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ),
    (
        "kopf discovers which resources exist before it watches them",
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        },
    ),
    (
        "kopf follows namespaces when it watches the whole cluster",
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ),
]


def rbac() -> list[dict[str, Any]]:
    meta = {"name": NAME, "labels": LABELS}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": LABELS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**meta, "namespace": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta,
            "rules": [rule for _, rule in RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
    ]


def operator(image: str = DEFAULT_IMAGE, tracking_uri: str = DEFAULT_TRACKING_URI) -> list[dict[str, Any]]:
    """The operator's settings (a ConfigMap) and its Deployment: one replica, restarted, never doubled."""
    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS},
        "data": {"MLFLOW_TRACKING_URI": tracking_uri, IMAGE_ENV: image},
    }
    container = {
        "name": "operator",
        "image": image,
        "command": ["layerpilot", "operator", "run"],
        "envFrom": [{"configMapRef": {"name": NAME}}],
        "env": [
            {"name": "LAYERPILOT_MLFLOW_TOKEN_FILE", "value": "/var/run/secrets/layerpilot/mlflow/token"},
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        ],
        "ports": [{"name": "health", "containerPort": 8080}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "initialDelaySeconds": 30,
            "periodSeconds": 30,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "mlflow-token", "mountPath": "/var/run/secrets/layerpilot/mlflow", "readOnly": True},
            {"name": "scratch", "mountPath": "/tmp"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS},
        "spec": {
            "replicas": 1,  # standalone kopf: one operator at a time
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": pod_security(),
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "mlflow-token",
                            "secret": {
                                "secretName": TOKEN_SECRET,
                                "optional": True,  # only for an MLflow behind an auth gateway
                                "items": [{"key": "token", "path": "token"}],
                                "defaultMode": 0o440,
                            },
                        },
                        {"name": "scratch", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    return [settings, deployment]


def example() -> dict[str, Any]:
    """The demo (`examples/demo.yaml`, as written) as a resource for a small cluster (kind, k3d): in the
    `default` namespace, on CPU, with a 2 GiB single-node volume."""
    document = demo_document()
    return {
        **document,
        "metadata": {**document.get("metadata", {}), "namespace": "default"},
        "spec": {
            **document["spec"],
            "resources": {
                "probeParallelism": 2,
                "cpu": "1",
                "memory": "2Gi",
                "workspace": {"size": "2Gi", "accessMode": "ReadWriteOnce"},
            },
        },
    }


def documents(
    image: str = DEFAULT_IMAGE, tracking_uri: str = DEFAULT_TRACKING_URI
) -> dict[str, list[dict[str, Any]]]:
    """File name -> the documents it holds."""
    return {
        "crd.yaml": [crd()],
        "rbac.yaml": rbac(),
        "operator.yaml": operator(image, tracking_uri),
        "example.yaml": [example()],
    }


def render(docs: list[dict[str, Any]], header: str | None = None) -> str:
    text = "---\n".join(yaml.safe_dump(doc, sort_keys=False, width=100) for doc in docs)
    return (f"# {header}\n" if header else "") + text


def rendered_files(image: str = DEFAULT_IMAGE, tracking_uri: str = DEFAULT_TRACKING_URI) -> dict[str, str]:
    header = "Generated by `layerpilot k8s manifests` (make manifests); do not edit."
    out = {}
    for name, docs in documents(image, tracking_uri).items():
        text = render(docs, header)
        if name == "rbac.yaml":
            text = _comment_rules(text)
        out[name] = text
    return out


def _comment_rules(text: str) -> str:
    """Put each rule's reason above it in the ClusterRole (YAML has no comments of its own)."""
    lines, reasons = text.splitlines(), iter(reason for reason, _ in RULES)
    out: list[str] = []
    in_rules = False
    for line in lines:
        if line.startswith("rules:"):
            in_rules = True
        elif in_rules and not line.startswith((" ", "-")):
            in_rules = False
        if in_rules and line.startswith("- apiGroups:"):
            out.append(f"# {next(reasons)}")
        out.append(line)
    return "\n".join(out) + "\n"


def write(directory: Path = DIRECTORY) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_files().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path)
