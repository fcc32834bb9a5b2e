"""Run start and end times over real gRPC: a negative time is INVALID_ARGUMENT wherever a run gets one
(CreateRun, UpdateRun, a LogBatch start or end), and a run stored with a negative start before the check
can still be ended. A start of -2**63 + 5 made end - start overflow int64, so the run could never end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import text

from clients.aether.v1 import tracking_pb2 as pb
from clients.aether.v1.tracking_pb2_grpc import TrackingStub
from clients.time_bounds import EARLIEST_TIME_US, LATEST_TIME_US
from control_plane.db import create_db_engine
from tests.integration.tracking.conftest import ThreadedControlPlane

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@pytest.fixture
def stub(control_plane: ThreadedControlPlane) -> Iterator[TrackingStub]:
    with grpc.insecure_channel(control_plane.address) as channel:
        yield TrackingStub(channel)  # type: ignore[no-untyped-call]


def _refused(call: object, request: object, field: str, value: int) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)  # type: ignore[operator]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert f"{field} {value} is not a time" in str(raised.value.details())


def test_negative_start_and_end_times_are_invalid_arguments(stub: TrackingStub) -> None:
    experiment_id = stub.CreateExperiment(pb.CreateExperimentRequest(name="times")).experiment_id
    for start in (INT64_MIN + 5, -1):
        request = pb.CreateRunRequest(experiment_id=experiment_id, start_time_us=start)
        _refused(stub.CreateRun, request, "start_time_us", start)
    run = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id, start_time_us=1))
    assert run.start_time_us == 1
    ending = pb.UpdateRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FINISHED, end_time_us=INT64_MIN)
    _refused(stub.UpdateRun, ending, "end_time_us", INT64_MIN)
    assert stub.GetRun(pb.GetRunRequest(run_id=run.run_id)).status == pb.RUN_STATUS_RUNNING
    ending.end_time_us = LATEST_TIME_US
    ended = stub.UpdateRun(ending)
    assert (ended.status, ended.end_time_us, ended.duration_us) == (
        pb.RUN_STATUS_FINISHED,
        LATEST_TIME_US,
        LATEST_TIME_US - 1,
    )

    run_id = uuid.uuid4().hex
    run_start = pb.RunStart(experiment_id=experiment_id, start_time_us=INT64_MIN + 5)
    batch = pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run_id, start=run_start)])
    _refused(stub.LogBatch, batch, f"run {run_id!r}: start_time_us", INT64_MIN + 5)
    batch.runs[0].start.start_time_us = 0
    batch.runs[0].end.CopyFrom(pb.RunEnd(status=pb.RUN_STATUS_FINISHED, end_time_us=-5))
    _refused(stub.LogBatch, batch, f"run {run_id!r}: end_time_us", -5)
    batch.runs[0].end.end_time_us = 0
    stub.LogBatch(batch)
    logged = stub.GetRun(pb.GetRunRequest(run_id=run_id))
    assert logged.status == pb.RUN_STATUS_FINISHED and logged.duration_us >= 0


def _after_9999(call: object, request: object, field: str, value: int) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)  # type: ignore[operator]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert f"{field} {value} is after year 9999" in str(raised.value.details()), raised.value.details()


def test_times_after_year_9999_are_invalid_arguments(stub: TrackingStub) -> None:
    """A start of 2**63 - 1 (year 294247) was stored, and `aetherctl runs list` of its experiment and
    `runs get` of the run then died with a traceback: no date holds it. Refused, as ingestion refuses a
    window starting after 9999, for every time a run has: start, end and its metrics' timestamps."""
    experiment_id = stub.CreateExperiment(pb.CreateExperimentRequest(name="far")).experiment_id
    for start in (INT64_MAX, LATEST_TIME_US + 1):
        request = pb.CreateRunRequest(experiment_id=experiment_id, start_time_us=start)
        _after_9999(stub.CreateRun, request, "start_time_us", start)
    run = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id, start_time_us=LATEST_TIME_US - 5))
    assert run.start_time_us == LATEST_TIME_US - 5
    ending = pb.UpdateRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FINISHED, end_time_us=INT64_MAX)
    _after_9999(stub.UpdateRun, ending, "end_time_us", INT64_MAX)
    assert stub.GetRun(pb.GetRunRequest(run_id=run.run_id)).status == pb.RUN_STATUS_RUNNING

    run_id = uuid.uuid4().hex
    run_start = pb.RunStart(experiment_id=experiment_id, start_time_us=LATEST_TIME_US + 1)
    batch = pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run_id, start=run_start)])
    _after_9999(stub.LogBatch, batch, f"run {run_id!r}: start_time_us", LATEST_TIME_US + 1)
    batch.runs[0].start.start_time_us = 0
    batch.runs[0].end.CopyFrom(pb.RunEnd(status=pb.RUN_STATUS_FINISHED, end_time_us=INT64_MAX))
    _after_9999(stub.LogBatch, batch, f"run {run_id!r}: end_time_us", INT64_MAX)
    batch.runs[0].ClearField("end")
    for stamp in (INT64_MAX, LATEST_TIME_US + 1, EARLIEST_TIME_US - 1, INT64_MIN):
        batch.runs[0].ClearField("metrics")
        batch.runs[0].metrics.add(key="loss", values=[0.5, 0.4], steps=[1, 2], timestamps_us=[1, stamp])
        with pytest.raises(grpc.RpcError) as raised:
            stub.LogBatch(batch)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"metric 'loss' at step 2: timestamp_us {stamp} is outside years 1 to 9999" in str(
            raised.value.details()
        ), raised.value.details()
    batch.runs[0].ClearField("metrics")
    batch.runs[0].metrics.add(key="loss", values=[0.5, 0.4], steps=[1, 2], timestamps_us=[1, LATEST_TIME_US])
    stub.LogBatch(batch)
    assert stub.GetRun(pb.GetRunRequest(run_id=run_id)).status == pb.RUN_STATUS_RUNNING


def test_a_run_stored_with_a_negative_start_can_still_be_ended(stub: TrackingStub, db_url: str) -> None:
    experiment_id = stub.CreateExperiment(pb.CreateExperimentRequest(name="old-runs")).experiment_id
    run_id = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id)).run_id
    engine = create_db_engine(db_url)  # as a run created before start times were checked was stored
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE tracking_runs SET start_time_us = :start WHERE run_id = :run_id"),
                {"start": INT64_MIN + 5, "run_id": run_id},
            )
    finally:
        engine.dispose()
    ended = stub.UpdateRun(pb.UpdateRunRequest(run_id=run_id, status=pb.RUN_STATUS_FINISHED))
    assert (ended.status, ended.start_time_us, ended.duration_us) == (
        pb.RUN_STATUS_FINISHED,
        INT64_MIN + 5,
        INT64_MAX,
    )
    assert stub.GetRun(pb.GetRunRequest(run_id=run_id)).status == pb.RUN_STATUS_FINISHED


def test_a_run_never_ends_before_it_started(stub: TrackingStub) -> None:
    """UpdateRun and LogBatch stored an end time before the run's start (a negative duration in GetRun,
    ListRuns and `aetherctl runs list`); then they refused it, and with a LogBatch's RunEnd the points
    sent beside it, so a client whose clock stepped back (or is behind the clock that stamped the start)
    could never close its run. An end before the start is now taken as the server's clock, never before
    the start: ending a run always works, and its duration is never negative."""
    experiment_id = stub.CreateExperiment(pb.CreateExperimentRequest(name="ends")).experiment_id
    future = 2_000_000_000_000_000  # a start the client's clock put in 2033
    run = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id, start_time_us=future))
    early = pb.UpdateRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FINISHED, end_time_us=future - 1)
    # Ended "before" its start, which our clock puts before that start too: it ends as it starts.
    ended = stub.UpdateRun(early)
    assert (ended.status, ended.end_time_us, ended.duration_us) == (pb.RUN_STATUS_FINISHED, future, 0)
    # Ended "now" likewise.
    run = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id, start_time_us=future))
    ended = stub.UpdateRun(pb.UpdateRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_FINISHED))
    assert (ended.end_time_us, ended.duration_us) == (future, 0)
    # A start in the past and an end before it: the server's clock, after the start.
    run = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id, start_time_us=10_000_000))
    before = time.time_ns() // 1000
    early = pb.UpdateRunRequest(run_id=run.run_id, status=pb.RUN_STATUS_KILLED, end_time_us=5_000_000)
    ended = stub.UpdateRun(early)
    assert ended.status == pb.RUN_STATUS_KILLED
    assert before <= ended.end_time_us <= time.time_ns() // 1000
    assert ended.duration_us == ended.end_time_us - 10_000_000


def test_a_log_batch_end_before_the_start_ends_the_run_and_keeps_its_points(stub: TrackingStub) -> None:
    """The SDK's Run.close sends its clock as the end, behind the run's last points: a client clock that
    stepped back since the start made the server refuse the whole batch, and the run stayed RUNNING with
    its last points lost. Old clients still send their clock, so the server takes such an end as its own
    clock (never before the start) and writes everything else of the batch."""
    experiment_id = stub.CreateExperiment(pb.CreateExperimentRequest(name="stepped")).experiment_id
    now = time.time_ns() // 1000
    run_id = uuid.uuid4().hex
    start = pb.RunStart(experiment_id=experiment_id, start_time_us=now)
    stub.LogBatch(pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run_id, start=start)]))
    points = pb.MetricSeries(key="loss", values=[0.5, 0.25], steps=[1, 2])
    end = pb.RunEnd(status=pb.RUN_STATUS_FINISHED, end_time_us=now - 3_600_000_000)  # an hour back
    written = stub.LogBatch(pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run_id, metrics=[points], end=end)]))
    assert written.points_written == 2
    logged = stub.GetRun(pb.GetRunRequest(run_id=run_id))
    assert logged.status == pb.RUN_STATUS_FINISHED
    assert now <= logged.end_time_us <= time.time_ns() // 1000
    assert logged.duration_us == logged.end_time_us - now
    history = stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, key="loss"))
    assert list(history.values) == [0.5, 0.25]

    # Started and ended in one batch, the end before the start (a start in the future: the client's
    # clock is ahead of ours): it ends as it starts.
    run_id = uuid.uuid4().hex
    start = pb.RunStart(experiment_id=experiment_id, start_time_us=2_000_000_000_000_000)
    end = pb.RunEnd(status=pb.RUN_STATUS_FAILED, end_time_us=5_000_000)
    batch = pb.RunBatch(run_id=run_id, start=start, metrics=[points], end=end)
    assert stub.LogBatch(pb.LogBatchRequest(runs=[batch])).points_written == 2
    logged = stub.GetRun(pb.GetRunRequest(run_id=run_id))
    assert (logged.status, logged.end_time_us, logged.duration_us) == (
        pb.RUN_STATUS_FAILED,
        2_000_000_000_000_000,
        0,
    )
