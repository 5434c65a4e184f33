"""Where a `LayerAdaptation` runs on Kubernetes: its pods' image, requests, GPUs, nodes and volume.

The operator reads this section; the CLI ignores it. It is part of the one spec (`service.spec.models`),
so a resource and the file a user runs locally stay the same document.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from service.spec.section import Section


class AccessMode(StrEnum):
    read_write_once = "ReadWriteOnce"
    read_write_many = "ReadWriteMany"


_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"


class WorkspaceSpec(Section):
    claim_name: str | None = Field(
        None,
        description="An existing PersistentVolumeClaim to use as the workspace; null makes the operator "
        "create one per resource (deleted with it).",
    )
    size: str = Field(
        "20Gi",
        pattern=_QUANTITY,
        description="Size of the claim the operator creates (probe, patch, caches).",
    )
    storage_class_name: str | None = Field(
        None, description="Storage class of the claim the operator creates; null uses the cluster's default."
    )
    access_mode: AccessMode = Field(
        AccessMode.read_write_once,
        description="`ReadWriteOnce` (any single-node cluster: every pod then runs on the node holding the "
        "volume) or `ReadWriteMany` (NFS, EFS, Filestore, CephFS…: probe pods spread over nodes).",
    )


class ResourcesSpec(Section):
    image: str | None = Field(
        None,
        description="Container image for the operator's Jobs; null uses the operator's "
        "`LAYERPILOT_IMAGE`, else the image of this layerpilot release.",
    )
    gpus: int = Field(0, ge=0, description="GPUs (`nvidia.com/gpu`) per training pod (operator only).")
    probe_gpus: int = Field(0, ge=0, description="GPUs per probe pod (operator only).")
    probe_parallelism: int = Field(4, ge=1, description="Probe pods running at once (operator only).")
    nodes: int = Field(
        1,
        ge=1,
        description=(
            "Training nodes. More than 1 runs training as a Kubeflow Trainer `TrainJob` "
            "(`torch-distributed` runtime, torchrun), which the cluster must have installed."
        ),
    )
    cpu: str = Field("1", pattern=_QUANTITY, description="CPU request of every pod (e.g. `2`, `500m`).")
    memory: str = Field("4Gi", pattern=_QUANTITY, description="Memory request and limit of every pod.")
    workspace: WorkspaceSpec = Field(
        default_factory=WorkspaceSpec,
        description="The volume every Job mounts at /workspace: probe partials and report, training "
        "checkpoints and the layer patch travel through it.",
    )
    retries: int = Field(
        2,
        ge=0,
        le=10,
        description=(
            "Retries of a failed pod (per probe unit: `backoffLimitPerIndex`) before the Job fails."
        ),
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels every pod must match (e.g. a GPU node pool)."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations (e.g. for tainted GPU nodes), as in a PodSpec."
    )
    service_account_name: str | None = Field(
        None,
        description="Service account of the Jobs' pods; null runs them with no Kubernetes API token "
        "mounted (they never call the API).",
    )
