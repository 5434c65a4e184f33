"""The custom resource's identity, and the names, labels and paths of everything the operator creates.

Every child name is a pure function of the resource's name and uid: a retried handler or a
restarted operator computes the same name, finds what it created before, and never makes a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from service import __version__
from service.spec.models import API_VERSION, KIND

GROUP: Final = "layerpilot.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "layeradaptations"
SINGULAR: Final = "layeradaptation"
SHORT_NAME: Final = "la"
assert f"{GROUP}/{VERSION}" == API_VERSION

TRAINER_GROUP: Final = "trainer.kubeflow.org"
TRAINER_VERSION: Final = "v1alpha1"
TRAINJOBS: Final = "trainjobs"
TRAINER_RUNTIME: Final = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer 2.3 ships

DEFAULT_IMAGE: Final = f"ghcr.io/layerpilot/layerpilot:{__version__}"
IMAGE_ENV: Final = "LAYERPILOT_IMAGE"  # the operator's default image for Jobs (its Deployment sets it)

# Labels on every child: what manages it, which resource and stage it belongs to.
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGER: Final = "layerpilot-operator"
PART_OF: Final = "app.kubernetes.io/part-of"
RESOURCE_LABEL: Final = f"{GROUP}/adaptation"
UID_LABEL: Final = f"{GROUP}/uid"
STAGE_LABEL: Final = f"{GROUP}/stage"

# Paths inside every Job's pod.
SPEC_DIR: Final = "/etc/layerpilot"
SPEC_FILE: Final = f"{SPEC_DIR}/spec.yaml"
WORKSPACE: Final = "/workspace"
TOKEN_DIR: Final = "/var/run/secrets/layerpilot/mlflow"
TOKEN_FILE: Final = f"{TOKEN_DIR}/token"
SCRATCH: Final = "/tmp"

_UNSAFE = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Resource:
    """The identity of one `LayerAdaptation`: enough to name, label and own its children."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Resource:
        meta = body.get("metadata", {})
        return cls(str(meta.get("namespace") or "default"), str(meta["name"]), str(meta.get("uid", "")))

    @property
    def base(self) -> str:
        """Prefix of child names: a DNS label that starts with a letter, ≤ 46 characters.

        >>> Resource("ns", "Demo.Arith", "0c5e1a2b-77aa-4bb1-9a3e-5d6f7a8b9c0d").base
        'demo-arith-0c5e1'
        """
        stem = _UNSAFE.sub("-", self.name.lower()).strip("-")[:40].rstrip("-") or "la"
        if not stem[0].isalpha():
            stem = f"la-{stem}"[:40].rstrip("-")
        return f"{stem}-{self.uid.replace('-', '')[:5]}"

    def child(self, stage: str) -> str:
        """The name of the child for `stage`; the longest (`…-register`) stays a valid Job name."""
        return f"{self.base}-{stage}"

    @property
    def workdir(self) -> str:
        """Where this resource's Jobs keep their files on the workspace volume."""
        return f"{WORKSPACE}/{self.base}"

    def labels(self, stage: str | None = None) -> dict[str, str]:
        labels = {
            MANAGED_BY: MANAGER,
            PART_OF: "layerpilot",
            RESOURCE_LABEL: self.name[:63].rstrip("-_."),
            UID_LABEL: self.uid,
        }
        if stage is not None:
            labels[STAGE_LABEL] = stage
        return labels

    def owner_reference(self) -> dict[str, Any]:
        """Children are deleted with the resource; `controller` marks the operator's own children."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, stage: str | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(stage),
            "ownerReferences": [self.owner_reference()],
        }
