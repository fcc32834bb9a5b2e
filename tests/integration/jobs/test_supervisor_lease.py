"""The supervisors' leader lease (``control_plane/jobs/lease.py``), on each supported database: of two
supervisors on one database only the lease's holder acts; once it stops renewing, the other takes over
and runs the queue; and a holder paused past its lease commits nothing after the takeover (fencing).

Two real :class:`Supervisor` instances over one real database (a SQLite file, or the PostgreSQL server).
Their executors record what they are asked to do and start no process: what is checked is which
supervisor acted on which job. One of them can pause inside a launch, which stands for a control plane
that stops there (a stopped process, a long pause) while the other one goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from control_plane.db import (
    create_db_engine,
    create_session_factory,
    read_session,
    upgrade_to_head,
    write_session,
)
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.executor import ExitStatus, JobLaunch
from control_plane.jobs.lease import LeaseLost, SupervisorLease
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from control_plane.jobs.tables import JobEventRow, JobRow
from control_plane.offline.store import OfflineStore
from tests.integration.jobs.conftest import job_spec, jobs_settings, wait_for

#: (supervisor, what it did: "launch" | "adopt", job id), in order.
Actions = list[tuple[str, str, str]]


class _Attempt:
    """An attempt that runs until the test ends."""

    def __init__(self, ref: str) -> None:
        self.ref, self.pid, self.main_exited = ref, None, False

    def poll(self) -> ExitStatus | None:
        return None

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class RecordingExecutor:
    """Records each launch and re-adoption; ``pause_launches`` holds every launch until it is cleared
    (the fault: a supervisor stopped mid-decision, which a test cannot cause in a thread otherwise)."""

    def __init__(self, name: str, actions: Actions) -> None:
        self.name, self.actions = name, actions
        self.pause_launches = threading.Event()
        self.paused = threading.Event()

    def launch(
        self, job: JobLaunch, attempt: int, devices: Sequence[str], env: Mapping[str, str]
    ) -> _Attempt:
        self.actions.append((self.name, "launch", job.job_id))
        if self.pause_launches.is_set():
            self.paused.set()
            wait_for(lambda: not self.pause_launches.is_set(), timeout=60)
        return _Attempt(f"{self.name}-launched-{job.job_id}")

    def adopt(self, job: JobLaunch, attempt: int, ref: str) -> _Attempt | None:
        self.actions.append((self.name, "adopt", job.job_id))
        return _Attempt(ref or f"{self.name}-adopted-{job.job_id}")


class Pair:
    """One database, its jobs service, and two supervisors ``a`` and ``b`` with executors of their own."""

    def __init__(self, db_url: str, home: Path, settings: JobsSettings) -> None:
        self.engine = create_db_engine(db_url)
        upgrade_to_head(self.engine)
        self.sessions = create_session_factory(self.engine)
        self.settings = settings
        self.service = JobService(
            self.sessions, settings, FeatureRegistry(self.sessions, ()), OfflineStore(str(home / "offline"))
        )
        self.actions: Actions = []
        self.a_executor = RecordingExecutor("A", self.actions)
        self.b_executor = RecordingExecutor("B", self.actions)
        self.a = Supervisor(self.sessions, settings, self.a_executor, lambda: "127.0.0.1:1")
        self.b = Supervisor(self.sessions, settings, self.b_executor, lambda: "127.0.0.1:1")

    def submit(self, name: str) -> str:
        return self.service.submit(spec_from_mapping(job_spec(name, gpus=1)), actor="t").job_id

    def states(self) -> dict[str, str]:
        with read_session(self.sessions) as session:
            return {row.job_id: row.state for row in session.scalars(select(JobRow))}

    def process_ref(self, job_id: str) -> str:
        with read_session(self.sessions) as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            return row.process_ref


def _pair(db_url: str, home: Path, **lease: float) -> Iterator[Pair]:
    pair = Pair(db_url, home, replace(jobs_settings(home, gpus="3"), **lease))
    yield pair
    pair.a_executor.pause_launches.clear()
    pair.a.stop()
    pair.b.stop()
    pair.engine.dispose()


@pytest.fixture
def pair(tmp_path: Path, db_url: str) -> Iterator[Pair]:
    """A lease that does not run out during a test: the jobs tests' own (``TEST_LEASE_S``, 1 s) ran out on a
    loaded host while a leader's tick was busy launching, and the other took over (as it should then)."""
    yield from _pair(db_url, tmp_path, lease_s=60.0, lease_renew_s=0.25)


@pytest.fixture
def short_lease(tmp_path: Path, db_url: str) -> Iterator[Pair]:
    yield from _pair(db_url, tmp_path, lease_s=1.0, lease_renew_s=0.2)


def test_of_two_running_supervisors_only_one_acts_on_the_jobs(pair: Pair) -> None:
    """Both loops run, woken often; each job is launched once, and the other supervisor neither launches
    nor re-adopts (it used to take the leader's attempts for ones a restart left, and adopt them)."""
    jobs = [pair.submit(f"job{index}") for index in range(3)]
    pair.a.start()
    pair.b.start()
    wait_for(lambda: all(state == "RUNNING" for state in pair.states().values()))
    for _ in range(10):  # several ticks of both, all jobs running
        pair.a.wake()
        pair.b.wake()
        time.sleep(pair.settings.tick_s)
    actors = {actor for actor, _, _ in pair.actions}
    assert len(actors) == 1, pair.actions
    assert sorted(job for _, action, job in pair.actions if action == "launch") == sorted(jobs), pair.actions
    assert not [action for action in pair.actions if action[1] == "adopt"], pair.actions


def test_when_the_leader_stops_renewing_the_other_takes_over_and_runs_the_queue(short_lease: Pair) -> None:
    pair = short_lease
    first = pair.submit("first")
    pair.a.tick()  # A leads, and starts "first"
    assert pair.actions == [("A", "launch", first)]
    second = pair.submit("second")
    # A stops renewing (crashed, or hung) without giving the lease up: until it expires B does nothing.
    pair.b.tick()
    assert pair.states()[second] == "QUEUED" and len(pair.actions) == 1
    # Then B takes over: it re-adopts A's attempt (its process runs on) and starts the queued job.
    wait_for(lambda: pair.b.tick() or pair.states()[second] == "RUNNING", timeout=10, interval=0.1)
    assert pair.actions[1:] == [("B", "adopt", first), ("B", "launch", second)]
    # A, back, finds the lease B's and does nothing either.
    pair.a.tick()
    assert len(pair.actions) == 3


def test_a_supervisor_that_stops_gives_the_lease_up_at_once(pair: Pair) -> None:
    """A restart: the old control plane stops (its supervisor gives the lease up) and the next takes over
    at its first tick, not the lease's 15 s later."""
    first = pair.submit("first")
    pair.a.tick()
    second = pair.submit("second")
    pair.a.stop()
    pair.b.tick()
    assert pair.actions == [("A", "launch", first), ("B", "adopt", first), ("B", "launch", second)]


def test_a_leader_paused_past_its_lease_commits_nothing_after_the_takeover(short_lease: Pair) -> None:
    """A pauses inside the launch of "first", after its RUNNING transition committed and before the
    process is recorded; its lease runs out and B takes over. When A resumes, its write of the process
    (a decision made under the old epoch) is refused, it launches nothing more of its stale plan, and it
    gives up its attempts: B's re-adoption of "first" stands."""
    pair = short_lease
    first, second, third = pair.submit("first"), pair.submit("second"), pair.submit("third")
    pair.a_executor.pause_launches.set()
    a_tick = threading.Thread(target=pair.a.tick, name="supervisor-a")
    a_tick.start()
    assert pair.a_executor.paused.wait(timeout=30)
    wait_for(lambda: pair.b.tick() or pair.states()[third] == "RUNNING", timeout=10, interval=0.1)
    pair.a_executor.pause_launches.clear()
    a_tick.join(timeout=30)
    assert not a_tick.is_alive()

    assert pair.actions == [
        ("A", "launch", first),
        ("B", "adopt", first),
        ("B", "launch", second),
        ("B", "launch", third),
    ]
    assert pair.process_ref(first) == f"B-adopted-{first}"  # not A's: its write was refused
    with read_session(pair.sessions) as session:
        adopted = session.scalars(
            select(JobEventRow.reason).where(JobEventRow.job_id == first).order_by(JobEventRow.id)
        ).all()
    assert adopted[-1].startswith("re-adopted process B-adopted-"), adopted
    # A, resumed, neither acts nor re-adopts: B holds the lease.
    pair.a.tick()
    assert len(pair.actions) == 4


def test_the_fence_refuses_a_decision_under_an_epoch_that_was_taken_over(short_lease: Pair) -> None:
    pair = short_lease
    old = SupervisorLease(pair.sessions, lease_s=0.3, renew_s=0.1)
    assert old.hold()
    with write_session(pair.sessions) as session:
        old.fence(session)  # the holder of the current epoch decides
    new = SupervisorLease(pair.sessions, lease_s=0.3, renew_s=0.1)
    assert not new.hold()  # a live lease is not taken over
    wait_for(new.hold, timeout=10)
    assert new.epoch == 2
    refused = pytest.raises(LeaseLost, match=r"is now .*, epoch 2's: its decision is not committed")
    with refused, write_session(pair.sessions) as session:
        old.fence(session)
    assert old.epoch is None and not old.hold()
