"""Concurrent writers of one run, interleaved by hand on PostgreSQL: the first has written and not yet
committed when the second reads the run. The second must see the first's values: the per-run size limit
holds for both together, and a replaced artifact's audit entry says what the first logged. On SQLite,
which has one writer, the first commits before the second starts: the order PostgreSQL's locks must
give too, so both backends give the same answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.tracking.records import MAX_RUN_VALUES_BYTES
from control_plane.tracking.run_size import MAX_RUN_MESSAGE_BYTES
from control_plane.tracking.store import TrackingStore
from tests.support.pg_interleave import race_against

First = Callable[[sessionmaker[Session]], object]


def _one_after_another(engine: Engine, first: First, second: Callable[[], Any]) -> Any:
    """Runs ``first`` (given the sessions to write in) and then ``second``; on PostgreSQL ``first``'s
    transaction stays open until ``second`` waits on it, so ``second`` has read before it commits."""
    if engine.dialect.name == "postgresql":
        return race_against(engine, lambda held: first(held.sessions()), second)
    first(create_session_factory(engine))
    return second()


def _store(db_url: str) -> tuple[Engine, TrackingStore, str]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    store = TrackingStore(create_session_factory(engine))
    experiment_id = store.create_experiment("e", actor="t").experiment_id
    return engine, store, store.create_run(experiment_id, "r", actor="t").run_id


def test_two_log_batches_of_one_run_cannot_together_pass_its_values_limit(db_url: str) -> None:
    """Each batch's tags (2.1 MB) are under the 3.5 MiB limit, both together over it. On PostgreSQL the
    second batch checked the size without the first's uncommitted tags, both were stored, and the run
    could no longer be read (GetRun failed RESOURCE_EXHAUSTED for good)."""
    engine, store, run_id = _store(db_url)

    def tags(prefix: str) -> dict[str, str]:
        return {f"{prefix}{index}": "v" * 6000 for index in range(350)}

    def first(sessions: sessionmaker[Session]) -> object:
        return TrackingStore(sessions).log_batch([pb.RunBatch(run_id=run_id, tags=tags("a"))], actor="a")

    def second() -> object:
        return store.log_batch([pb.RunBatch(run_id=run_id, tags=tags("b"))], actor="b")

    with pytest.raises(InvalidArgument, match=f"over the limit of {MAX_RUN_VALUES_BYTES} bytes per run"):
        _one_after_another(engine, first, second)
    run = store.get_run(run_id)
    assert set(run.tags) == set(tags("a"))
    assert run.ByteSize() < MAX_RUN_VALUES_BYTES + 1024
    engine.dispose()


def test_an_artifact_replaced_by_a_concurrent_log_is_the_next_audit_entrys_before(db_url: str) -> None:
    """Each audit entry of an artifact's name says what it replaced, so the entries chain. On PostgreSQL
    the second log read the artifact before the first's uncommitted replacement, and its entry said it
    replaced the artifact the first had replaced: that replacement was missing from the history."""
    engine, store, run_id = _store(db_url)
    checksums = [character * 64 for character in "abc"]

    def log(sessions: sessionmaker[Session], index: int) -> object:
        uri = f"file:///artifacts/{index}"
        return TrackingStore(sessions).log_artifact(run_id, "model.onnx", checksums[index], 1, uri, actor="t")

    sessions = create_session_factory(engine)
    log(sessions, 0)
    _one_after_another(engine, lambda held: log(held, 1), lambda: log(sessions, 2))
    with engine.connect() as connection:
        entries = connection.execute(
            select(AuditEntryRow.before, AuditEntryRow.after)
            .where(AuditEntryRow.object_id == run_id)
            .order_by(AuditEntryRow.seq)
        ).all()
    chain = [
        (before and before["sha256"], after["sha256"]) for before, after in entries if "artifact" in after
    ]
    assert chain == [(None, checksums[0]), (checksums[0], checksums[1]), (checksums[1], checksums[2])]
    assert [artifact.sha256 for artifact in store.list_artifacts(run_id)] == [checksums[2]]
    engine.dispose()


def test_a_status_changed_by_a_concurrent_update_is_the_next_audit_entrys_before(db_url: str) -> None:
    """As for artifacts: each status change's audit entry says the status it replaced. On PostgreSQL the
    second UpdateRun read the run before the first's uncommitted change, and its entry said it replaced
    RUNNING: the first change was missing from the history."""
    engine, store, run_id = _store(db_url)

    def first(sessions: sessionmaker[Session]) -> object:
        return TrackingStore(sessions).update_run(run_id, pb.RUN_STATUS_FAILED, actor="a")

    _one_after_another(engine, first, lambda: store.update_run(run_id, pb.RUN_STATUS_KILLED, actor="b"))
    with engine.connect() as connection:
        entries = connection.execute(
            select(AuditEntryRow.before, AuditEntryRow.after)
            .where(AuditEntryRow.object_id == run_id, AuditEntryRow.action == "update")
            .order_by(AuditEntryRow.seq)
        ).all()
    chain = [(before["status"], after["status"]) for before, after in entries if "status" in after]
    assert chain == [("RUNNING", "FAILED"), ("FAILED", "KILLED")]
    assert store.get_run(run_id).status == pb.RUN_STATUS_KILLED
    engine.dispose()


def test_two_log_batches_of_new_metric_keys_cannot_together_outgrow_the_runs_message(db_url: str) -> None:
    """A run near the message limit takes one more batch of 500 new keys, not two. On PostgreSQL a batch
    of points did not lock the run, so each checked the size without the other's uncommitted summaries,
    both were stored, and the run could no longer be read (4,236,552 bytes)."""
    engine, store, run_id = _store(db_url)
    store.log_batch(
        [pb.RunBatch(run_id=run_id, params={f"p{index}": "z" * 6000 for index in range(590)})], actor="t"
    )

    def keys(prefix: str, count: int) -> list[pb.MetricSeries]:
        names = (f"{prefix}-{index:04d}-" + "k" * 230 for index in range(count))
        return [pb.MetricSeries(key=name, values=[1.0], steps=[0], timestamps_us=[1]) for name in names]

    store.log_batch([pb.RunBatch(run_id=run_id, metrics=keys("base", 1500))], actor="t")

    def first(sessions: sessionmaker[Session]) -> object:
        return TrackingStore(sessions).log_batch(
            [pb.RunBatch(run_id=run_id, metrics=keys("a", 500))], actor="a"
        )

    def second() -> object:
        return store.log_batch([pb.RunBatch(run_id=run_id, metrics=keys("b", 500))], actor="b")

    with pytest.raises(InvalidArgument, match=f"run {run_id!r} would take"):
        _one_after_another(engine, first, second)
    run = store.get_run(run_id)
    assert len(run.metrics) == 2000 and run.ByteSize() <= MAX_RUN_MESSAGE_BYTES
    engine.dispose()
