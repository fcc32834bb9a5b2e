"""Two stops of one attempt: the first one's SIGTERM decides how the job ends. A supervisor ticked by
the test (nothing timed but the job's own timeout), real jobs (``programs/job.py``)."""

from __future__ import annotations

import time
from pathlib import Path

from clients.aether.v1 import jobs_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from tests.integration.jobs.conftest import REPO_ROOT, job_spec, jobs_settings, states_of, wait_for


def test_a_cancel_after_the_timeout_s_sigterm_leaves_the_job_failed_by_its_timeout(tmp_path: Path) -> None:
    """The timeout fired first: its SIGTERM went out, and the job was on its way to FAILED "timeout".
    A cancel arriving before the job had stopped ended it CANCELLED instead, as if the user had stopped a
    job that was in fact too slow (a retraining loop reads FAILED/timeout and CANCELLED apart)."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path / "home")
    service = JobService(sessions, settings, None, None)  # type: ignore[arg-type]  # no feature refs
    supervisor = Supervisor(sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
    # It ignores SIGTERM, so it ends only by the SIGKILL a tick sends kill_grace_s after the SIGTERM:
    # the cancel below lands while it still runs, whatever the machine's speed.
    spec = job_spec("slow", "--sleep", "60", "--ignore-term", timeout_s=0.5, max_retries=2)
    job = service.submit(spec_from_mapping(spec), actor="tester")
    log = tmp_path / "home" / "jobs" / job.job_id / "job.log"
    try:
        supervisor.tick()  # starts it
        assert service.get(job.job_id).state == pb.JOB_STATE_RUNNING
        time.sleep(0.5)  # its timeout passes
        supervisor.tick()
        assert "timeout after 0.5s; sending SIGTERM" in log.read_text()
        service.cancel(job.job_id, "too slow anyway", actor="tester")

        def ended() -> bool:
            supervisor.tick()
            return service.get(job.job_id).state in (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)

        wait_for(ended)
        done = service.get(job.job_id)
    finally:
        engine.dispose()
    # The cancel is noted (RUNNING); a timeout is not retried.
    assert states_of(done) == ["QUEUED", "RUNNING", "RUNNING", "FAILED"], done.reason
    assert done.reason == (
        "timeout after 0.5s; the cancel (cancelled by tester: too slow anyway) came after the timeout's"
        " SIGTERM"
    )
