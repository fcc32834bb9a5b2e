"""A control plane that dies right after starting a job's process, before recording it (FAULT: the
executor ends the whole process with ``os._exit``, as SIGKILL, the OOM killer or a power cut would,
in the window between ``launch`` returning and the supervisor storing the process identity):
``python -m tests.integration.jobs.programs.crash_after_launch --db-url URL --home DIR --job-cwd DIR
--spec JSON [--crash before]``. Submits the job, runs one supervisor tick, and prints ``job JOB_ID``
before dying. With ``--crash before`` it dies in the window before that: the job is RUNNING in the
database (committed) and its launcher was never started."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.jobs.executor import JobHandle, JobLaunch, LocalExecutor
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from tests.integration.jobs.conftest import TEST_LEASE_S


class CrashAfterLaunch(LocalExecutor):
    def launch(
        self, job: JobLaunch, attempt: int, devices: Sequence[str], env: Mapping[str, str]
    ) -> JobHandle:
        super().launch(job, attempt, devices, env)
        os._exit(0)


class CrashBeforeLaunch(LocalExecutor):
    def launch(
        self, job: JobLaunch, attempt: int, devices: Sequence[str], env: Mapping[str, str]
    ) -> JobHandle:
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--gpus", default="2")
    parser.add_argument("--job-cwd", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--crash", choices=("before", "after"), default="after")
    args = parser.parse_args()
    engine = create_db_engine(args.db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    home = Path(args.home)
    settings = JobsSettings(
        folder=home / "jobs", pool=DevicePool.from_config(args.gpus), tick_s=0.1, kill_grace_s=1.0,
        job_cwd=Path(args.job_cwd), lease_s=TEST_LEASE_S, lease_renew_s=TEST_LEASE_S / 4,
    )  # fmt: skip
    service = JobService(sessions, settings, None, None)  # type: ignore[arg-type]  # no feature refs
    job = service.submit(spec_from_mapping(json.loads(args.spec)), actor="tester")
    print(f"job {job.job_id}", flush=True)
    executor = (CrashBeforeLaunch if args.crash == "before" else CrashAfterLaunch)(cwd=Path(args.job_cwd))
    Supervisor(sessions, settings, executor, lambda: "127.0.0.1:1").tick()
    raise SystemExit("the supervisor tick did not launch the job")


if __name__ == "__main__":
    main()
