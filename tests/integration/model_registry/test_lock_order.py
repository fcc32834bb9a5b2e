"""The order a version's registration takes its locks on PostgreSQL, interleaved by hand
(tests/support/pg_interleave.py). Every writer locks its own rows first and the audit head last
(control_plane/audit/log.py): a job's CreateModelVersion with create_model appended the model's "create"
audit entry, taking the audit head, before it locked its run's row, while a LogBatch or UpdateRun of
that run holds the run's row and then appends to the audit log: PostgreSQL found the deadlock and killed
one of them, and its client got UNAVAILABLE "deadlock detected"."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from clients.aether.v1 import model_registry_pb2 as pb
from control_plane.artifacts.settings import store_for
from control_plane.audit.log import HEAD_ROW_ID
from control_plane.audit.tables import AuditEntryRow, AuditHeadRow
from control_plane.db import create_session_factory
from control_plane.model_registry.approval import Approval
from control_plane.model_registry.registry import ModelRegistry
from control_plane.model_registry.review import record_decision
from control_plane.tracking.store import TrackingStore
from control_plane.tracking.tables import RunRow
from tests.support.pg_interleave import HeldTransaction


def test_a_job_registering_a_new_model_locks_its_run_before_the_audit_head(
    pg_engine: Engine, tmp_path: Path
) -> None:
    sessions = create_session_factory(pg_engine)
    tracking = TrackingStore(sessions)
    experiment_id = tracking.create_experiment("e", actor="t").experiment_id
    run_id = tracking.create_run(experiment_id, "r", actor="t").run_id
    registry = ModelRegistry(sessions, store_for(tmp_path))
    sha256 = registry.artifacts.put_bytes(b"onnx bytes").sha256
    request = pb.CreateModelVersionRequest(
        model_name="churn", artifact_sha256=sha256, run_id=run_id, create_model=True
    )

    # A LogBatch of the run, between its first lock (the run's row) and its last (the audit head).
    batch = HeldTransaction(pg_engine)
    batch.execute(select(RunRow.run_id).where(RunRow.run_id == run_id).with_for_update())
    registered: list[pb.ModelVersion] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            registered.append(registry.create_version(request, actor="job", keep_ended=True))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    try:
        assert batch.wait_for_waiter(lambda: not thread.is_alive()), "the registration did not lock the run"
        # The registration waits on the run's row: it must not hold the audit head meanwhile, which the
        # batch takes next (NOWAIT: held by the registration, this fails at once instead of waiting).
        probe = select(AuditHeadRow.seq).where(AuditHeadRow.id == HEAD_ROW_ID).with_for_update(nowait=True)
        with pg_engine.connect() as connection:
            try:
                connection.execute(probe)
            except OperationalError as exc:
                pytest.fail(f"the registration holds the audit head while it waits on the run: {exc}")
            finally:
                connection.rollback()
    finally:
        batch.commit()
        thread.join(timeout=60)
    assert not thread.is_alive() and not errors, errors
    assert registered[0].version == 1 and registered[0].run_id == run_id


def test_a_version_deleted_while_its_review_commits_is_audited_as_it_was_deleted(
    pg_engine: Engine, tmp_path: Path
) -> None:
    """A delete read the version without locking it and wrote its audit entry's ``before`` from that
    read: racing an approval on PostgreSQL, it read the version pending, waited on the approval's row
    lock to delete it, and its entry said a pending version was deleted, right after the entry saying it
    was approved. The delete now locks the version's row before reading it (as the review does)."""
    sessions = create_session_factory(pg_engine)
    registry = ModelRegistry(sessions, store_for(tmp_path))
    sha256 = registry.artifacts.put_bytes(b"onnx bytes").sha256
    registry.create_version(
        pb.CreateModelVersionRequest(model_name="churn", artifact_sha256=sha256, create_model=True), actor="t"
    )

    # An approval written by the registry's own review path, committed once the delete waits on it.
    review = HeldTransaction(pg_engine)
    with review.sessions()() as session:
        record_decision(session, "churn", 1, Approval.APPROVED, "holdout ok", actor="reviewer")
        session.commit()
    review.commit_once_blocked()
    try:
        registry.delete_version("churn", 1, actor="cleaner")
    finally:
        review.join()

    with pg_engine.connect() as connection:
        entries = connection.execute(
            select(AuditEntryRow.action, AuditEntryRow.before)
            .where(AuditEntryRow.object_id == "churn/1")
            .order_by(AuditEntryRow.seq)
        ).all()
    assert [action for action, _ in entries] == ["create", "approve", "delete"]
    approval = entries[-1].before["approval"]
    assert (approval.get("status"), approval.get("actor")) == ("APPROVED", "reviewer")
