"""A control plane stopping while a batch run is in flight answers the run's caller with the truth: the
run stops at its next chunk boundary and the call says what it stored, with a status clients do not
retry (``control_plane/ingestion/draining.py``)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import ingestion_pb2
from clients.aether.v1.ingestion_pb2_grpc import IngestionStub
from control_plane.api.ingestion import add_to_server
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import read_session
from control_plane.ingestion import parquet_source, service
from control_plane.ingestion.tables import IngestionRunRow
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.integration.ingestion.conftest import CLIMATE, ENTITY

CHUNKS = 40  # far more than a 2 s grace stores: the run outlasted it
ROWS = CHUNKS * parquet_source.PARQUET_BATCH_ROWS


def big_source(path: Path, invalid_rows: int = 0) -> Path:
    """``ROWS`` rows of ``climate``: ``CHUNKS`` chunks of a run, valid but for the first
    ``invalid_rows`` (a mode the view does not allow: quarantined)."""
    now = datetime.now(UTC) - timedelta(hours=1)
    mode = np.full(ROWS, 1, dtype=np.int32)
    mode[:invalid_rows] = 9
    pq.write_table(
        pa.table(
            {
                "sensor_id": pa.array(np.arange(ROWS) % 1000, pa.int64()),
                "event_ts": pa.array([now] * ROWS, pa.timestamp("us", "UTC")),
                "temperature_c": pa.array(np.full(ROWS, 20.0), pa.float32()),
                "mode": pa.array(mode, pa.int32()),
            }
        ),
        path,
    )
    return path


def stopping_after_first_chunk(address: str) -> Iterator[pa.Table]:
    """The file's chunks, its second one only once the control plane reports NOT_SERVING (its stop has
    begun): a source slow enough that the run is in progress when the stop begins, whatever the load."""
    real = service.parquet_batches

    def chunks(path: str, batch_rows: int = parquet_source.PARQUET_BATCH_ROWS) -> Iterator[pa.Table]:
        for number, chunk in enumerate(real(path, batch_rows)):
            if number == 1:
                wait_for_not_serving(address)
            yield chunk

    return chunks  # type: ignore[return-value]


def wait_for_not_serving(address: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        while time.monotonic() < deadline:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5.0).status
            except grpc.RpcError:
                return  # no longer listening: stopping too
            if status != health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.02)  # polls observable state; the bound is the deadline
    raise AssertionError(f"the control plane at {address} never began to stop")


async def stopped_during_its_run(control_plane: ControlPlaneServer, source: Path) -> grpc.RpcError:
    """Materializes ``source`` and stops the control plane once the run counted its first chunk (its row
    in the database: observable progress); the call's error."""
    channel = grpc.insecure_channel(control_plane.address)
    stub = IngestionStub(channel)  # type: ignore[no-untyped-call]
    request = ingestion_pb2.MaterializeRequest(
        header=ingestion_pb2.IngestHeader(view="climate"), source_uri=str(source)
    )
    call = asyncio.ensure_future(asyncio.to_thread(stub.Materialize, request, timeout=120.0))
    try:
        deadline = time.monotonic() + 60.0
        while not await asyncio.to_thread(counted_runs, control_plane):
            assert time.monotonic() < deadline, "the run never counted its first chunk"
            assert not call.done(), call
            await asyncio.sleep(0.02)
        await control_plane.stop()
        with pytest.raises(grpc.RpcError) as stopped:
            await call
    finally:
        channel.close()
    return stopped.value


async def test_a_stop_during_a_materialize_answers_what_the_run_stored_never_a_retryable_status(
    control_plane: ControlPlaneServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during `aetherctl materialize` cancelled the call after the 2 s grace: the client got
    UNAVAILABLE ("Cancelling all calls"), which it retries, while the run's thread went on to store and
    count every row (and audit it finished); the retry stored them all again. The run now stops at its
    next chunk boundary and the call answers FAILED_PRECONDITION naming the run and what it stored."""
    source = big_source(tmp_path / "big.parquet")
    monkeypatch.setattr(service, "parquet_batches", stopping_after_first_chunk(control_plane.address))
    stopped = await stopped_during_its_run(control_plane, source)
    details = stopped.details()
    assert stopped.code() == grpc.StatusCode.FAILED_PRECONDITION, details
    assert "the control plane is shutting down" in details
    (run,) = counted_runs(control_plane)
    run_id, records_in, accepted = run
    assert f"run {run_id}" in details
    assert 0 < accepted == records_in < ROWS
    assert f"counted {records_in} records ({accepted} accepted" in details
    assert re.search(rf"after the first {records_in} rows of its source", details), details
    assert "do not ingest them again" in details
    # The run ended with the call: it never went on to finish.
    assert counted_runs(control_plane) == [run]
    with read_session(control_plane.context.sessions) as session:
        actions = [row.action for row in session.query(AuditEntryRow).all()]
    assert "ingestion.batch.finished" not in actions


async def test_a_stop_after_a_run_quarantined_a_whole_chunk_answers_what_it_counted_not_retryable(
    control_plane: ControlPlaneServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose first chunk was all quarantined, stopped before its second, was told it "stopped
    before it stored any row; ingest the source again", UNAVAILABLE, while its run row counted the chunk
    (65536 in, 65536 quarantined): a retry quarantined those rows again under a new run. It now answers
    FAILED_PRECONDITION naming the run and its counts, which equal the run's row."""
    rows = parquet_source.PARQUET_BATCH_ROWS
    source = big_source(tmp_path / "big.parquet", invalid_rows=rows)
    monkeypatch.setattr(service, "parquet_batches", stopping_after_first_chunk(control_plane.address))
    stopped = await stopped_during_its_run(control_plane, source)
    details = stopped.details()
    assert stopped.code() == grpc.StatusCode.FAILED_PRECONDITION, details
    with read_session(control_plane.context.sessions) as session:
        (row,) = session.query(IngestionRunRow).all()
        counts = (row.run_id, row.records_in, row.accepted, row.quarantined)
    assert counts[1:] == (rows, 0, rows), counts
    assert (
        f"run {counts[0]} stopped after the first {rows} rows of its source, having counted {rows} records"
        f" (0 accepted, {rows} quarantined)"
    ) in details, details
    assert "stored no row" not in details and "ingest the source again" not in details


async def test_a_run_that_does_not_stop_within_the_drain_is_answered_as_unfinished_not_retryable(
    tmp_path: Path, db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stuck past the drain (here its source's second chunk never comes until the call answered)
    is answered by the stop itself, before gRPC's grace cancels the call: FAILED_PRECONDITION naming
    the run and what it had counted, since it may store one more chunk."""
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=db_url, redis_url=redis_url, listen_addr="127.0.0.1:0", shutdown_drain_s=0.2
    )
    server = await start_server(settings, services=[add_to_server])
    server.registry.create_entity(ENTITY)
    server.registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
    source = big_source(tmp_path / "big.parquet")
    release = threading.Event()
    real = service.parquet_batches

    def stuck(path: str, batch_rows: int = parquet_source.PARQUET_BATCH_ROWS) -> Iterator[pa.Table]:
        for number, chunk in enumerate(real(path, batch_rows)):
            if number == 1:
                release.wait(60.0)
            yield chunk

    monkeypatch.setattr(service, "parquet_batches", stuck)
    channel = grpc.insecure_channel(server.address)
    stub = IngestionStub(channel)  # type: ignore[no-untyped-call]
    request = ingestion_pb2.MaterializeRequest(
        header=ingestion_pb2.IngestHeader(view="climate"), source_uri=str(source)
    )
    call = asyncio.ensure_future(asyncio.to_thread(stub.Materialize, request, timeout=120.0))
    try:
        deadline = time.monotonic() + 60.0
        while not await asyncio.to_thread(counted_runs, server):
            assert time.monotonic() < deadline, "the run never counted its first chunk"
            await asyncio.sleep(0.02)
        await server.stop()
        with pytest.raises(grpc.RpcError) as stopped:
            await call
    finally:
        release.set()
        channel.close()
    details = stopped.value.details()
    assert stopped.value.code() == grpc.StatusCode.FAILED_PRECONDITION, details
    (run,) = counted_runs(server)
    run_id, records_in, accepted = run
    # Every row is valid and inside the window: the row the operator resumes from is the count. It named
    # row 0, the row the run had reached when its first chunk began, while the counts were the chunk's.
    assert details.startswith(
        f"the control plane is shutting down and run {run_id} did not stop within 0.2s"
        f" (AETHER_CONTROL_PLANE_DRAIN_S): it had stored and counted {records_in} records"
        f" ({accepted} accepted, 0 quarantined) before row {records_in} of its source"
    ), details


def counted_runs(server: ControlPlaneServer) -> list[tuple[str, int, int]]:
    with read_session(server.context.sessions) as session:
        return [
            (row.run_id, row.records_in, row.accepted)
            for row in session.query(IngestionRunRow).all()
            if row.records_in
        ]
