"""Pure builders: a resource's spec in, the Kubernetes objects its stages need out (plain dicts).

Nothing here talks to a cluster; tests compare dicts and validate them against the official
schemas. Every pod runs one `layerpilot` command of the CLI a user runs by hand, with the spec
mounted from a ConfigMap at /etc/layerpilot/spec.yaml and the work directory on the workspace
volume, so the stages hand files to each other the way `adapt` does in one directory:

    plan      layerpilot probe plan SPEC --out W/probe                  (exact mode)
    probe     layerpilot probe SPEC --out W/probe --layer-index job      (Indexed Job, one unit per index)
              layerpilot probe SPEC --mode gradient --out W/probe        (gradient / spectrum: one pod)
    merge     layerpilot probe merge W/probe --spec SPEC                 (exact mode)
    train     layerpilot train SPEC --from-probe W/probe/probe_report.json --out W/train --resume
              (with resources.nodes > 1: a Kubeflow Trainer TrainJob running it under torchrun)
    register  layerpilot register SPEC --probe W/probe --patch W/train

A spec that reuses a profile (`probe.reuse`) has no probe stages: its train Job takes the profile
(`layerpilot train SPEC --out W/train --resume` keeps a copy in W/train) and `register` reads it there.

Pods run as a non-root user on a read-only root filesystem, with scratch space in an emptyDir at
/tmp and no Kubernetes API token (they never call the API). MLflow credentials reach them only as
a mounted Secret file (`LAYERPILOT_MLFLOW_TOKEN_FILE`), never as a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml

from k8s.naming import (
    DEFAULT_IMAGE,
    MANAGER,
    SCRATCH,
    SPEC_DIR,
    SPEC_FILE,
    TOKEN_DIR,
    TOKEN_FILE,
    TRAINER_GROUP,
    TRAINER_RUNTIME,
    TRAINER_VERSION,
    WORKSPACE,
    Resource,
)
from service.spec.models import API_VERSION, KIND, LayerAdaptationSpec

RUN_AS: Final = 1000  # the image's `layerpilot` user
CONTAINER: Final = "layerpilot"
TRAINER_CONTAINER: Final = "node"  # the container of Kubeflow Trainer's torch-distributed runtime
EXIT_BAD_INPUT: Final = 2  # the CLI's exit code for bad input: retrying cannot help
POD_FAILURE_POLICY: Final = {
    "rules": [
        # Bad input fails the Job at once, with the command's one-line error in the pod's log.
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]},
        },
        # A pod evicted or preempted is not the command's fault: it does not use up a retry.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]
}
STAGES_EXACT: Final = ("plan", "probe", "merge", "train", "register")
STAGES_PROXY: Final = ("probe", "train", "register")
STAGES_REUSE: Final = ("train", "register")  # `probe.reuse`: the train Job reads the profile itself


@dataclass(frozen=True)
class Build:
    """What every builder needs: the resource, its validated spec, and the operator's defaults.

    `spec` is the effective spec (tracking URI and registered model filled in by the operator);
    it is what the ConfigMap holds and what every pod reads.
    """

    resource: Resource
    spec: LayerAdaptationSpec
    default_image: str = DEFAULT_IMAGE

    @property
    def image(self) -> str:
        return self.spec.resources.image or self.default_image

    @property
    def workdir(self) -> str:
        return self.resource.workdir

    @property
    def stages(self) -> tuple[str, ...]:
        if self.spec.probe.reuse is not None:
            return STAGES_REUSE
        return STAGES_EXACT if self.spec.probe.mode == "exact" else STAGES_PROXY

    @property
    def profile_dir(self) -> str:
        """Where the probe report the training and the registration read is: the probe's directory,
        or, for a reused profile, the copy the train Job keeps beside its patch."""
        return f"{self.workdir}/train" if self.spec.probe.reuse is not None else f"{self.workdir}/probe"

    @property
    def distributed(self) -> bool:
        return self.spec.resources.nodes > 1

    def claim_name(self) -> str:
        return self.spec.resources.workspace.claim_name or self.resource.child("workspace")


# -- ConfigMap and PVC --


def spec_document(build: Build) -> dict[str, Any]:
    """The resource as the pods read it: the whole document, with the effective spec."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": build.resource.name, "namespace": build.resource.namespace},
        "spec": build.spec.model_dump(mode="json", by_alias=True),
    }


def config_map(build: Build) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": build.resource.metadata(build.resource.child("spec")),
        "data": {"spec.yaml": yaml.safe_dump(spec_document(build), sort_keys=False)},
    }


def workspace_claim(build: Build) -> dict[str, Any] | None:
    """The workspace PVC the operator creates, or None when the spec names an existing claim."""
    workspace = build.spec.resources.workspace
    if workspace.claim_name:
        return None
    spec: dict[str, Any] = {
        "accessModes": [str(workspace.access_mode)],
        "resources": {"requests": {"storage": workspace.size}},
    }
    if workspace.storage_class_name:
        spec["storageClassName"] = workspace.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": build.resource.metadata(build.claim_name()),
        "spec": spec,
    }


# -- pods --


def command(build: Build, stage: str) -> list[str]:
    """The `layerpilot` command line of a stage (the container's whole command)."""
    spec, work = build.spec, build.workdir
    probe_dir, report = f"{work}/probe", f"{work}/probe/probe_report.json"
    if stage == "plan":
        return ["layerpilot", "probe", "plan", SPEC_FILE, "--out", probe_dir]
    if stage == "probe" and spec.probe.mode == "exact":
        return ["layerpilot", "probe", "run", SPEC_FILE, "--out", probe_dir, "--layer-index", "job"]
    if stage == "probe":
        return ["layerpilot", "probe", "run", SPEC_FILE, "--mode", str(spec.probe.mode), "--out", probe_dir]
    if stage == "merge":
        return ["layerpilot", "probe", "merge", probe_dir, "--spec", SPEC_FILE]
    if stage == "train":
        # A reused profile is read (and kept in the train directory) by the train command itself.
        layers = [] if spec.probe.reuse is not None else ["--from-probe", report]
        return ["layerpilot", "train", SPEC_FILE, *layers, "--out", f"{work}/train", "--resume"]
    if stage == "register":
        return [
            "layerpilot",
            "register",
            SPEC_FILE,
            "--probe",
            build.profile_dir,
            "--patch",
            f"{work}/train",
            "--out",
            f"{work}/register",
        ]
    raise ValueError(f"unknown stage {stage!r}")


def env(build: Build, stage: str, run_id: str | None) -> list[dict[str, Any]]:
    """Environment of a stage's container: where MLflow is, which run to adopt, where it runs."""
    tracking_uri = build.spec.mlflow.tracking_uri
    values: dict[str, str | None] = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_RUN_ID": run_id,
        "LAYERPILOT_NAMESPACE": build.resource.namespace,
        "LAYERPILOT_RESOURCE": build.resource.name,
        "LAYERPILOT_JOB": build.resource.child(stage),
        "HOME": SCRATCH,
        "MPLCONFIGDIR": f"{SCRATCH}/matplotlib",
        "HF_HOME": f"{WORKSPACE}/.cache/huggingface",  # models fetched once serve every later Job
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    if build.spec.mlflow.token_secret is not None:
        values["LAYERPILOT_MLFLOW_TOKEN_FILE"] = TOKEN_FILE
    entries: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items() if v is not None]
    entries.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    return entries


def volumes(build: Build) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": build.resource.child("spec")}},
        {"name": "workspace", "persistentVolumeClaim": {"claimName": build.claim_name()}},
        {"name": "scratch", "emptyDir": {}},
    ]
    secret = build.spec.mlflow.token_secret
    if secret is not None:
        found.append(
            {
                "name": "mlflow-token",
                "secret": {
                    "secretName": secret.name,
                    "items": [{"key": secret.key, "path": "token"}],
                    "defaultMode": 0o440,
                },
            }
        )
    return found


def volume_mounts(build: Build) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "workspace", "mountPath": WORKSPACE},
        {"name": "scratch", "mountPath": SCRATCH},
    ]
    if build.spec.mlflow.token_secret is not None:
        mounts.append({"name": "mlflow-token", "mountPath": TOKEN_DIR, "readOnly": True})
    return mounts


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    # TRL, torch and MLflow write only under HOME, MPLCONFIGDIR, /tmp and the workspace.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def container_resources(build: Build, gpus: int) -> dict[str, Any]:
    res = build.spec.resources
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, Any] = {"memory": res.memory}
    if gpus:
        requests["nvidia.com/gpu"] = gpus
        limits["nvidia.com/gpu"] = gpus
    return {"requests": requests, "limits": limits}


def pod_spec(build: Build, stage: str, run_id: str | None) -> dict[str, Any]:
    res = build.spec.resources
    gpus = res.gpus if stage == "train" else res.probe_gpus if stage == "probe" else 0
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": res.service_account_name is not None,
        "securityContext": pod_security(),
        "containers": [
            {
                "name": CONTAINER,
                "image": build.image,
                "command": command(build, stage),
                "workingDir": WORKSPACE,
                "env": env(build, stage, run_id),
                "resources": container_resources(build, gpus),
                "volumeMounts": volume_mounts(build),
                "securityContext": container_security(),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes(build),
    }
    if res.service_account_name:
        spec["serviceAccountName"] = res.service_account_name
    if res.node_selector:
        spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        spec["tolerations"] = list(res.tolerations)
    return spec


# -- Jobs --


def job(build: Build, stage: str, run_id: str | None, units: int | None = None) -> dict[str, Any]:
    """The Job of `stage`. The exact probe is an Indexed Job of `units` completions (one per unit)."""
    resource = build.resource
    name = resource.child(stage)
    template = {"metadata": {"labels": resource.labels(stage)}, "spec": pod_spec(build, stage, run_id)}
    spec: dict[str, Any] = {"template": template, "podFailurePolicy": POD_FAILURE_POLICY}
    retries = build.spec.resources.retries
    if stage == "probe" and build.spec.probe.mode == "exact":
        if not units:
            raise ValueError("the exact probe's Indexed Job needs the number of units (from the plan)")
        spec.update(
            completionMode="Indexed",
            completions=units,
            parallelism=min(build.spec.resources.probe_parallelism, units),
            backoffLimitPerIndex=retries,  # one flaky pod retries its own unit, not the probe
        )
    else:
        spec["backoffLimit"] = retries  # a retried train pod resumes from its newest checkpoint
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**resource.metadata(name, stage), "annotations": {"layerpilot.dev/managed-by": MANAGER}},
        "spec": spec,
    }


def train_job(build: Build, run_id: str | None) -> dict[str, Any]:
    """Multi-node training: a Kubeflow Trainer 2.3 TrainJob on the `torch-distributed` runtime.

    The runtime sets PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR/PORT, which torchrun reads; every
    rank runs the same `layerpilot train` command. Volumes and security reach the runtime's `node`
    container through `runtimePatches` (env must go in `trainer.env`: the webhook refuses it there).
    """
    resource, res = build.resource, build.spec.resources
    pod = pod_spec(build, "train", run_id)
    container = pod["containers"][0]
    patch_pod: dict[str, Any] = {
        "securityContext": pod["securityContext"],
        "volumes": pod["volumes"],
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "volumeMounts": container["volumeMounts"],
                "securityContext": container["securityContext"],
            }
        ],
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations"):
        if key in pod:
            patch_pod[key] = pod[key]
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": resource.metadata(resource.child("train"), "train"),
        "spec": {
            "runtimeRef": {
                "name": TRAINER_RUNTIME,
                "apiGroup": TRAINER_GROUP,
                "kind": "ClusterTrainingRuntime",
            },
            "trainer": {
                "image": build.image,
                "command": ["torchrun", "--no-python", *command(build, "train")],
                "env": container["env"],
                "numNodes": res.nodes,
                "numProcPerNode": max(res.gpus, 1),
                "resourcesPerNode": container["resources"],
            },
            "runtimePatches": [
                {
                    "manager": "layerpilot.dev/operator",
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": TRAINER_CONTAINER,
                                        "template": {"spec": {"template": {"spec": patch_pod}}},
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def stage_object(build: Build, stage: str, run_id: str | None, units: int | None = None) -> dict[str, Any]:
    """The object a stage runs as: a Job, or a TrainJob for multi-node training."""
    if stage == "train" and build.distributed:
        return train_job(build, run_id)
    return job(build, stage, run_id, units)
