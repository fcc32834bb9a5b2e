"""The jobs core and one supervisor tick on each supported database (SQLite and PostgreSQL): queue
order, cancel, state filters and pages, audit entries in the same transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import jobs_pb2 as pb
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory, read_session, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.service import JobService
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from control_plane.offline.store import OfflineStore
from tests.integration.jobs.conftest import REPO_ROOT, job_spec, jobs_settings, wait_for

Parts: TypeAlias = tuple[JobService, Supervisor, "sessionmaker[Session]"]


@pytest.fixture
def parts(tmp_path: Path, db_url: str) -> Iterator[Parts]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = jobs_settings(tmp_path, gpus="1")
    supervisor = Supervisor(sessions, settings, LocalExecutor(cwd=REPO_ROOT), lambda: "127.0.0.1:1")
    service = JobService(
        sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(tmp_path / "offline"))
    )
    yield service, supervisor, sessions
    for job in service.list([pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING])[0]:
        service.cancel(job.job_id, actor="cleanup")

    def settled() -> bool:
        supervisor.tick()
        return not service.list([pb.JOB_STATE_RUNNING])[0]

    wait_for(settled, timeout=15)
    engine.dispose()


def test_queue_order_cancel_and_listing(parts: Parts) -> None:
    service, supervisor, sessions = parts
    low = service.submit(spec_from_mapping(job_spec("low", "--sleep", "30", gpus=1)), actor="a")
    high = service.submit(spec_from_mapping(job_spec("high", "--sleep", "30", gpus=1, priority=5)), actor="a")
    third = service.submit(spec_from_mapping(job_spec("third", gpus=1)), actor="b")
    assert service.cancel(third.job_id, "nope", actor="b").state == pb.JOB_STATE_CANCELLED

    supervisor.tick()
    assert service.get(high.job_id).state == pb.JOB_STATE_RUNNING  # higher priority first
    assert service.get(low.job_id).state == pb.JOB_STATE_QUEUED  # the single device is taken
    assert service.get(third.job_id).attempt == 0

    page, token = service.list(page_size=2)
    assert [j.spec.name for j in page] == ["third", "high"] and token
    rest, token = service.list(page_size=2, page_token=token)
    assert [j.spec.name for j in rest] == ["low"] and token == ""
    assert [j.job_id for j in service.list([pb.JOB_STATE_QUEUED, pb.JOB_STATE_CANCELLED])[0]] == [
        third.job_id, low.job_id,
    ]  # fmt: skip
    with read_session(sessions) as session:
        audited = session.scalar(
            select(func.count()).select_from(AuditEntryRow).where(AuditEntryRow.object_type == "job")
        )
    assert audited == 5  # three submits, one cancel, one start
