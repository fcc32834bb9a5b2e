"""Two supervisors on one database (a second control plane started on the same ``AETHER_DB_URL``, or an
old one still alive during a restart), on each supported database: they never hand out one device twice.

Each decides from a read of the running jobs; a start re-checks the devices in its write transaction,
and those transactions are serialized (SQLite's write lock, PostgreSQL's advisory lock), so the second
start sees the first's and leaves its job waiting. Executors are stubs: what is checked is the rows.

The supervisors' leader lease keeps a second supervisor from acting at all (``test_supervisor_lease.py``);
to check the devices' own guard beneath it, the two here share one hold on the lease, as two supervisors
that both believe they lead."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import create_db_engine, create_session_factory, read_session, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs import admission as admission_module
from control_plane.jobs.executor import ExitStatus, JobLaunch
from control_plane.jobs.lease import SupervisorLease
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from control_plane.jobs.tables import JobRow
from control_plane.offline.store import OfflineStore
from tests.integration.jobs.conftest import job_spec, jobs_settings

Launched = list[tuple[str, str, tuple[str, ...]]]


class _Handle:
    """An attempt that runs until the test ends."""

    def __init__(self, ref: str) -> None:
        self.ref, self.pid, self.main_exited = ref, None, False

    def poll(self) -> ExitStatus | None:
        return None

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class _Executor:
    def __init__(self, name: str, launched: Launched) -> None:
        self.name, self.launched = name, launched

    def launch(self, job: JobLaunch, attempt: int, devices: Sequence[str], env: Mapping[str, str]) -> _Handle:
        self.launched.append((self.name, job.job_id, tuple(devices)))
        return _Handle(f"{self.name}-{job.job_id}")

    def adopt(self, job: JobLaunch, attempt: int, ref: str) -> _Handle | None:
        return _Handle(ref)


class Plant:
    """One database, its jobs service, and two supervisors ``a`` and ``b`` of one pool."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: JobsSettings, home: Path, b_settings: JobsSettings
    ) -> None:
        self.sessions = sessions
        self.service = JobService(
            sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(home / "offline"))
        )
        self.launched: Launched = []
        lease = SupervisorLease(sessions, settings.lease_s, settings.lease_renew_s)
        self.a = Supervisor(
            sessions, settings, _Executor("A", self.launched), lambda: "127.0.0.1:1", lease=lease
        )
        self.b = Supervisor(
            sessions, b_settings, _Executor("B", self.launched), lambda: "127.0.0.1:1", lease=lease
        )

    def submit(self, name: str, **fields: Any) -> str:
        return self.service.submit(spec_from_mapping(job_spec(name, gpus=1, **fields)), actor="t").job_id

    def rows(self) -> dict[str, tuple[str, list[str]]]:
        with read_session(self.sessions) as session:
            return {row.job_id: (row.state, list(row.devices)) for row in session.scalars(select(JobRow))}

    def assert_not_overcommitted(self) -> list[str]:
        """The devices of the RUNNING jobs, each once."""
        rows = self.rows()
        used = [device for state, devices in rows.values() if state == "RUNNING" for device in devices]
        assert len(used) == len(set(used)), f"launches {self.launched}; rows {rows}"
        return used


def _plant(home: Path, db_url: str, gpus: str, b_gpus: str | None = None) -> Iterator[Plant]:
    """A plant whose supervisor ``b`` has a pool of ``b_gpus`` (default: the same as ``a``'s)."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    settings = jobs_settings(home, gpus=gpus)
    b_settings = settings if b_gpus is None else jobs_settings(home, gpus=b_gpus)
    yield Plant(create_session_factory(engine), settings, home, b_settings)
    engine.dispose()


@pytest.fixture
def one_gpu(tmp_path: Path, db_url: str) -> Iterator[Plant]:
    yield from _plant(tmp_path, db_url, "1")


@pytest.fixture
def narrower_b(tmp_path: Path, db_url: str) -> Iterator[Plant]:
    """Devices 0 and 1 for ``a``; ``b`` is configured with device 0 only."""
    yield from _plant(tmp_path, db_url, "2", b_gpus="1")


def _meanwhile(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Runs ``action`` once, right after the first plan of any supervisor is made (from its read of the
    running jobs) and before that supervisor starts anything of it."""
    real = admission_module.schedule
    calls: list[int] = []

    def interleaved(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        decisions = real(*args, **kwargs)
        if len(calls) == 1:
            action()
        return decisions

    monkeypatch.setattr(admission_module, "schedule", interleaved)


def test_a_start_on_a_device_taken_since_the_plan_leaves_the_job_waiting(
    one_gpu: Plant, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant = one_gpu
    first = plant.submit("first")
    plant.submit("second")
    urgent: list[str] = []

    def other_control_plane() -> None:  # a user submits an urgent job; the other supervisor starts it
        urgent.append(plant.submit("urgent", priority=10))
        plant.b.tick()

    _meanwhile(monkeypatch, other_control_plane)
    plant.a.tick()  # planned "first" on device 0, which B then gave to "urgent"

    assert plant.assert_not_overcommitted() == ["0"]
    rows = plant.rows()
    assert rows[urgent[0]] == ("RUNNING", ["0"])
    assert rows[first] == ("QUEUED", [])  # waiting, for the next tick to plan again
    assert [(name, job) for name, job, _ in plant.launched] == [("B", urgent[0])]
    plant.a.tick()
    plant.b.tick()
    plant.assert_not_overcommitted()
    assert len(plant.launched) == 1


def test_a_stale_plan_starts_nothing_behind_the_job_it_could_not_start(
    narrower_b: Plant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plans "first" on 0 and "second" on 1; B, configured with device 0 only, gives 0 to an urgent
    job meanwhile. A starting "second" on 1 would pass "first", which comes before it in the queue: A
    starts neither, and its next plan starts "first" on 1."""
    plant = narrower_b
    first = plant.submit("first")
    second = plant.submit("second")
    urgent: list[str] = []

    def other_control_plane() -> None:
        urgent.append(plant.submit("urgent", priority=10))
        plant.b.tick()

    _meanwhile(monkeypatch, other_control_plane)
    plant.a.tick()

    plant.assert_not_overcommitted()
    rows = plant.rows()
    assert rows[urgent[0]] == ("RUNNING", ["0"])
    assert rows[first] == ("QUEUED", []) and rows[second] == ("QUEUED", []), rows
    plant.a.tick()
    rows = plant.rows()
    assert rows[first] == ("RUNNING", ["1"]) and rows[second] == ("QUEUED", []), rows
    assert sorted(plant.assert_not_overcommitted()) == ["0", "1"]


def test_two_starts_at_once_are_serialized(one_gpu: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    """A's start holds its write transaction open, past its check of the devices, while B plans and
    starts another job on the same device. B's start must wait for A's to commit (SQLite: the write lock
    its transaction takes at its start; PostgreSQL, whose READ COMMITTED would let both check before
    either commits: the advisory lock), then find the device taken."""
    plant = one_gpu
    first = plant.submit("first")
    urgent: list[str] = []
    # Submitted once A has planned, so that only B's plan has it (A's write transaction, below, would
    # keep a submission waiting on SQLite).
    _meanwhile(monkeypatch, lambda: urgent.append(plant.submit("urgent", priority=10)))
    real_holder = admission_module._holder_of
    b_tick = threading.Thread(target=plant.b.tick, name="supervisor-b")
    a_thread = threading.current_thread()

    def holder_then_b(session: Session, devices: tuple[str, ...]) -> str:
        holder = real_holder(session, devices)
        if threading.current_thread() is a_thread:
            b_tick.start()
            b_tick.join(timeout=2.0)  # serialized: B is still waiting when A commits
        return holder

    monkeypatch.setattr(admission_module, "_holder_of", holder_then_b)
    plant.a.tick()
    b_tick.join(timeout=30)
    assert not b_tick.is_alive()

    assert plant.assert_not_overcommitted() == ["0"]
    rows = plant.rows()
    assert rows[first] == ("RUNNING", ["0"]) and rows[urgent[0]] == ("QUEUED", []), rows
    assert [(name, job) for name, job, _ in plant.launched] == [("A", first)]
