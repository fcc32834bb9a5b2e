"""Which status changes UpdateRun makes, and that it agrees with LogBatch's RunEnd: a run may be ended,
and an ended run's verdict changed to another end (FINISHED to FAILED, as a RunEnd of an ended run may),
but an ended run is never reopened. UpdateRun(RUNNING) of a FINISHED run was taken: the run was RUNNING
again, its end time and duration gone, while a RunEnd(RUNNING) was refused."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from clients.aether.v1 import tracking_pb2 as pb
from clients.aether.v1 import tracking_pb2_grpc as pb_grpc
from clients.errors import FailedPrecondition
from clients.sdk.tracking import TrackingClient
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory, read_session, upgrade_to_head
from control_plane.tracking.store import TrackingStore
from tests.integration.tracking.conftest import ThreadedControlPlane

ENDED = [
    ("FINISHED", pb.RUN_STATUS_FINISHED),
    ("FAILED", pb.RUN_STATUS_FAILED),
    ("KILLED", pb.RUN_STATUS_KILLED),
]


@pytest.mark.parametrize(("name", "ended"), ENDED)
def test_an_ended_run_is_not_reopened(
    control_plane: ThreadedControlPlane, client: TrackingClient, name: str, ended: pb.RunStatus
) -> None:
    experiment = client.create_experiment(f"reopen-{name.lower()}")
    run = client.create_run(experiment.experiment_id)
    done = client.update_run(run.run_id, name)
    assert done.status == ended and done.end_time_us > 0

    with pytest.raises(FailedPrecondition) as refused:
        client.update_run(run.run_id, "RUNNING")
    assert str(refused.value) == (
        f"run {run.run_id!r} has ended {name}: an ended run cannot be set RUNNING again; nothing was changed"
    )
    # Over the wire as any client sees it, not only through the SDK.
    with grpc.insecure_channel(control_plane.address) as channel:
        stub = pb_grpc.TrackingStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as raw:
            stub.UpdateRun(pb.UpdateRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_RUNNING))
    assert raw.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    after = client.get_run(run.run_id)
    assert (after.status, after.end_time_us, after.duration_us) == (ended, done.end_time_us, done.duration_us)


def test_a_running_run_set_running_and_an_ended_run_given_another_end_are_taken(
    client: TrackingClient,
) -> None:
    """The changes UpdateRun kept: RUNNING to RUNNING changes nothing, and an ended run may be given
    another end, as a LogBatch RunEnd of an ended run may (its verdict corrected: FINISHED to FAILED)."""
    experiment = client.create_experiment("status-changes")
    run = client.create_run(experiment.experiment_id)
    still = client.update_run(run.run_id, "RUNNING")
    assert (still.status, still.end_time_us) == (pb.RUN_STATUS_RUNNING, 0)
    assert client.update_run(run.run_id, "FINISHED").status == pb.RUN_STATUS_FINISHED
    corrected = client.update_run(run.run_id, "FAILED")
    assert corrected.status == pb.RUN_STATUS_FAILED and corrected.end_time_us > 0

    ended_again = pb.RunBatch(run_id=run.run_id, end=pb.RunEnd(status=pb.RUN_STATUS_KILLED))
    client.log_batch(pb.LogBatchRequest(runs=[ended_again]))
    assert client.get_run(run.run_id).status == pb.RUN_STATUS_KILLED


def test_an_update_that_changes_nothing_writes_no_audit_entry(db_url: str) -> None:
    """The audit log records mutations: UpdateRun of a RUNNING run to RUNNING (a client re-sending its
    state, or a heartbeat) wrote an entry whose before and after were the same, so the log of a run's
    changes filled with no-ops. A real change is still recorded, and so is another end of an ended run."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    store = TrackingStore(sessions)
    run_id = store.create_run(store.create_experiment("e", actor="t").experiment_id, "r", actor="t").run_id
    for _ in range(3):
        assert store.update_run(run_id, pb.RUN_STATUS_RUNNING, actor="t").status == pb.RUN_STATUS_RUNNING
    store.update_run(run_id, pb.RUN_STATUS_FINISHED, actor="t")
    store.update_run(run_id, pb.RUN_STATUS_FAILED, actor="t")
    with read_session(sessions) as session:
        updates = session.scalars(
            select(AuditEntryRow.after)
            .where(AuditEntryRow.object_id == run_id, AuditEntryRow.action == "update")
            .order_by(AuditEntryRow.seq)
        ).all()
    assert [entry["status"] for entry in updates] == ["FINISHED", "FAILED"]
    engine.dispose()
