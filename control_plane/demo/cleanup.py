"""Ending the demo's jobs when the demo fails or is interrupted.

A job runs in a session of its own (see ``control_plane.jobs.launcher``): neither the terminal's Ctrl-C
nor stopping the stack reaches it. A trainer left behind blocks for good, flushing its metrics to a
control plane that is gone. So, before the stack stops, the demo cancels its unfinished jobs through the
Jobs service (the supervisor signals each job's group and records the end) and waits a bounded time;
after the stack has stopped, any attempt still alive (one the cancel missed, or one the retrainer
submitted meanwhile) has its process group killed, found through the pid file its launcher wrote."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from clients.aether.v1 import jobs_pb2 as jpb
from clients.errors import AetherError
from clients.sdk.jobs import JobsClient
from control_plane.jobs.identity import process_start_ticks, running_in_group

UNFINISHED = (jpb.JOB_STATE_QUEUED, jpb.JOB_STATE_RUNNING, jpb.JOB_STATE_RETRYING)
REASON = "the demo failed or was interrupted"


def cancel_jobs(address: str, timeout_s: float = 20.0) -> None:
    """Cancels the stack's unfinished jobs until none is left or ``timeout_s`` has passed. Listed again
    each round: the retrainer may submit one meanwhile. Errors are left to :func:`kill_leftovers`, which
    does not need the control plane."""
    deadline = time.monotonic() + timeout_s
    try:
        with JobsClient(address, timeout=5.0) as jobs:
            while time.monotonic() < deadline:
                unfinished = jobs.list(UNFINISHED)
                if not unfinished:
                    return
                for job in unfinished:
                    if not job.cancel_requested:
                        jobs.cancel(job.job_id, reason=REASON)
                time.sleep(0.5)
    except AetherError:
        return


def kill_leftovers(jobs_folder: Path, wait_s: float = 5.0) -> list[str]:
    """Kills the process group of every attempt under ``jobs_folder`` whose launcher still runs, and
    returns what survived that, as ``job <id> (pids ...)``."""
    groups = {pid: folder for folder, pid in _live_launchers(jobs_folder)}
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    alive = {pgid: running_in_group(pgid) for pgid in groups}
    while any(alive.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pgid: running_in_group(pgid) for pgid in groups}
    return [
        f"job {groups[pgid].name} (pids {', '.join(map(str, pids))})" for pgid, pids in alive.items() if pids
    ]


def _live_launchers(jobs_folder: Path) -> list[tuple[Path, int]]:
    """(job folder, launcher pid) of each attempt whose launcher is alive: the pid file's start time
    matches the process's, so a pid reused since is never signalled. The launcher leads its own session,
    so its pid is its group's id."""
    found: list[tuple[Path, int]] = []
    for pid_file in sorted(jobs_folder.glob("*/attempt-*.pid.json")):
        try:
            record = json.loads(pid_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if isinstance(pid, int) and ticks is not None and process_start_ticks(pid) == ticks:
            found.append((pid_file.parent, pid))
    return found
