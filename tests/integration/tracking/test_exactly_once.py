"""Retried ``LogBatch`` requests are written once: a request the server committed but whose answer was lost
is sent again by the SDK (at-least-once delivery), and its key (sender id, sequence) makes the repeat a
no-op. Through the real gRPC API on both backends: the same request twice, a stale copy after a newer
one, a failed request that does not use up its key, two attempts racing on PostgreSQL; and end to end, the
SDK behind a proxy that loses the first answer after the server committed it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, insert, select, text

from clients.aether.v1 import tracking_pb2 as pb
from clients.aether.v1 import tracking_pb2_grpc as pb_grpc
from clients.errors import AetherError
from clients.sdk.tracking import TrackingClient
from clients.sdk.tracking_shipper import MetricShipper
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.tracking.records import now_us
from control_plane.tracking.senders import RETENTION_US, BatchKey
from control_plane.tracking.store import TrackingStore
from control_plane.tracking.tables import LogSenderRow
from tests.integration.tracking.conftest import ThreadedControlPlane, settings_for
from tests.support.postgres_server import PostgresServer
from tests.support.tcp_proxy import AnswerLosingProxy

STEPS = 50


@pytest.fixture
def stub(control_plane: ThreadedControlPlane) -> Iterator[pb_grpc.TrackingStub]:
    with grpc.insecure_channel(control_plane.address) as channel:
        yield pb_grpc.TrackingStub(channel)  # type: ignore[no-untyped-call]


def _experiment(stub: pb_grpc.TrackingStub, name: str = "retries") -> str:
    experiment: pb.Experiment = stub.CreateExperiment(pb.CreateExperimentRequest(name=name))
    return experiment.experiment_id


def _run_id(n: int) -> str:
    return f"{n:032x}"


def _request(
    experiment_id: str, run_id: str, first_step: int = 0, *, start: bool = True, end: bool = True
) -> pb.LogBatchRequest:
    """A request that starts a run, logs ``STEPS`` points of two metrics, a parameter and a tag, and
    ends it: everything a LogBatch writes."""
    steps = list(range(first_step, first_step + STEPS))
    batch = pb.RunBatch(
        run_id=run_id,
        metrics=[
            pb.MetricSeries(key="loss", values=[1.0 / (s + 1) for s in steps], steps=steps),
            pb.MetricSeries(key="acc", values=[s / 100 for s in steps], steps=steps),
        ],
        params={"lr": "0.01"},
        tags={"attempt": "first"},
    )
    if start:
        batch.start.CopyFrom(pb.RunStart(experiment_id=experiment_id, name="r"))
    if end:
        batch.end.CopyFrom(pb.RunEnd(status=pb.RUN_STATUS_FINISHED))
    return pb.LogBatchRequest(runs=[batch])


def _keyed(request: pb.LogBatchRequest, sender_id: str, sequence: int) -> pb.LogBatchRequest:
    keyed = pb.LogBatchRequest()
    keyed.CopyFrom(request)
    keyed.key.CopyFrom(pb.LogBatchKey(sender_id=sender_id, sequence=sequence))
    return keyed


def _steps(stub: pb_grpc.TrackingStub, run_id: str, key: str = "loss") -> list[int]:
    series: pb.MetricSeries = stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, key=key))
    return list(series.steps)


def _counts(stub: pb_grpc.TrackingStub, run_id: str) -> dict[str, int]:
    run: pb.Run = stub.GetRun(pb.GetRunRequest(run_id=run_id))
    return {summary.key: summary.count for summary in run.metrics}


# The same request twice through the real API ---------------------------------------------------------------


def test_a_keyed_request_sent_again_is_answered_as_applied_and_written_once(
    stub: pb_grpc.TrackingStub,
) -> None:
    experiment_id, run_id = _experiment(stub), _run_id(1)
    request = _keyed(_request(experiment_id, run_id), "sdk-a", 1)
    first: pb.LogBatchResponse = stub.LogBatch(request)
    assert (first.points_written, first.already_applied) == (2 * STEPS, False)
    again: pb.LogBatchResponse = stub.LogBatch(request)  # the retry of a call whose answer was lost
    assert (again.points_written, again.already_applied) == (0, True)
    assert _steps(stub, run_id) == list(range(STEPS))
    assert _steps(stub, run_id, "acc") == list(range(STEPS))
    assert _counts(stub, run_id) == {"acc": STEPS, "loss": STEPS}
    # The next request of the sender, and the same sequence from another sender, are written.
    more = stub.LogBatch(_keyed(_request(experiment_id, run_id, STEPS, start=False), "sdk-a", 2))
    other = stub.LogBatch(_keyed(_request(experiment_id, run_id, 2 * STEPS, start=False), "sdk-b", 1))
    assert (more.points_written, other.points_written) == (2 * STEPS, 2 * STEPS)
    assert _steps(stub, run_id) == list(range(3 * STEPS))


def test_requests_without_a_key_are_written_every_time_as_before(stub: pb_grpc.TrackingStub) -> None:
    """Older clients send no key: nothing changes for them (a retry of theirs is written again)."""
    experiment_id, run_id = _experiment(stub), _run_id(2)
    request = _request(experiment_id, run_id)
    for _ in range(2):
        response: pb.LogBatchResponse = stub.LogBatch(request)
        assert (response.points_written, response.already_applied) == (2 * STEPS, False)
    assert _counts(stub, run_id) == {"acc": 2 * STEPS, "loss": 2 * STEPS}


def test_a_stale_copy_of_an_older_request_is_not_written_after_a_newer_one(
    stub: pb_grpc.TrackingStub,
) -> None:
    """A copy of request 1 that a connection held until after request 2 was applied."""
    experiment_id, run_id = _experiment(stub), _run_id(3)
    first = _keyed(_request(experiment_id, run_id, end=False), "sdk", 1)
    stub.LogBatch(first)
    stub.LogBatch(_keyed(_request(experiment_id, run_id, STEPS, start=False), "sdk", 2))
    late: pb.LogBatchResponse = stub.LogBatch(first)
    assert late.already_applied
    assert _steps(stub, run_id) == list(range(2 * STEPS))


def test_a_request_that_fails_does_not_use_up_its_key(stub: pb_grpc.TrackingStub) -> None:
    """The key is recorded in the transaction that writes the points: a request that fails writes
    neither, and its retry, once it can succeed, is written."""
    experiment_id, run_id = _experiment(stub), _run_id(4)
    points = _keyed(_request(experiment_id, run_id, start=False), "sdk-points", 1)
    with pytest.raises(grpc.RpcError) as refused:
        stub.LogBatch(points)  # the run does not exist yet
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    start = pb.LogBatchRequest(
        runs=[pb.RunBatch(run_id=run_id, start=pb.RunStart(experiment_id=experiment_id))]
    )
    stub.LogBatch(_keyed(start, "sdk-starts", 1))
    response: pb.LogBatchResponse = stub.LogBatch(points)
    assert (response.points_written, response.already_applied) == (2 * STEPS, False)
    assert _counts(stub, run_id) == {"acc": STEPS, "loss": STEPS}


@pytest.mark.parametrize(
    ("sender_id", "sequence", "message"),
    [
        ("", 1, "sender_id"),
        ("x" * 65, 1, "sender_id"),
        ("bad id", 1, "sender_id"),
        ("x" * 64 + "\n", 1, "sender_id"),  # 65 characters; a '$' in the pattern let the newline by
        ("sdk\n", 1, "sender_id"),
        ("sdk", 0, "sequence must be at least 1"),
        ("sdk", -5, "sequence must be at least 1"),
    ],
)
def test_malformed_keys_are_invalid_arguments(
    stub: pb_grpc.TrackingStub, sender_id: str, sequence: int, message: str
) -> None:
    experiment_id = _experiment(stub)
    with pytest.raises(grpc.RpcError) as refused:
        stub.LogBatch(_keyed(_request(experiment_id, _run_id(5)), sender_id, sequence))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError):
        stub.GetRun(pb.GetRunRequest(run_id=_run_id(5)))  # nothing was written


# Two attempts at once (the client timed out while the server was still writing) ---------------------------


def test_two_attempts_racing_on_postgresql_write_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Both attempts of a new sender's first request reach the server while neither has committed: the
    second waits for the first (on the sender's row) and then finds it applied. SQLite has one writer at
    a time, so there the attempts cannot overlap."""
    url = postgres_server.fresh_url()
    server = ThreadedControlPlane(settings_for(tmp_path / "home", url))
    engine = create_db_engine(url)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.TrackingStub(channel)  # type: ignore[no-untyped-call]
            experiment_id, run_id = _experiment(stub), _run_id(6)
            request = _keyed(_request(experiment_id, run_id), "racing-sender", 1)
            with engine.connect() as holder:
                # An uncommitted row for the sender holds both attempts at their claim; rolled back, it
                # leaves them racing to insert the same new row.
                holder.execute(
                    text(
                        "INSERT INTO tracking_log_senders (sender_id, sequence, first_seen_us, applied_at_us)"
                        " VALUES ('racing-sender', 0, 0, 0)"
                    )
                )
                calls = [stub.LogBatch.future(request) for _ in range(2)]
                _wait_for(lambda: _waiting_on_locks(engine) >= 2, "both attempts waiting at their claim")
                holder.rollback()
            responses: list[pb.LogBatchResponse] = [call.result(timeout=30) for call in calls]
            assert sorted(r.already_applied for r in responses) == [False, True]
            assert sum(r.points_written for r in responses) == 2 * STEPS
            assert _steps(stub, run_id) == list(range(STEPS))
            assert _counts(stub, run_id) == {"acc": STEPS, "loss": STEPS}
    finally:
        engine.dispose()
        server.stop()


def _waiting_on_locks(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%tracking_log_senders%'"
                )
            ).scalar_one()
        )


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# End to end: the SDK, and an answer lost on the network after the commit ---------------------------------


def test_a_batch_whose_answer_is_lost_after_the_commit_is_stored_once(
    control_plane: ThreadedControlPlane, stub: pb_grpc.TrackingStub
) -> None:
    proxy = AnswerLosingProxy(control_plane.address)
    try:
        with TrackingClient(proxy.address, flush_interval_s=60, close_timeout_s=30) as client:
            runs = [client.start_run("lost-answers", f"r{i}", params={"i": i}) for i in range(2)]
            proxy.hold_answers()  # the next call (the batch below) reaches the server, its answer does not
            for step in range(STEPS):
                for i, run in enumerate(runs):
                    assert run.log_metrics({"loss": 1.0 / (step + 1), "acc": step + i}, step=step)
            for run in runs:
                run.close(wait=False)
            flushed: list[bool] = []
            flusher = threading.Thread(target=lambda: flushed.append(client.flush(timeout=30)))
            flusher.start()
            # Asked directly (not through the proxy): the batch, the runs' ends included, is committed.
            _wait_for(lambda: all(_finished(stub, run.run_id) for run in runs), "the batch to be committed")
            assert proxy.swallowed_bytes > 0
            proxy.cut()  # the answer is lost: the SDK sees the call fail and sends the batch again
            flusher.join(timeout=40)
            assert flushed == [True]
            assert isinstance(client.last_error, AetherError)
            assert client.last_error.code == grpc.StatusCode.UNAVAILABLE  # the retry really happened
            assert proxy.connections >= 2
            assert (client.shipped_points, client.dropped_points) == (2 * 2 * STEPS, 0)
        for run in runs:
            assert _steps(stub, run.run_id) == list(range(STEPS))
            assert _steps(stub, run.run_id, "acc") == list(range(STEPS))
            assert _counts(stub, run.run_id) == {"acc": STEPS, "loss": STEPS}
    finally:
        proxy.close()


def _finished(stub: pb_grpc.TrackingStub, run_id: str) -> bool:
    try:
        run: pb.Run = stub.GetRun(pb.GetRunRequest(run_id=run_id))
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:  # not committed yet
            return False
        raise
    return run.status == pb.RUN_STATUS_FINISHED


def test_the_shipper_keys_each_request_and_each_part_of_a_split_one(
    control_plane: ThreadedControlPlane, stub: pb_grpc.TrackingStub
) -> None:
    """One sender id per shipper; sequence numbers 1, 2, 3... in sending order, a split request's parts
    each with their own (were they to share one, the server would drop all parts but the first)."""
    sent: list[tuple[str, int]] = []

    def send(request: pb.LogBatchRequest, timeout: float | None) -> object:
        sent.append((request.key.sender_id, request.key.sequence))
        return stub.LogBatch(request, timeout=timeout or 30)

    experiment_id = _experiment(stub, "keys")
    shipper = MetricShipper(send, interval_s=60, max_request_bytes=4096)
    other = MetricShipper(send, interval_s=60)
    try:
        run_id = _run_id(7)
        shipper.add(run_id, start=pb.RunStart(experiment_id=experiment_id, name="split"))
        for step in range(200):  # ~17 kB of points: several parts of at most 4 kB
            shipper.add_points(run_id, step, 1_000 + step, {"loss": step / 3, "acc": step / 7})
        assert shipper.flush(timeout=30)
        assert shipper.dropped_points == 0 and shipper.last_error is None
        assert len(sent) > 2
        assert {sender for sender, _ in sent} == {shipper.sender_id}
        assert [sequence for _, sequence in sent] == list(range(1, len(sent) + 1))
        assert _steps(stub, run_id) == list(range(200))
        assert other.sender_id != shipper.sender_id
    finally:
        shipper.close(timeout=10)
        other.close(timeout=10)


# What the server keeps -----------------------------------------------------------------------------------


def test_the_server_keeps_one_row_per_sender_and_forgets_idle_senders(db_url: str) -> None:
    """Keys cost one row per sender, however many requests it sends; a new sender deletes the senders
    that applied nothing within the retention (rows never outgrow the recently active clients)."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    try:
        store = TrackingStore(create_session_factory(engine))
        experiment_id = store.create_experiment("senders", actor="t").experiment_id
        batches = list(_request(experiment_id, _run_id(8), end=False).runs)
        for sequence in range(1, 6):
            store.log_batch(batches, actor="t", key=BatchKey("busy", sequence))
        idle_at = now_us() - RETENTION_US - 1
        with engine.begin() as connection:
            connection.execute(
                insert(LogSenderRow),
                [
                    {"sender_id": "idle", "sequence": 9, "first_seen_us": idle_at, "applied_at_us": idle_at},
                    {"sender_id": "quiet", "sequence": 3, "first_seen_us": 1, "applied_at_us": now_us()},
                ],
            )
        store.log_batch(batches, actor="t", key=BatchKey("busy", 6))  # a known sender prunes nothing
        assert _senders(engine) == {"busy": 6, "idle": 9, "quiet": 3}
        store.log_batch(batches, actor="t", key=BatchKey("new", 1))
        assert _senders(engine) == {"busy": 6, "new": 1, "quiet": 3}
        # A forgotten sender's next request is applied as a new sender's.
        assert store.log_batch(batches, actor="t", key=BatchKey("idle", 10)) == 2 * STEPS
    finally:
        engine.dispose()


def _senders(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(LogSenderRow.sender_id, LogSenderRow.sequence))
        return {row.sender_id: row.sequence for row in rows}
