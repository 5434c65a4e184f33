"""The real operator (kopf) against the kmock emulator, with a real MLflow server.

The test plays the Job controller (it writes Job status through the API) and what each Job's
command leaves in MLflow (the tags the real commands set; `test_e2e.py` runs the real commands).
"""

from __future__ import annotations

from typing import Any

import pytest
from mlflow import MlflowClient

from k8s.reconcile import OperatorConfig
from service.tracking import review
from tests.k8s.emulator import (
    CONFIGMAPS,
    EVENTS,
    JOBS,
    LA,
    PVCS,
    TRAINJOB_RESOURCE,
    apply,
    apply_many,
    client,
    completed,
    declare,
    failed,
    history,
    objects,
    operator,
    phase,
    resource,
    set_job_status,
    wait_for,
)
from tests.k8s.emulator import base as child_base

SPEC: dict[str, Any] = {
    "probe": {"mode": "exact", "steps": 2, "layers": [1, 2, 3]},
    "resources": {"probeParallelism": 2, "image": "registry.example/layerpilot:test"},
    "mlflow": {"experiment": "operator-tests", "registeredModel": "op-model"},
}


@pytest.fixture
def config(mlflow_server: Any) -> OperatorConfig:
    return OperatorConfig(default_image="registry.example/layerpilot:default", tracking_uri=mlflow_server.uri)


def status(kmock: Any, name: str) -> dict[str, Any]:
    return objects(kmock, LA)[name].get("status") or {}


def job(kmock: Any, name: str) -> dict[str, Any] | None:
    return objects(kmock, JOBS).get(name)


def play(mlflow_uri: str, run_id: str, tags: dict[str, str]) -> None:
    """What a stage's command leaves in its adopted run (as `probe plan`, `merge`, `register` do)."""
    client_ = MlflowClient(mlflow_uri)
    for key, value in tags.items():
        client_.set_tag(run_id, key, value)


async def test_a_resource_runs_plan_probe_merge_train_register_to_succeeded(
    kmock: Any, config: OperatorConfig, mlflow_server: Any
) -> None:
    declare(kmock)
    cluster = client(kmock)
    body = resource("arith", SPEC)
    async with operator(kmock, config):
        await apply(cluster, body)
        base = child_base(body)

        plan = await wait_for(lambda: job(kmock, f"{base}-plan"), what="the plan Job")
        await wait_for(lambda: phase(kmock, "arith") == "Probing", what="Probing")
        container = plan["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == [
            "layerpilot",
            "probe",
            "plan",
            "/etc/layerpilot/spec.yaml",
            "--out",
            f"/workspace/{base}/probe",
        ]
        assert container["image"] == "registry.example/layerpilot:test"
        env = {e["name"]: e.get("value") for e in container["env"]}
        run_ids = status(kmock, "arith")["mlflow"]["runIds"]
        assert env["MLFLOW_RUN_ID"] == run_ids["probe"] and env["MLFLOW_TRACKING_URI"] == mlflow_server.uri
        assert f"{base}-spec" in objects(kmock, CONFIGMAPS) and f"{base}-workspace" in objects(kmock, PVCS)

        play(mlflow_server.uri, run_ids["probe"], {review.PROBE_UNITS: "5"})
        await set_job_status(kmock, f"{base}-plan", completed())
        probe = await wait_for(lambda: job(kmock, f"{base}-probe"), what="the probe Indexed Job")
        assert probe["spec"]["completionMode"] == "Indexed"
        assert (probe["spec"]["completions"], probe["spec"]["parallelism"]) == (5, 2)
        assert probe["spec"]["backoffLimitPerIndex"] == 2
        unit = probe["spec"]["template"]["spec"]["containers"][0]
        assert unit["command"][-2:] == ["--layer-index", "job"]
        assert "MLFLOW_RUN_ID" not in {e["name"] for e in unit["env"]}  # units write partials; merge logs

        await set_job_status(kmock, f"{base}-probe", completed(5))
        merge = await wait_for(lambda: job(kmock, f"{base}-merge"), what="the merge Job")
        probed = next(c for c in status(kmock, "arith")["conditions"] if c["type"] == "Probed")
        assert probed["status"] == "False"  # not before the merge has the report
        assert MlflowClient(mlflow_server.uri).get_run(run_ids["probe"]).info.status == "RUNNING"
        assert merge["spec"]["template"]["spec"]["containers"][0]["command"][:3] == [
            "layerpilot",
            "probe",
            "merge",
        ]
        play(mlflow_server.uri, run_ids["probe"], {review.SELECTED_LAYERS: "2", review.TOP_LAYERS: "2,1,3"})
        await set_job_status(kmock, f"{base}-merge", completed())

        train = await wait_for(lambda: job(kmock, f"{base}-train"), what="the train Job")
        await wait_for(lambda: phase(kmock, "arith") == "Training", what="Training")
        st = status(kmock, "arith")
        assert (st["selectedLayers"], st["topLayers"]) == ([2], [2, 1, 3])
        assert "--from-probe" in train["spec"]["template"]["spec"]["containers"][0]["command"]
        await set_job_status(kmock, f"{base}-train", completed())

        register = await wait_for(lambda: job(kmock, f"{base}-register"), what="the register Job")
        await wait_for(lambda: phase(kmock, "arith") == "Registering", what="Registering")
        reg_env = {
            e["name"]: e.get("value") for e in register["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert reg_env["MLFLOW_RUN_ID"] == run_ids["adapt"]
        play(
            mlflow_server.uri,
            run_ids["adapt"],
            {review.REGISTERED_MODEL: "op-model", review.MODEL_VERSION: "7"},
        )
        await set_job_status(kmock, f"{base}-register", completed())

        await wait_for(lambda: phase(kmock, "arith") == "Succeeded", what="Succeeded")
        st = status(kmock, "arith")
        assert (st["registeredModel"], st["modelVersion"]) == ("op-model", "7")
        conditions = {c["type"]: c for c in st["conditions"]}
        assert {k: c["status"] for k, c in conditions.items()} == {
            "Probed": "True",
            "Trained": "True",
            "Registered": "True",
            "Ready": "True",
        }
        assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in conditions.values())
        assert st["completedStages"] == ["plan", "probe", "merge", "train", "register"]

    # Every child is owned by the resource (kmock runs no garbage collector: check the references).
    uid = body["metadata"]["uid"]
    children = [
        *objects(kmock, JOBS).values(),
        *objects(kmock, CONFIGMAPS).values(),
        *objects(kmock, PVCS).values(),
    ]
    assert len(children) == 7
    for child in children:
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "LayerAdaptation",
            "arith",
            uid,
            True,
        )
    # One event per transition, on the resource.
    reasons = [e["reason"] for e in objects(kmock, EVENTS).values() if e["involvedObject"]["name"] == "arith"]
    assert {"Accepted", "Probing", "Training", "Registering", "Succeeded"} <= set(reasons)
    # MLflow: the parent and stage runs ended FINISHED with the resource.
    mlflow = MlflowClient(mlflow_server.uri)
    run_ids = status(kmock, "arith")["mlflow"]["runIds"]
    assert {mlflow.get_run(r).info.status for r in run_ids.values()} == {"FINISHED"}
    parent = mlflow.get_run(run_ids["adapt"])
    assert parent.data.tags["layerpilot.k8s.uid"] == uid
    assert parent.data.params["probe.layers"] == "[1, 2, 3]"
    for stage in ("probe", "train"):
        assert mlflow.get_run(run_ids[stage]).data.tags["mlflow.parentRunId"] == run_ids["adapt"]


async def test_restarting_the_operator_mid_phase_creates_no_second_job_or_run(
    kmock: Any, config: OperatorConfig, mlflow_server: Any
) -> None:
    declare(kmock)
    cluster = client(kmock)
    body = resource("restart", {**SPEC, "probe": {"mode": "gradient"}})
    base = child_base(body)
    async with operator(kmock, config):
        await apply(cluster, body)
        await wait_for(lambda: job(kmock, f"{base}-probe"), what="the probe Job")
    first = status(kmock, "restart")
    # A new operator process resumes the resource: the Job exists, so it is found, not made again.
    async with operator(kmock, config):
        await set_job_status(kmock, f"{base}-probe", completed())
        await wait_for(lambda: job(kmock, f"{base}-train"), what="the train Job after the restart")
    assert sorted(objects(kmock, JOBS)) == [f"{base}-probe", f"{base}-train"]
    # Created once, then only its status written: a second create would have been refused (409).
    assert [bool(v.get("status")) for v in history(kmock, JOBS, f"{base}-probe")] == [False, True]
    assert status(kmock, "restart")["mlflow"]["runIds"]["adapt"] == first["mlflow"]["runIds"]["adapt"]
    runs = MlflowClient(mlflow_server.uri).search_runs(
        [first["mlflow"]["experimentId"]], f"tags.`layerpilot.k8s.uid` = '{body['metadata']['uid']}'"
    )
    assert sorted(r.data.tags["layerpilot.stage"] for r in runs) == ["adapt", "probe", "train"]


async def test_a_resource_that_reuses_a_profile_runs_no_probe_jobs_and_says_which_profile(
    kmock: Any, config: OperatorConfig, mlflow_server: Any
) -> None:
    declare(kmock)
    body = resource("reuse", {**SPEC, "probe": {"reuse": "mlflow"}})
    base, work = child_base(body), f"/workspace/{child_base(body)}"
    profile = "exact probe on builtin:arith, reused from MLflow run 4f2e"
    async with operator(kmock, config):
        await apply(client(kmock), body)
        train = await wait_for(lambda: job(kmock, f"{base}-train"), what="the train Job, first")
        assert train["spec"]["template"]["spec"]["containers"][0]["command"] == [
            "layerpilot",
            "train",
            "/etc/layerpilot/spec.yaml",
            "--out",
            f"{work}/train",
            "--resume",
        ]
        run_ids = status(kmock, "reuse")["mlflow"]["runIds"]
        assert "probe" not in run_ids
        # What `layerpilot train` leaves in its run when it takes a profile (tests/cli/test_reuse.py).
        tags = {review.SELECTED_LAYERS: "2", review.TOP_LAYERS: "2,3,1", review.PROBE_REUSED: profile}
        play(mlflow_server.uri, run_ids["train"], tags)
        await set_job_status(kmock, f"{base}-train", completed())

        register = await wait_for(lambda: job(kmock, f"{base}-register"), what="the register Job")
        command = register["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[command.index("--probe") + 1] == f"{work}/train"  # the profile kept beside the patch
        st = status(kmock, "reuse")
        assert (st["selectedLayers"], st["topLayers"], st["profile"]) == ([2], [2, 3, 1], profile)
        probed = next(c for c in st["conditions"] if c["type"] == "Probed")
        assert (probed["status"], probed["reason"]) == ("True", "ProfileReused")
        assert profile in probed["message"]
        play(
            mlflow_server.uri,
            run_ids["adapt"],
            {review.REGISTERED_MODEL: "op-model", review.MODEL_VERSION: "3"},
        )
        await set_job_status(kmock, f"{base}-register", completed())
        await wait_for(lambda: phase(kmock, "reuse") == "Succeeded", what="Succeeded")
    assert status(kmock, "reuse")["completedStages"] == ["train", "register"]
    assert sorted(objects(kmock, JOBS)) == [f"{base}-register", f"{base}-train"]


async def test_a_failed_job_fails_the_resource_with_which_job_and_why(
    kmock: Any, config: OperatorConfig, mlflow_server: Any
) -> None:
    declare(kmock)
    cluster = client(kmock)
    body = resource("flaky", SPEC)
    base = child_base(body)
    async with operator(kmock, config):
        await apply(cluster, body)
        await wait_for(lambda: job(kmock, f"{base}-plan"))
        run_ids = status(kmock, "flaky")["mlflow"]["runIds"]
        play(mlflow_server.uri, run_ids["probe"], {review.PROBE_UNITS: "3"})
        await set_job_status(kmock, f"{base}-plan", completed())
        await wait_for(lambda: job(kmock, f"{base}-probe"))
        await set_job_status(
            kmock, f"{base}-probe", failed("FailedIndexes", "Job has failed indexes", failed_indexes="1")
        )
        await wait_for(lambda: phase(kmock, "flaky") == "Failed", what="Failed")
    st = status(kmock, "flaky")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "JobFailed")
    assert (
        f"Job {base}-probe failed (failed indexes 1): FailedIndexes: Job has failed indexes" in st["message"]
    )
    assert f"kubectl logs -n ml job/{base}-probe" in st["message"]
    assert next(c for c in st["conditions"] if c["type"] == "Probed")["reason"] == "JobFailed"
    assert sorted(objects(kmock, JOBS)) == [f"{base}-plan", f"{base}-probe"]  # nothing after a failure
    warnings = [e for e in objects(kmock, EVENTS).values() if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["JobFailed"]
    mlflow = MlflowClient(mlflow_server.uri)
    assert {mlflow.get_run(run_ids[k]).info.status for k in ("adapt", "probe")} == {"FAILED"}


async def test_an_invalid_spec_fails_at_once_with_the_one_line_error(
    kmock: Any, config: OperatorConfig
) -> None:
    declare(kmock)
    cluster = client(kmock)
    async with operator(kmock, config):
        await apply(
            cluster, resource("bad", {"algorithm": {"numGenerations": 3}, "training": {"batchSize": 8}})
        )
        await wait_for(lambda: phase(kmock, "bad") == "Failed", what="Failed")
    st = status(kmock, "bad")
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["reason"] == "InvalidSpec"
    assert st["message"].startswith("spec.algorithm.numGenerations: (3) must divide `training.batchSize` (8)")
    assert "\n" not in st["message"]
    assert objects(kmock, JOBS) == {} and objects(kmock, CONFIGMAPS) == {}


@pytest.mark.heavy
async def test_fifty_resources_at_once_each_get_one_first_job(
    kmock: Any, config: OperatorConfig, mlflow_server: Any
) -> None:
    declare(kmock)
    async with operator(kmock, config):
        await apply_many(kmock, SPEC, 50, "many", timeout=240)
        await wait_for(lambda: all(phase(kmock, f"many-{i:03d}") == "Probing" for i in range(50)), timeout=60)
    jobs = objects(kmock, JOBS)
    assert len(jobs) == 50 and all(name.endswith("-plan") for name in jobs)
    for obj in objects(kmock, LA).values():
        (ref_job,) = [
            j for j in jobs.values() if j["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
        ]
        assert obj["status"]["jobs"] == {"plan": ref_job["metadata"]["name"]}
        assert len(history(kmock, JOBS, ref_job["metadata"]["name"])) == 1  # created once, never patched
    runs = MlflowClient(mlflow_server.uri).search_runs(
        [status(kmock, "many-000")["mlflow"]["experimentId"]],
        "tags.`layerpilot.stage` = 'adapt'",
        max_results=1000,
    )
    uids = [
        r.data.tags["layerpilot.k8s.uid"]
        for r in runs
        if r.data.tags.get("layerpilot.k8s.resource", "").startswith("many-")
    ]
    assert len(uids) == 50 == len(set(uids))  # one parent run per resource


async def test_multi_node_training_runs_as_a_trainjob_the_operator_follows(
    kmock: Any, config: OperatorConfig, mlflow_server: Any
) -> None:
    declare(kmock)
    cluster = client(kmock)
    body = resource("multi", {**SPEC, "probe": {"mode": "spectrum"}, "resources": {"nodes": 2, "gpus": 1}})
    base = child_base(body)
    async with operator(kmock, config):
        await apply(cluster, body)
        await wait_for(lambda: job(kmock, f"{base}-probe"))
        run_ids = status(kmock, "multi")["mlflow"]["runIds"]
        play(mlflow_server.uri, run_ids["probe"], {review.SELECTED_LAYERS: "3", review.TOP_LAYERS: "3,2,4"})
        await set_job_status(kmock, f"{base}-probe", completed())
        trainjob = await wait_for(
            lambda: objects(kmock, TRAINJOB_RESOURCE).get(f"{base}-train"), what="TrainJob"
        )
        assert trainjob["spec"]["trainer"]["numNodes"] == 2
        assert trainjob["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
        assert job(kmock, f"{base}-train") is None  # not also a plain Job
        # Trainer 2.3 copies the JobSet's outcome into a `Complete` condition.
        await set_job_status(
            kmock, f"{base}-train", {"conditions": [{"type": "Complete", "status": "True"}]}, kind="TrainJob"
        )
        await wait_for(lambda: job(kmock, f"{base}-register"), what="the register Job")
