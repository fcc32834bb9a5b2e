"""A control plane killed (SIGKILL) while a real job subprocess runs: the next control plane re-adopts
the job if its process is still alive, or counts the attempt as failed and retries it if it died in the
meantime; the job is never forgotten and never runs twice at once, even when the control plane died
right after starting the process, before recording it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from tests.integration.jobs.conftest import (
    REPO_ROOT,
    ControlPlaneProcess,
    job_spec,
    jobs_settings,
    process_alive,
    states_of,
    wait_for,
    wait_state,
)


def _job_pid(client: JobsClient, job_id: str, attempt: int = 1) -> int:
    """The pid the job program printed for ``attempt`` (waiting until it has)."""
    marker = f"attempt {attempt} pid "
    log = wait_for(lambda: (text := b"".join(client.logs(job_id)).decode()).count(marker) and text)
    return int(log.split(marker, 1)[1].split()[0])


def test_a_running_job_is_re_adopted_by_the_next_control_plane(
    tmp_path: Path, planes: list[ControlPlaneProcess]
) -> None:
    db_url, home, starts = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "starts"
    release = tmp_path / "release"  # the job ends once this exists: after the re-adoption, however slow
    planes.append(first := ControlPlaneProcess(db_url, home))
    with JobsClient(first.address) as client:
        job = client.submit(job_spec("long", "--until-file", str(release), "--starts", str(starts), gpus=1))
        wait_state(client, job.job_id, pb.JOB_STATE_RUNNING)
        pid = _job_pid(client, job.job_id)
    first.crash()
    assert process_alive(pid), "the job must outlive its control plane"

    planes.append(second := ControlPlaneProcess(db_url, home))
    with JobsClient(second.address) as client:
        wait_for(lambda: states_of(client.get(job.job_id)).count("RUNNING") == 2)
        assert process_alive(pid)
        release.touch()
        done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, timeout=20)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert done.attempt == 1 and states_of(done) == ["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]
    assert done.history[2].reason.startswith("re-adopted process ")
    lines = starts.read_text().splitlines()
    assert len(lines) == 1 and lines[0].split()[:2] == ["1", str(pid)]  # ran once, the same process


def test_a_job_that_died_while_the_control_plane_was_down_is_retried_not_forgotten(
    tmp_path: Path, planes: list[ControlPlaneProcess]
) -> None:
    db_url, home, starts = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "starts"
    planes.append(first := ControlPlaneProcess(db_url, home))
    with JobsClient(first.address) as client:
        job = client.submit(
            job_spec("victim", "--sleep", "30", "--starts", str(starts), gpus=1, max_retries=1)
        )
        running = wait_state(client, job.job_id, pb.JOB_STATE_RUNNING)
        pid = _job_pid(client, job.job_id)
    first.crash()
    # The whole process group of the attempt (launcher and job) dies while no control plane watches.
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    wait_for(lambda: not process_alive(pid))

    planes.append(second := ControlPlaneProcess(db_url, home))
    with JobsClient(second.address) as client:
        retried = wait_state(client, job.job_id, pb.JOB_STATE_RUNNING, timeout=20)
        second_pid = _job_pid(client, job.job_id, attempt=2)
        assert second_pid != pid and not process_alive(pid)
        client.cancel(job.job_id)
        done = wait_state(client, job.job_id, pb.JOB_STATE_CANCELLED, timeout=10)
    assert running.devices == retried.devices or list(retried.devices) == ["0"]
    assert states_of(done) == ["QUEUED", "RUNNING", "RETRYING", "RUNNING", "RUNNING", "CANCELLED"]
    assert done.history[4].reason == "cancel requested: cancelled by anonymous"
    assert "ended without recording an exit status" in done.history[2].reason
    assert not starts.exists()


def test_a_job_started_just_before_the_control_plane_died_is_adopted_not_started_twice(
    tmp_path: Path, planes: list[ControlPlaneProcess]
) -> None:
    db_url, home, starts = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "starts"
    release = tmp_path / "release"
    spec = job_spec(
        "crash-window", "--until-file", str(release), "--starts", str(starts), gpus=1, max_retries=1
    )
    command = [sys.executable, "-m", "tests.integration.jobs.programs.crash_after_launch"]
    command += [
        "--db-url",
        db_url,
        "--home",
        str(home),
        "--job-cwd",
        str(REPO_ROOT),
        "--spec",
        json.dumps(spec),
    ]
    try:
        crashed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert crashed.returncode == 0 and crashed.stdout.startswith("job "), crashed.stderr
        job_id = crashed.stdout.split()[1]

        planes.append(second := ControlPlaneProcess(db_url, home))
        with JobsClient(second.address) as client:
            pid = _job_pid(client, job_id)
            # The new control plane's first decision about the attempt it found without a process:
            adopted = wait_for(lambda: len((job := client.get(job_id)).history) >= 3 and job)
            assert states_of(adopted) == ["QUEUED", "RUNNING", "RUNNING"] and adopted.attempt == 1
            launcher = json.loads((home / "jobs" / job_id / "attempt-1.pid.json").read_text())
            assert adopted.history[2].reason == (
                f"re-adopted process {launcher['pid']}:{launcher['start_ticks']} of attempt 1 after a restart"
            )
            assert list(adopted.devices) == ["0"] and process_alive(pid)
            release.touch()
            done = wait_state(client, job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, timeout=20)
    finally:
        release.touch()  # whatever happened, the test's job processes end
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.attempt == 1, done.reason
    lines = starts.read_text().splitlines()
    assert len(lines) == 1 and lines[0].split()[:2] == ["1", str(pid)]  # ran once, the same process


def test_a_job_whose_start_a_crash_cut_off_runs_after_the_restart_without_spending_a_retry(
    tmp_path: Path, planes: list[ControlPlaneProcess]
) -> None:
    """The control plane dies after making the job RUNNING and before starting its launcher: the next one
    makes sure that attempt never starts (it gives its pid file up) and must run the job, whose code never
    ran. It counted the attempt as failed: a job without retries ended FAILED ("lost: the control plane
    stopped while starting it"), and one with retries lost one to the restart."""
    db_url, home, starts = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "starts"
    spec = job_spec("cut-off", "--starts", str(starts), gpus=1, max_retries=0)
    command = [
        sys.executable,
        "-m",
        "tests.integration.jobs.programs.crash_after_launch",
        "--crash",
        "before",
    ]
    command += [
        "--db-url",
        db_url,
        "--home",
        str(home),
        "--job-cwd",
        str(REPO_ROOT),
        "--spec",
        json.dumps(spec),
    ]
    crashed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert crashed.returncode == 0 and crashed.stdout.startswith("job "), crashed.stderr
    job_id = crashed.stdout.split()[1]
    assert not (home / "jobs" / job_id / "attempt-1.pid.json").exists()  # no launcher ever ran

    planes.append(second := ControlPlaneProcess(db_url, home))
    with JobsClient(second.address) as client:
        done = wait_state(client, job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, timeout=20)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert states_of(done) == ["QUEUED", "RUNNING", "RETRYING", "RUNNING", "SUCCEEDED"]
    assert done.history[2].reason == (
        "attempt 1 never started (the control plane stopped while starting it); not counted as one of"
        " the job's 1 attempts"
    )
    assert done.history[3].reason == "attempt 2 of 2 started on devices 0"
    assert done.attempt == 2 and done.spec.max_retries == 0
    lines = starts.read_text().splitlines()
    assert len(lines) == 1 and lines[0].split()[0] == "2"  # the job's code ran once, as attempt 2


def test_a_start_that_fails_in_the_supervisor_ends_the_attempt_there_and_counts_it(tmp_path: Path) -> None:
    """An error of the supervisor's own between making the job RUNNING and starting its launcher (FAULT:
    minting the job's token raises, which nothing outside the control plane can cause) ends the attempt
    at once, as a failed one. It left the job RUNNING without a process for the next tick to give up, and
    an attempt given up does not count against the retries: the job went round for good."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path / "home")

    def broken_token(job_id: str, run_id: str) -> str:
        raise RuntimeError("FAULT: the job's token cannot be minted")

    service = JobService(sessions, settings, None, None)  # type: ignore[arg-type]  # no feature refs
    supervisor = Supervisor(
        sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1", job_token=broken_token
    )
    job = service.submit(spec_from_mapping(job_spec("broken-start", max_retries=1)), actor="tester")
    try:
        for _ in range(8):
            supervisor.tick()
        done = service.get(job.job_id)
    finally:
        engine.dispose()
    assert states_of(done) == ["QUEUED", "RUNNING", "RETRYING", "RUNNING", "FAILED"], done.reason
    assert done.reason == (
        'attempt 2 failed: cannot launch: RuntimeError("FAULT: the job\'s token cannot be minted");'
        " no retries left (2 attempts)"
    )
    log = (tmp_path / "home" / "jobs" / job.job_id / "job.log").read_text()
    assert "error: cannot launch: RuntimeError" in log


# How a launcher from before the ``launch_failed`` flag (``json.dump({"code": code, "detail": detail})``)
# recorded that it could not find the entrypoint, and a job's own exit 127; the job is then read by the
# control plane the launcher outlived, after an upgrade.
_OLD_LAUNCH_FAILURE = json.dumps(
    {"code": 127, "detail": "entrypoint module 'tests.integration.jobs.programs.job' not found"}
)
_OLD_OWN_EXIT_127 = json.dumps({"code": 127, "detail": "exit code 127"})


@pytest.mark.parametrize(
    ("old_exit_file", "states", "reason"),
    [
        (
            _OLD_LAUNCH_FAILURE,
            ["QUEUED", "RUNNING", "FAILED"],
            "entrypoint module 'tests.integration.jobs.programs.job' not found",
        ),
        (
            _OLD_OWN_EXIT_127,
            ["QUEUED", "RUNNING", "RETRYING", "RUNNING", "SUCCEEDED"],
            "attempt 1 failed: exit code 127; retry 1 of 2",
        ),
    ],
    ids=["launcher-failed", "job-exited-127"],
)
def test_an_exit_file_of_a_launcher_from_before_the_upgrade_is_read_as_it_was_meant(
    tmp_path: Path, planes: list[ControlPlaneProcess], old_exit_file: str, states: list[str], reason: str
) -> None:
    db_url, home, release = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home", tmp_path / "release"
    planes.append(first := ControlPlaneProcess(db_url, home))
    with JobsClient(first.address) as client:
        job = client.submit(job_spec("upgraded", "--until-file", str(release), gpus=1, max_retries=2))
        wait_state(client, job.job_id, pb.JOB_STATE_RUNNING)
        _job_pid(client, job.job_id)
    first.crash()  # stopped for the upgrade; the attempt runs on under its launcher
    release.touch()
    exit_file = home / "jobs" / job.job_id / "attempt-1.exit.json"
    wait_for(lambda: exit_file.exists())
    exit_file.write_text(old_exit_file, encoding="utf-8")  # what the launcher of the old version wrote

    planes.append(second := ControlPlaneProcess(db_url, home))
    with JobsClient(second.address) as client:
        done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert states_of(done) == states, done.reason
    assert done.history[2].reason == reason and done.history[2].attempt == 1


def test_a_job_timed_out_before_a_restart_fails_as_timed_out_after_it(
    tmp_path: Path, planes: list[ControlPlaneProcess]
) -> None:
    """The control plane dies after the timeout's SIGTERM, while the job shuts down (3 s): the next one
    finds the attempt ended with 143 and must end the job FAILED "timeout", not retry it."""
    db_url, home = f"sqlite:///{tmp_path / 'aether.db'}", tmp_path / "home"
    planes.append(first := ControlPlaneProcess(db_url, home))
    with JobsClient(first.address) as client:
        job = client.submit(
            job_spec("slow", "--sleep", "60", "--term-exit-after", "3", timeout_s=1, max_retries=2)
        )
        wait_for(lambda: "shutting down after SIGTERM" in b"".join(client.logs(job.job_id)).decode())
        pid = _job_pid(client, job.job_id)
    first.crash()
    wait_for(lambda: not process_alive(pid), timeout=10)  # it ends while no control plane watches

    planes.append(second := ControlPlaneProcess(db_url, home))
    with JobsClient(second.address) as client:
        done = wait_state(client, job.job_id, pb.JOB_STATE_FAILED, pb.JOB_STATE_SUCCEEDED, timeout=20)
    assert done.reason == "timeout after 1s" and done.attempt == 1, (done.reason, states_of(done))
    assert states_of(done) == ["QUEUED", "RUNNING", "FAILED"]
