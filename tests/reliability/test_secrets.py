"""A canary token in the MLflow credentials variable reaches the server, and nothing else.

`adapt` runs against a real tracking server, through a proxy that keeps every request's headers,
with `LAYERPILOT_MLFLOW_TOKEN` set (the request-header plugin sends it as `Authorization: Bearer`):
the server must have been sent it. Afterwards every byte the run left is searched: its output,
every file in the work directory, every run's params, tags, metrics keys and artifacts, and the
registered version's tags and description. (`tests/k8s/test_e2e.py` does the same for the operator:
status, events, Jobs, pod logs.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from tests.conftest import small_spec_data
from tests.http_proxy import proxy_to

CANARY = "lp-canary-5d1f0c9e7b2a4c3d"
SPEC: dict[str, Any] = small_spec_data(
    dataset={"evalSize": 16},
    probe={"mode": "exact", "steps": 2, "layers": [1, 2]},
    training={"maxSteps": 2, "saveSteps": 2},
    mlflow={"experiment": "canary", "registeredModel": "canary-model"},
)


@pytest.mark.heavy
def test_the_token_appears_in_no_output_file_run_artifact_or_version(
    tmp_path: Path, mlflow_server: Any
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    layerpilot = str(Path(sys.executable).parent / "layerpilot")
    with proxy_to(mlflow_server.uri) as proxy:
        env = {**os.environ, "MLFLOW_TRACKING_URI": proxy.url, "LAYERPILOT_MLFLOW_TOKEN": CANARY}
        env.pop("MLFLOW_RUN_ID", None)
        done = subprocess.run(
            [layerpilot, "--verbose", "adapt", str(spec), "--workdir", str(tmp_path / "work"), "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    # It was sent: every request the job made to MLflow carried it.
    sent = [request.headers.get("Authorization") for request in proxy.seen]
    assert len(sent) > 20 and set(sent) == {f"Bearer {CANARY}"}, Counter(sent)
    appearances = {"output": (done.stdout + done.stderr).count(CANARY)}

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    appearances["files"] = sum(CANARY.encode() in p.read_bytes() for p in files)

    client = MlflowClient(mlflow_server.uri)
    result = json.loads(done.stdout)
    experiment = result["mlflow"]["experimentId"]
    runs = client.search_runs([experiment], max_results=1000)
    assert len(runs) >= 5  # parent, probe, 4 units, train, eval
    texts = []
    for run in runs:
        texts.append(json.dumps({"p": run.data.params, "t": run.data.tags, "m": list(run.data.metrics)}))
        into = str(tmp_path / "artifacts" / run.info.run_id)
        local = download_artifacts(run_id=run.info.run_id, dst_path=into, tracking_uri=mlflow_server.uri)
        texts += [p.read_bytes().decode("utf-8", "replace") for p in Path(local).rglob("*") if p.is_file()]
    version = client.get_model_version_by_alias("canary-model", "candidate")
    texts.append(json.dumps({"tags": version.tags, "description": version.description}))
    appearances["mlflow"] = sum(CANARY in text for text in texts)

    print(f"\ncanary appearances: {appearances} (files searched: {len(files)}, MLflow texts: {len(texts)})")
    assert appearances == {"output": 0, "files": 0, "mlflow": 0}
