"""How long the operator takes to give many LayerAdaptations their first Job, next to one alone.

The real operator (kopf) against the kmock emulator over HTTP, with a real MLflow server (each
resource gets a parent run and a probe run before its first Job). One resource is applied alone and
timed to its plan Job; then N are applied at once and timed until every one has its plan Job. The
ratio (N-at-once seconds per resource vs one alone) is the number that transfers; the seconds are
for orientation. Also checks that no resource got a second Job or a second parent run.

Run: `.venv/bin/python benchmarks/operator_fanout.py [--count 50]` (about a minute); writes its
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from common import environment, write_section  # puts the repository on the path: test helpers drive kmock
from kmock import KubernetesEmulator, Server
from mlflow import MlflowClient

from k8s.reconcile import OperatorConfig
from tests.k8s.emulator import JOBS, LA, apply_many, declare, objects, operator
from tests.mlflow_server import start_server

SPEC = {
    "probe": {"mode": "exact", "steps": 2, "layers": [1, 2, 3]},
    "mlflow": {"experiment": "fanout", "registeredModel": "fanout"},
}


async def measure(count: int, tracking_uri: str) -> str:
    async with KubernetesEmulator() as kmock, Server(kmock):
        declare(kmock)
        async with operator(kmock, OperatorConfig(tracking_uri=tracking_uri)):
            await apply_many(kmock, SPEC, 1, "warmup", timeout=600)  # imports, MLflow experiment creation
            one = await apply_many(kmock, SPEC, 1, "one", timeout=600)
            many = await apply_many(kmock, SPEC, count, "many", timeout=600)
        jobs = [name for name in objects(kmock, JOBS) if name.startswith("many-")]
        resources = [name for name in objects(kmock, LA) if name.startswith("many-")]
        experiment = MlflowClient(tracking_uri).get_experiment_by_name("fanout")
        parents = MlflowClient(tracking_uri).search_runs(
            [experiment.experiment_id], "tags.`layerpilot.stage` = 'adapt'", max_results=5000
        )
        many_parents = [
            r for r in parents if r.data.tags.get("layerpilot.k8s.resource", "").startswith("many-")
        ]
    assert len(jobs) == len(resources) == len(many_parents) == count
    return "\n".join(
        [
            environment(),
            "",
            "kopf against the kmock emulator over HTTP, a real `mlflow server` (sqlite, one worker) on the "
            "same machine. Before its first Job a resource gets its parent run and probe run, its spec "
            "ConfigMap, workspace claim, plan Job, status patches and events.",
            "",
            "| | seconds | per resource |",
            "|---|---|---|",
            f"| 1 resource alone, to its first Job | {one:.2f} | {one:.2f} |",
            f"| {count} at once, until all {count} had their first Job | {many:.1f} | {many / count:.2f} |",
            "",
            f"{count} at once cost {many / count / one:.1f}× per resource what one alone does. Every "
            f"resource got exactly one plan Job and one parent run ({len(jobs)} Jobs, "
            f"{len(many_parents)} parent runs).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    logging.getLogger("kopf").setLevel(logging.ERROR)  # its shutdown notes on queued events are noise here
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "mlflow")
        try:
            body = asyncio.run(measure(args.count, server.uri))
        finally:
            server.stop()
    title = f"Operator fan-out: {args.count} resources at once (`benchmarks/operator_fanout.py`)"
    write_section("fanout", title, body, Path(__file__).name)


if __name__ == "__main__":
    main()
