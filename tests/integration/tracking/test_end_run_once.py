"""``TrackingStore.end_run_once`` on a real database: of writers ending one run with one status at the
same time (each with its own engine, as separate processes would have), exactly one changes it and one
audit entry records it; a different status still changes it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from clients.aether.v1 import tracking_pb2 as pb
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory, read_session, upgrade_to_head
from control_plane.tracking.store import TrackingStore


def test_a_run_ended_by_several_writers_at_once_changes_once(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    store = TrackingStore(sessions)
    experiment_id = store.create_experiment("e", actor="t").experiment_id
    run_id = store.create_run(experiment_id, "r", start_time_us=1, actor="t").run_id
    writers = 4
    start = threading.Barrier(writers)

    def end(index: int) -> bool:
        own = create_db_engine(db_url)
        try:
            mine = TrackingStore(create_session_factory(own))
            start.wait()
            return mine.end_run_once(run_id, pb.RUN_STATUS_KILLED, 1000 + index, actor=f"w{index}")
        finally:
            own.dispose()

    with ThreadPoolExecutor(writers) as pool:
        changed = list(pool.map(end, range(writers)))

    assert changed.count(True) == 1
    run = store.get_run(run_id)
    assert run.status == pb.RUN_STATUS_KILLED and run.end_time_us == 1000 + changed.index(True)
    assert not store.end_run_once(run_id, pb.RUN_STATUS_KILLED, 5000, actor="t")
    assert store.get_run(run_id).end_time_us == 1000 + changed.index(True)
    assert store.end_run_once(run_id, pb.RUN_STATUS_FAILED, 6000, actor="t")  # another status: changed
    with read_session(sessions) as session:
        updates = session.scalars(
            select(AuditEntryRow.after)
            .where(AuditEntryRow.object_id == run_id, AuditEntryRow.action == "update")
            .order_by(AuditEntryRow.seq)
        ).all()
        assert session.scalar(select(func.count()).select_from(AuditEntryRow)) == 2 + len(updates)
    assert [entry["status"] for entry in updates] == ["KILLED", "FAILED"]
    engine.dispose()


def test_a_system_end_before_the_run_started_ends_it_at_its_start(db_url: str) -> None:
    """A job cancelled while its run was being created is stamped before the run's start; refusing that
    end (as a client's UpdateRun is refused) left the run RUNNING for ever and failed every sweep."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    store = TrackingStore(create_session_factory(engine))
    experiment_id = store.create_experiment("e", actor="t").experiment_id
    run = store.create_run(experiment_id, "r", actor="t")
    assert store.end_run_once(run.run_id, pb.RUN_STATUS_KILLED, run.start_time_us - 5, actor="supervisor")
    ended = store.get_run(run.run_id)
    assert (ended.status, ended.end_time_us, ended.duration_us) == (
        pb.RUN_STATUS_KILLED,
        run.start_time_us,
        0,
    )
    engine.dispose()
