"""Strict FIFO when a start fails: a job whose start fails in a tick (its launch raising, or its start
raising before it is RUNNING) holds back every job planned behind it until the next tick plans again, and
a job that waits because its start keeps failing (a full disk) says why in its reason. Real supervisor,
real SQLite file, real launcher processes; the faults are real files (a spec file that is a folder) and a
real full disk (a 1 MiB tmpfs as the jobs folder, ``test_launch_faults.small_filesystem``)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from tests.integration.jobs.conftest import REPO_ROOT, job_spec, jobs_settings, states_of, wait_for
from tests.integration.jobs.test_launch_faults import fill, small_filesystem

TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@dataclass
class Jobs:
    service: JobService
    supervisor: Supervisor
    settings: JobsSettings

    def submit(self, name: str, *args: str, **fields: object) -> str:
        return self.service.submit(spec_from_mapping(job_spec(name, *args, **fields)), actor="tester").job_id

    def state(self, job_id: str) -> pb.Job:
        return self.service.get(job_id)

    def run_out(self, *job_ids: str) -> None:
        """Ticks until every job of ``job_ids`` has ended (their processes exit at once)."""

        def ended() -> bool:
            self.supervisor.tick()
            return all(self.state(job_id).state in TERMINAL for job_id in job_ids)

        wait_for(ended)


@contextlib.contextmanager
def jobs_on(tmp_path: Path, settings: JobsSettings) -> Iterator[Jobs]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    try:
        service = JobService(sessions, settings, None, None)  # type: ignore[arg-type]  # no feature refs
        supervisor = Supervisor(sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
        yield Jobs(service, supervisor, settings)
    finally:
        engine.dispose()


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    with jobs_on(tmp_path, jobs_settings(tmp_path / "home", gpus="2")) as made:
        yield made


def test_a_launch_that_fails_holds_back_the_jobs_behind_it_until_the_next_tick(jobs: Jobs) -> None:
    """The first job's launch raises (its spec file cannot be written: a folder stands in its place), so
    its attempt ends at once (a failed attempt, retried). The job behind it was planned on the other GPU
    in the same tick and started there: in strict FIFO it had overtaken the job ahead of it."""
    first = jobs.submit("first", gpus=1, max_retries=1)
    second = jobs.submit("second", gpus=1)
    spec_file = jobs.settings.folder / first / "spec.json"
    spec_file.unlink()
    spec_file.mkdir()

    jobs.supervisor.tick()

    failed = jobs.state(first)
    assert (failed.state, failed.attempt) == (pb.JOB_STATE_RETRYING, 1), failed.reason
    assert failed.reason.startswith("attempt 1 failed: cannot launch: cannot write the job's spec file")
    behind = jobs.state(second)
    assert states_of(behind) == ["QUEUED"], behind.reason
    assert behind.attempt == 0

    spec_file.rmdir()
    jobs.supervisor.tick()  # a new plan: the first job (its old place kept) starts first
    assert jobs.state(first).state == pb.JOB_STATE_RUNNING
    jobs.run_out(first, second)
    assert jobs.state(first).state == pb.JOB_STATE_SUCCEEDED
    assert jobs.state(second).state == pb.JOB_STATE_SUCCEEDED
    assert jobs.state(first).started_at_us <= jobs.state(second).started_at_us


def test_a_start_that_raises_before_its_attempt_holds_back_the_jobs_behind_it(jobs: Jobs) -> None:
    """The first job's start raises before it is RUNNING (its folder is gone: neither its tracking run's
    id nor its log can be written), so it stays queued, no attempt made. The job behind it started in
    the same tick all the same; now nothing behind it starts, and the first says why it waits."""
    first = jobs.submit("first", gpus=1)
    second = jobs.submit("second", gpus=1)
    folder = jobs.settings.folder / first
    moved = folder.with_name("moved-away")
    folder.rename(moved)

    jobs.supervisor.tick()
    jobs.supervisor.tick()  # and again: still held back, and the reason recorded once

    behind = jobs.state(second)
    assert states_of(behind) == ["QUEUED"], behind.reason
    waiting = jobs.state(first)
    assert (waiting.state, waiting.attempt) == (pb.JOB_STATE_QUEUED, 0)
    assert waiting.reason.startswith("waiting to start: cannot reserve the job's tracking run id in ")
    assert waiting.reason.endswith("; tried again every tick")
    assert states_of(waiting) == ["QUEUED", "QUEUED"]

    moved.rename(folder)
    jobs.supervisor.tick()
    started = jobs.state(first)
    assert started.state == pb.JOB_STATE_RUNNING
    assert started.reason.startswith("attempt 1 of 1 started on devices ")
    jobs.run_out(first, second)
    assert jobs.state(first).started_at_us <= jobs.state(second).started_at_us


def test_a_first_start_on_a_full_disk_waits_and_says_why(tmp_path: Path) -> None:
    """The jobs folder's disk is full at a job's first start: its tracking run's id cannot be reserved.
    The job waits (QUEUED, no attempt spent: its code never ran) and was retried every tick, but its
    reason still said "submitted by tester", its log was empty (full too), and only the control plane's
    own log told why. Now ``Get`` (and ``aetherctl jobs``) says why it waits; it starts once there is
    room."""
    settings = jobs_settings(tmp_path / "home", gpus="2")
    with small_filesystem(settings.folder) as jobs_folder, jobs_on(tmp_path, settings) as jobs:
        job = jobs.submit("full-disk", gpus=1)
        filler = fill(jobs_folder)
        try:
            jobs.supervisor.tick()
            waiting = jobs.state(job)
            assert (waiting.state, waiting.attempt) == (pb.JOB_STATE_QUEUED, 0), waiting.reason
            assert waiting.reason.startswith("waiting to start: cannot reserve the job's tracking run id")
            assert "No space left on device" in waiting.reason
            assert waiting.run_id == ""
        finally:
            filler.unlink()
        jobs.supervisor.tick()
        started = jobs.state(job)
        assert (started.state, started.attempt) == (pb.JOB_STATE_RUNNING, 1), started.reason
        assert started.run_id
        jobs.run_out(job)
        done = jobs.state(job)
    assert states_of(done) == ["QUEUED", "QUEUED", "RUNNING", "SUCCEEDED"], done.reason


def test_a_start_that_fails_for_good_fails_the_job_and_the_queue_moves_on(tmp_path: Path) -> None:
    """The first job's folder is gone for good: every start raises before it is RUNNING. It waited (and
    held back the strict queue behind it) for ever, nothing ever failing it. Once its starts have failed
    on every try for ``start_give_up_s`` (``AETHER_JOBS_START_GIVE_UP_S``), it ends FAILED saying why,
    and the job behind it starts."""
    give_up_s = 0.3
    settings = dataclasses.replace(jobs_settings(tmp_path / "home", gpus="1"), start_give_up_s=give_up_s)
    with jobs_on(tmp_path, settings) as jobs:
        first = jobs.submit("first", gpus=1)
        second = jobs.submit("second", gpus=1)
        (jobs.settings.folder / first).rename(jobs.settings.folder / "gone-for-good")

        jobs.supervisor.tick()  # the first failure: it waits, the queue with it
        waiting = jobs.state(first)
        assert (waiting.state, waiting.attempt) == (pb.JOB_STATE_QUEUED, 0), waiting.reason
        assert waiting.reason.startswith("waiting to start: ")
        assert states_of(jobs.state(second)) == ["QUEUED"]

        time.sleep(give_up_s + 0.05)  # its starts have now failed for longer than the bound
        jobs.supervisor.tick()
        failed = jobs.state(first)
        assert failed.state == pb.JOB_STATE_FAILED, failed.reason
        assert failed.reason.startswith(
            f"its start failed on every try for {give_up_s:g} s (AETHER_JOBS_START_GIVE_UP_S): cannot reserve"
            " the job's tracking run id in "
        ), failed.reason
        assert states_of(failed) == ["QUEUED", "QUEUED", "FAILED"]
        assert failed.attempt == 0

        jobs.run_out(second)
        assert jobs.state(second).state == pb.JOB_STATE_SUCCEEDED


def test_waiting_for_a_device_does_not_count_toward_giving_its_start_up(tmp_path: Path) -> None:
    """A job's start failed once, then it waited for the one GPU (a job of a higher priority held it)
    for longer than ``start_give_up_s``. Waiting is not a failed start, but the give-up clock ran on
    through it: the job was FAILED at its first failed start after the wait. Now only the time its
    starts fail counts (a wait pauses it), and the bound still ends the job once its starts fail for that
    long after the wait. The fault is a real file: the job's ``run.json`` a folder, so its run id cannot
    be reserved (its log stays writable)."""
    give_up_s = 0.3
    settings = dataclasses.replace(jobs_settings(tmp_path / "home", gpus="1"), start_give_up_s=give_up_s)
    with jobs_on(tmp_path, settings) as jobs:
        broken = jobs.submit("broken", gpus=1)
        (jobs.settings.folder / broken / "run.json").mkdir()
        jobs.supervisor.tick()  # its first failed start
        assert jobs.state(broken).reason.startswith("waiting to start: cannot reserve")

        release = tmp_path / "release"
        holder = jobs.submit("holder", "--until-file", str(release), gpus=1, priority=1)
        jobs.supervisor.tick()
        assert jobs.state(holder).state == pb.JOB_STATE_RUNNING
        time.sleep(give_up_s + 0.05)  # the broken job waits for the GPU longer than the bound
        jobs.supervisor.tick()
        assert jobs.state(broken).state == pb.JOB_STATE_QUEUED

        release.touch()
        jobs.run_out(holder)  # the tick that ends it tries the broken job on the GPU, once
        waiting = jobs.state(broken)
        assert (waiting.state, waiting.attempt) == (pb.JOB_STATE_QUEUED, 0), waiting.reason
        assert waiting.reason.startswith("waiting to start: cannot reserve"), waiting.reason

        time.sleep(give_up_s + 0.05)  # now its starts fail for longer than the bound: it is given up
        jobs.supervisor.tick()
        failed = jobs.state(broken)
        assert failed.state == pb.JOB_STATE_FAILED, failed.reason
        assert failed.reason.startswith(
            f"its start failed on every try for {give_up_s:g} s (AETHER_JOBS_START_GIVE_UP_S): cannot reserve"
        ), failed.reason
