"""Replay what did not reach MLflow: `layerpilot mlflow sync WORKDIR`.

A job that lost its tracking server keeps every call it could not make in the workdir's ledger
(`service.tracking.ledger`). This module replays that ledger into the store: runs MLflow never
created are created under their parents (placeholder ids mapped to the new ids), then params, tags,
metric points with their original steps and timestamps, artifacts from the files on disk, run
statuses and a missed registration. What was replayed leaves the ledger (one atomic rewrite); what
failed stays, with its run ids resolved, for the next sync.

**A command, not an automatic replay at the next run.** The outage is over when someone says so:
a replay at the start of the next `adapt` would first try a server that may still be down, delay a
run that has nothing to do with the lost calls, and bury its outcome in a training log; and often
there is no next run in that workdir (the job finished, the Job's pod is gone). As a command, the
replay has an outcome of its own — what was replayed, what is left and why, exit 0 or 1 — that an
operator can script (after a restore, from a CronJob over the workspaces), and it can target the
server by another address than the job used (`--tracking-uri` through a port-forward). The job's
last line names the command (`Ledger.summary`).

**Idempotent.** A metric point already in the store with the same key, step and timestamp is not
sent again (an older ledger without timestamps: the same key and step); params already set to the
same value, statuses already set, and a version already registered from the run are skipped; a
run created by a replay carries tag `layerpilot.local_run_id` and is found by it rather than
created twice; tags and artifacts overwrite themselves. A second sync says "nothing to sync".

**Registration.** A version that `adapt` (or `register`) could not register is registered by the
sync, from the run it was meant to come from, with the review the job computed (its evaluation is
not run again) — unless a version from that run already exists.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from service.errors import SpecError
from service.tracking.ledger import (
    UNLOGGED_FILE,
    LedgerFile,
    NotLogged,
    read_ledger,
    rewrite_ledger,
)
from service.tracking.replay import LOCAL_RUN_TAG, SYNC_FIELDS, NotReplayable, Replay, SyncResult
from service.tracking.retries import RetryPolicy, is_transient, short_error, with_retries
from service.tracking.runs import UNLOGGED_DIR
from service.tracking.uris import ENV_TRACKING_URI, check_tracking_uri

__all__ = ["LOCAL_RUN_TAG", "SYNC_FIELDS", "NotReplayable", "SyncResult", "sync"]


def sync(workdir: Path, tracking_uri: str | None = None, *, retry: RetryPolicy | None = None) -> SyncResult:
    """Replay `workdir`'s ledger into `tracking_uri` (default: where its calls were going)."""
    started = time.perf_counter()
    if not workdir.is_dir():
        raise SpecError("WORKDIR", f"{workdir} is not a directory", "pass the --workdir of the job")
    ledger = read_ledger(workdir / UNLOGGED_FILE)
    result = SyncResult(workdir, ledger.path, calls=len(ledger.entries), unreadable=len(ledger.unreadable))
    if not ledger.entries and not ledger.unreadable:
        return result
    uri = _target(tracking_uri, ledger)
    result.tracking_uri = uri
    replay = Replay(uri, workdir, retry or RetryPolicy.from_env(), result)
    done: list[NotLogged] = []
    for entry in ledger.entries:
        if replay.down:  # one unreachable server is enough: the rest waits for the next sync
            result.left.append(replay.resolved(entry))
            continue
        try:
            with_retries(replay.retry, functools.partial(replay.apply, entry))
        except Exception as error:
            result.left.append(replay.resolved(entry))
            if is_transient(error):
                replay.down = True
                result.error = f"MLflow at {uri} unreachable ({short_error(error)}); run the sync again"
            elif result.error is None:
                result.error = f"{entry.what}: {short_error(error)}"
        else:
            done.append(entry)
            result.replayed_calls += 1
    if ledger.unreadable and result.error is None:
        result.error = f"{len(ledger.unreadable)} lines of the ledger do not parse"
    rewrite_ledger(ledger, result.left)
    _remove_kept(workdir, done, result.left)
    result.seconds = time.perf_counter() - started
    return result


def _target(given: str | None, ledger: LedgerFile) -> str:
    """`--tracking-uri`, else the one URI the ledger's calls were going to, else MLFLOW_TRACKING_URI."""
    if given:
        return check_tracking_uri(given, "--tracking-uri")
    recorded = sorted({entry.tracking_uri for entry in ledger.entries if entry.tracking_uri})
    if len(recorded) == 1:
        return recorded[0]
    if len(recorded) > 1:
        raise SpecError(
            "--tracking-uri",
            f"{ledger.path} holds calls for {len(recorded)} stores ({', '.join(recorded)})",
            "pass --tracking-uri to say which one to replay into",
        )
    if os.environ.get(ENV_TRACKING_URI):
        return check_tracking_uri(os.environ[ENV_TRACKING_URI], ENV_TRACKING_URI)
    raise SpecError(
        "--tracking-uri",
        f"{ledger.path} does not say where its calls were going",
        "pass --tracking-uri URI (or set MLFLOW_TRACKING_URI)",
    )


def _remove_kept(workdir: Path, done: list[NotLogged], left: list[NotLogged]) -> None:
    """Drop the kept copies of JSON artifacts that reached MLflow (and folders left empty)."""
    still = {entry.payload.get("kept") for entry in left if entry.kind == "artifact"}
    for entry in done:
        kept = entry.payload.get("kept") if entry.kind == "artifact" else None
        if kept and kept not in still:
            (workdir / kept).unlink(missing_ok=True)
    root = workdir / UNLOGGED_DIR
    if root.is_dir():
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
        if not any(root.iterdir()):
            root.rmdir()
