"""A stand-in for the kubelet and the Job controller: runs each Job's container command on this machine.

For every Job the operator created in the emulator, it mounts the pod's volumes as local
directories (ConfigMap and Secret items as files, the workspace claim as one directory shared by
every pod, emptyDirs fresh per pod), rewrites paths under each mountPath to those directories,
expands the container's env (downward API `metadata.name`, and JOB_COMPLETION_INDEX for an
Indexed Job), runs `command` with nothing else in its environment but PATH, then writes the Job's
status through the API as the Job controller would. A wrong flag, path or variable in a builder
fails here exactly as it would in a pod.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.k8s.emulator import CONFIGMAPS, JOBS, completed, failed, objects, set_job_status

SECRETS = "v1/secrets"


@dataclass
class Kubelet:
    kmock: Any
    root: Path
    logs: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    timeout_s: float = 600
    seen: set[str] = field(default_factory=set)  # Jobs already run: a Job runs once, like a real one

    def _volume_dir(self, pod: str, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            path = self.root / "claims" / volume["persistentVolumeClaim"]["claimName"]
            path.mkdir(parents=True, exist_ok=True)
            return path
        path = self.root / "pods" / pod / name
        path.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            data = objects(self.kmock, CONFIGMAPS)[volume["configMap"]["name"]].get("data") or {}
            for key, text in data.items():
                (path / key).write_text(text)
        elif "secret" in volume:
            spec = volume["secret"]
            data = objects(self.kmock, SECRETS)[spec["secretName"]].get("data") or {}
            for item in spec.get("items") or [{"key": k, "path": k} for k in data]:
                target = path / item["path"]
                target.write_bytes(base64.b64decode(data[item["key"]]))
                target.chmod(spec.get("defaultMode", 0o644))
        return path

    def _run_pod(self, job: dict[str, Any], index: int | None) -> int:
        job_name = job["metadata"]["name"]
        pod = f"{job_name}-{index if index is not None else 0}-x1"
        spec = job["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        volumes = {v["name"]: self._volume_dir(pod, v) for v in spec.get("volumes") or []}
        mounts = sorted(
            ((m["mountPath"], volumes[m["name"]]) for m in container.get("volumeMounts") or []),
            key=lambda item: -len(item[0]),
        )

        def local(text: str) -> str:
            for mount_path, directory in mounts:
                if text == mount_path or text.startswith(mount_path + "/"):
                    return str(directory) + text[len(mount_path) :]
            return text

        env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"}
        for entry in container.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = local(entry["value"])
            elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[entry["name"]] = pod
            else:
                raise AssertionError(f"the kubelet stand-in cannot resolve {entry}")
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        argv = [local(arg) for arg in container["command"] + (container.get("args") or [])]
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        cwd = local(container.get("workingDir") or "/")
        result = subprocess.run(
            argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=self.timeout_s, check=False
        )
        self.logs[pod] = result.stdout + result.stderr
        self.ran.append(pod)
        return result.returncode

    def _run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        spec = job["spec"]
        if spec.get("completionMode") == "Indexed":
            codes = [self._run_pod(job, index) for index in range(spec["completions"])]
            bad = [str(i) for i, code in enumerate(codes) if code]
            if bad:
                return failed("FailedIndexes", "Job has failed indexes", failed_indexes=",".join(bad))
            return completed(len(codes))
        return completed() if self._run_pod(job, None) == 0 else failed()

    async def run_until(self, done: Any, timeout: float = 900) -> None:
        """Run every new Job (one at a time: the machine has 2 cores) until `done()`."""
        seen = self.seen
        deadline = asyncio.get_running_loop().time() + timeout
        while not done():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; ran {self.ran}")
            for name, job in objects(self.kmock, JOBS).items():
                if name in seen:
                    continue
                seen.add(name)
                status = await asyncio.to_thread(self._run_job, job)
                await set_job_status(self.kmock, name, status)
            await asyncio.sleep(0.1)
