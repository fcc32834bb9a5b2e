"""A cancel or a timeout arriving once the job's main process has ended, while its launcher ends what
the job left (``reaper.py``): the job's outcome stands, and what it left is killed at once rather than
after the launcher's kill grace. A real control plane, real jobs (``programs/job.py``)."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from control_plane.settings import ControlPlaneSettings
from tests.integration.jobs.conftest import (
    ThreadedControlPlane,
    job_spec,
    jobs_settings,
    process_alive,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.integration

#: The launcher's SIGTERM-to-SIGKILL grace for what a job left: longer than the left child lives (60 s,
#: ``programs/job.py``), so only a kill ends it before it ends by itself.
GRACE_S = 120.0
#: The timeout of the job below: its main process has ended well before (it exits at once).
TIMEOUT_S = 10.0


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_a_stop_while_the_launcher_ends_what_the_job_left_kills_it_at_once(
    tmp_path: Path, sqlite_url: str, stop: str
) -> None:
    """Once the job's main process had exited, a cancel or a timeout did nothing: the attempt (its
    devices and uid) waited out the launcher's whole grace for a child that ignores SIGTERM."""
    home = tmp_path / "home"
    settings = ControlPlaneSettings(
        home=home, db_url=sqlite_url, listen_addr="127.0.0.1:0", shutdown_grace_s=0.5
    )
    plane = ThreadedControlPlane(settings, dataclasses.replace(jobs_settings(home), kill_grace_s=GRACE_S))
    child_file = tmp_path / "child"
    try:
        with JobsClient(plane.address, actor="tester") as client:
            timeout = {"timeout_s": TIMEOUT_S} if stop == "timeout" else {}
            job = client.submit(job_spec("leaves", "--leave-child", str(child_file), **timeout))

            def log() -> str:
                return b"".join(client.logs(job.job_id)).decode()

            wait_for(lambda: "left processes running" in log(), timeout=60)
            if stop == "cancel":
                client.cancel(job.job_id, "changed my mind")
            # Well before the left child ends by itself (60 s after it started), or the grace runs out.
            done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_CANCELLED,
                              pb.JOB_STATE_FAILED, timeout=TIMEOUT_S + 25)  # fmt: skip
            assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason  # its outcome stands
            assert not process_alive(int(child_file.read_text()))
            why = "changed my mind" if stop == "cancel" else f"timeout after {TIMEOUT_S:g}s"
            assert f"{why} after the job had ended; killing what it left at once" in log(), log()
    finally:
        if child_file.exists() and process_alive(pid := int(child_file.read_text())):
            os.kill(pid, signal.SIGKILL)
        plane.stop()
