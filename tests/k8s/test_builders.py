"""Pure builders and manifests: compared as dicts, validated against the official schemas."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from k8s import manifests
from k8s.builders import Build, config_map, job, stage_object, train_job, workspace_claim
from k8s.crd import IMMUTABLE_MESSAGE, crd
from k8s.naming import Resource
from k8s.reconcile import InvalidSpec, OperatorConfig, effective_spec
from service.spec.loading import load_spec
from tests.k8s.schemas import TRAINJOB_CRD, crd_errors, structural_problems, validate_builtin

UID = "0c5e1a2b-77aa-4bb1-9a3e-5d6f7a8b9c0d"
RESOURCE = Resource("ml", "demo-arith", UID)
OWNER = {
    "apiVersion": "layerpilot.dev/v1alpha1",
    "kind": "LayerAdaptation",
    "name": "demo-arith",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}


def build(**spec: Any) -> Build:
    data = {"mlflow": {"trackingUri": "http://mlflow:5000", "registeredModel": "demo"}, **spec}
    return Build(RESOURCE, load_spec(data), "img:1")


def test_child_names_are_deterministic_valid_dns_labels_from_name_and_uid() -> None:
    assert RESOURCE.child("register") == "demo-arith-0c5e1-register"
    long = Resource("ml", "A.Very_Long.Name" * 8, UID)
    assert len(long.child("register")) <= 63 and long.child("register").startswith("a-very-long-name")
    assert Resource("ml", "7up", UID).base == "la-7up-0c5e1"


def test_the_exact_probe_is_an_indexed_job_with_one_completion_per_unit() -> None:
    built = job(build(resources={"probeParallelism": 3, "retries": 1}), "probe", None, units=8)
    spec = built["spec"]
    assert {k: spec[k] for k in ("completionMode", "completions", "parallelism", "backoffLimitPerIndex")} == {
        "completionMode": "Indexed",
        "completions": 8,
        "parallelism": 3,
        "backoffLimitPerIndex": 1,
    }
    assert built["metadata"]["ownerReferences"] == [OWNER]
    fail_fast = spec["podFailurePolicy"]["rules"][0]
    assert fail_fast["action"] == "FailJob" and fail_fast["onExitCodes"]["values"] == [2]  # bad input
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [
        "layerpilot",
        "probe",
        "run",
        "/etc/layerpilot/spec.yaml",
        "--out",
        "/workspace/demo-arith-0c5e1/probe",
        "--layer-index",
        "job",
    ]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/layerpilot", "/workspace", "/tmp"}
    with pytest.raises(ValueError, match="number of units"):
        job(build(), "probe", None)


def test_stage_commands_hand_files_to_each_other_through_the_workdir() -> None:
    b = build()
    commands = {
        stage: job(b, stage, "run1", units=3)["spec"]["template"]["spec"]["containers"][0]["command"]
        for stage in b.stages
    }
    w = "/workspace/demo-arith-0c5e1"
    assert commands["merge"] == [
        "layerpilot",
        "probe",
        "merge",
        f"{w}/probe",
        "--spec",
        "/etc/layerpilot/spec.yaml",
    ]
    assert commands["train"] == [
        "layerpilot",
        "train",
        "/etc/layerpilot/spec.yaml",
        "--from-probe",
        f"{w}/probe/probe_report.json",
        "--out",
        f"{w}/train",
        "--resume",
    ]
    # the register Job's record (its evaluation) stays in the workspace, for a later sync
    assert commands["register"][-6:] == [
        "--probe",
        f"{w}/probe",
        "--patch",
        f"{w}/train",
        "--out",
        f"{w}/register",
    ]
    proxy = build(probe={"mode": "gradient"})
    assert proxy.stages == ("probe", "train", "register")
    assert job(proxy, "probe", "r")["spec"]["template"]["spec"]["containers"][0]["command"][4:6] == [
        "--mode",
        "gradient",
    ]


def test_gpus_are_requested_for_training_only_and_the_token_is_a_mounted_file() -> None:
    b = build(resources={"gpus": 2}, mlflow={"trackingUri": "http://m:5000", "tokenSecret": {"name": "tok"}})
    train = job(b, "train", "r")["spec"]["template"]["spec"]
    (container,) = train["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LAYERPILOT_MLFLOW_TOKEN_FILE"] == "/var/run/secrets/layerpilot/mlflow/token"
    assert "LAYERPILOT_MLFLOW_TOKEN" not in env
    items = [{"key": "token", "path": "token"}]
    secret = {"secretName": "tok", "items": items, "defaultMode": 0o440}
    assert {"name": "mlflow-token", "secret": secret} in train["volumes"]
    merge = job(b, "merge", "r")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in merge["resources"]["limits"]


def test_the_configmap_holds_the_effective_spec_and_the_claim_is_made_unless_named() -> None:
    body = {
        "metadata": {"name": "demo-arith", "namespace": "ml", "uid": UID},
        "spec": {"probe": {"steps": 3}},
    }
    spec = effective_spec(body, OperatorConfig(tracking_uri="http://mlflow:5000"))
    b = Build(RESOURCE, spec)
    doc = yaml.safe_load(config_map(b)["data"]["spec.yaml"])
    assert doc["spec"]["mlflow"]["trackingUri"] == "http://mlflow:5000"
    assert doc["spec"]["mlflow"]["registeredModel"] == "demo-arith"  # defaults to the resource's name
    assert load_spec(doc).probe.steps == 3
    claim = workspace_claim(b)
    assert claim is not None and claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert workspace_claim(build(resources={"workspace": {"claimName": "shared"}})) is None


@pytest.mark.parametrize(
    ("spec", "config", "field"),
    [
        ({}, OperatorConfig(), "spec.mlflow.trackingUri"),
        ({"mlflow": {"trackingUri": "sqlite:///x.db"}}, OperatorConfig(), "spec.mlflow.trackingUri"),
        ({"mlflow": {"trackingUri": "http://u:p@mlflow:5000"}}, OperatorConfig(), "spec.mlflow.trackingUri"),
        ({"probe": {"layers": "some"}}, OperatorConfig(tracking_uri="http://m:5000"), "spec.probe.layers"),
    ],
)
def test_an_invalid_resource_spec_is_one_line_naming_the_field(
    spec: dict[str, Any], config: OperatorConfig, field: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        effective_spec({"metadata": {"name": "x"}, "spec": spec}, config)
    assert str(caught.value).startswith(field) and "\n" not in str(caught.value)


def test_multi_node_training_is_a_trainjob_that_validates_against_the_trainer_2_3_crd() -> None:
    b = build(resources={"nodes": 2, "gpus": 1, "nodeSelector": {"pool": "gpu"}})
    built = stage_object(b, "train", "run1")
    assert built == train_job(b, "run1") and built["kind"] == "TrainJob"
    trainer = built["spec"]["trainer"]
    assert trainer["command"][:4] == ["torchrun", "--no-python", "layerpilot", "train"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 1)
    assert not [e for e in trainer["env"] if e["name"].startswith("PET_")]  # the runtime sets those
    assert built["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert crd_errors(built, TRAINJOB_CRD) == []
    bad = {**built, "spec": {**built["spec"], "trainer": {**trainer, "numProcPerNode": "auto"}}}
    assert crd_errors(bad, TRAINJOB_CRD)  # the check can fail


def test_every_object_for_the_example_resource_validates_against_kubernetes_1_33() -> None:
    example = manifests.example()
    spec = effective_spec(
        {**example, "metadata": {**example["metadata"], "uid": UID}},
        OperatorConfig(tracking_uri="http://m:5000"),
    )
    b = Build(Resource("default", "demo-arith", UID), spec)
    objects = [config_map(b), workspace_claim(b)]
    objects += [stage_object(b, stage, "run", units=8) for stage in b.stages]
    for obj in objects:
        assert obj is not None
        validate_builtin(obj)


def test_the_crd_is_structural_generated_from_the_spec_and_immutable() -> None:
    generated = crd()
    version = generated["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []
    spec = schema["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == [{"rule": "self == oldSelf", "message": IMMUTABLE_MESSAGE}]
    algorithm = spec["properties"]["algorithm"]["properties"]
    assert algorithm["lossType"]["enum"] == ["grpo", "dr_grpo", "dapo"]
    assert algorithm["learningRate"]["exclusiveMinimum"] is True and algorithm["learningRate"]["minimum"] == 0
    assert "Learning rate" in algorithm["learningRate"]["description"]
    assert spec["properties"]["resources"]["properties"]["probeParallelism"]["default"] == 4
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Layers",
        "Model",
        "Version",
        "Age",
    ]
    assert generated["spec"]["names"]["shortNames"] == ["la"]
    validate_builtin(generated)


def test_the_example_and_the_demo_resource_validate_against_our_crd() -> None:
    from pathlib import Path

    generated = crd()
    demo = yaml.safe_load((Path(__file__).parents[2] / "examples" / "demo.yaml").read_text())
    assert crd_errors(manifests.example(), generated) == []
    assert crd_errors(demo, generated) == []
    assert crd_errors({**demo, "spec": {**demo["spec"], "probe": {"stpes": 3}}}, generated)
    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert {path.name for path in examples} >= {"agent.yaml", "code.yaml", "demo.yaml", "reasoning.yaml"}
    for path in examples:  # every shipped example
        document = yaml.safe_load(path.read_text())
        assert crd_errors(document, generated) == []
        assert crd_errors(
            {**document, "spec": {**document["spec"], "environment": {"maxTurns": 3}}}, generated
        )


def test_committed_manifests_are_what_the_code_generates_and_all_validate() -> None:
    for name, text in manifests.rendered_files().items():
        committed = manifests.DIRECTORY / name
        assert committed.read_text() == text, f"{committed} is stale: run `make manifests`"
        for doc in yaml.safe_load_all(text):
            if doc["kind"] == "LayerAdaptation":
                assert crd_errors(doc, crd()) == []
            else:
                validate_builtin(doc)
    role = next(d for d in manifests.rbac() if d["kind"] == "ClusterRole")
    assert all("*" not in rule["verbs"] and "delete" not in rule["verbs"] for rule in role["rules"])
    assert "# StatusWriter.flush writes" in (manifests.DIRECTORY / "rbac.yaml").read_text()
