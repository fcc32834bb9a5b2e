"""Batch materialization and the quarantine over gRPC, with a real control plane, Redis and offline store:
ingest -> counts invariant -> list/show -> replay with corrections -> online and offline hold the rows."""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import ingestion_pb2
from clients.aether.v1.ingestion_pb2_grpc import IngestionStub
from clients.errors import FailedPrecondition, InvalidArgument, Unavailable
from clients.sdk.ingestion import DEFAULT_CHUNK_BYTES, IngestionClient, ipc_chunks
from control_plane.api.ingestion import add_to_server
from control_plane.api.offline_features import offline_root
from control_plane.cli.ingestion import register
from control_plane.cli.main import main as aetherctl
from control_plane.db import create_db_engine, create_session_factory, pages, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.online import online_view_version
from control_plane.ingestion.quarantine import RunCounts
from control_plane.ingestion.service import IngestionService
from control_plane.offline.store import OfflineStore
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from kernels.online_keys import online_key
from kernels.packed_blob import decode
from tests.integration.ingestion.conftest import CLIMATE, ENTITY
from tests.integration.ingestion.pausing_redis import PausingRedis
from tests.support.redis_server import RedisServer

NOW = datetime.now(UTC).replace(microsecond=0)
REPO_ROOT = Path(__file__).resolve().parents[3]


def readings() -> pa.Table:
    return pa.table(
        {
            "sensor_id": [1, 2, 3, 1, 4],
            "event_ts": [NOW - timedelta(minutes=m) for m in (5, 5, 5, 1, 5)],
            "temperature_c": [20.0, 75.2, 18.0, 21.5, 19.0],
            "mode": [1, 2, 9, 3, 2],
        }
    )


def cli(server: ControlPlaneServer, *argv: str) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control-plane", default=server.address)
    parser.add_argument("--timeout", type=float, default=30.0)
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    assert args.handler(args, out) == 0
    return out.getvalue()


async def test_ingest_quarantine_replay_end_to_end(
    control_plane: ControlPlaneServer, redis_url: str, tmp_path: Path
) -> None:
    client = IngestionClient(control_plane.address)
    response = await asyncio.to_thread(client.ingest, "climate", readings(), source="readings")
    assert (response.records_in, response.accepted, response.quarantined) == (5, 3, 2)
    runs = await asyncio.to_thread(client.list_runs, "climate")
    assert [(r.records_in, r.accepted, r.quarantined) for r in runs] == [(5, 3, 2)]

    # Online: the latest value per entity, under the registry's fingerprint.
    view = control_plane.registry.get_feature_view("climate")
    online = online_view_version(view)
    r = redis.Redis.from_url(redis_url)
    blob = r.get(online_key("sensor", ["1"], "climate", 1))
    assert isinstance(blob, bytes)
    decoded = decode(blob, online.layout, view.schema_fingerprint, len(online.columns))
    assert decoded.values[0][0] == pytest.approx(21.5)  # record fields are f0, f1... in feature order
    assert r.get(online_key("sensor", ["2"], "climate", 1)) is None
    # Offline: every accepted row.
    offline = OfflineStore(str(tmp_path / "offline"))
    assert sum(b.num_rows for b in offline.scan("climate", 1)) == 3

    listed = await asyncio.to_thread(client.list_quarantined, view="climate", reason_contains="above max")
    assert [json.loads(x.payload_json)["sensor_id"] for x in listed] == [2]
    text = await asyncio.to_thread(cli, control_plane, "quarantine", "list", "--view", "climate")
    assert "temperature_c: 75.2 above max 60" in text and "mode: 9 not in allowed values" in text
    shown = await asyncio.to_thread(cli, control_plane, "quarantine", "show", str(listed[0].id))
    assert "75.2" in shown

    # Replay: sensor 2 corrected (still bad: a new reason), sensor 3 corrected (passes).
    records = {
        json.loads(x.payload_json)["sensor_id"]: x for x in await asyncio.to_thread(client.list_quarantined)
    }
    fixed_3 = json.loads(records[3].payload_json) | {"mode": 2}
    still_2 = json.loads(records[2].payload_json) | {"temperature_c": 65.0}
    corrections = tmp_path / "corrected.jsonl"
    corrections.write_text(
        json.dumps({"id": records[3].id, "payload": fixed_3})
        + "\n"
        + json.dumps({"id": records[2].id, "payload": still_2})
        + "\n"
    )
    text = await asyncio.to_thread(
        cli,
        control_plane,
        "quarantine",
        "replay",
        str(records[2].id),
        str(records[3].id),
        "--file",
        str(corrections),
    )
    assert "replayed: 1" in text and "temperature_c: 65 above max 60" in text
    assert r.get(online_key("sensor", ["3"], "climate", 1)) is not None
    assert sum(b.num_rows for b in offline.scan("climate", 1)) == 4
    remaining = await asyncio.to_thread(client.list_quarantined)
    assert [x.id for x in remaining] == [records[2].id] and "65 above max" in remaining[0].reason
    # --json was accepted and ignored here ("discarded: 1" as text).
    text = await asyncio.to_thread(
        cli, control_plane, "quarantine", "discard", str(records[2].id), "--json", "--yes"
    )
    assert json.loads(text) == {"discarded": 1}
    client.close()


async def test_materialize_parquet_window_and_strict_mode(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    path = tmp_path / "readings.parquet"
    table = readings()
    table = table.set_column(
        1,
        "event_ts",
        pa.array([NOW - timedelta(days=d) for d in (0, 0, 3, 0, 0)], pa.timestamp("us", tz="UTC")),
    )
    pq.write_table(table, path)
    start, end = (NOW - timedelta(days=1)).isoformat(), (NOW + timedelta(hours=1)).isoformat()
    text = await asyncio.to_thread(
        cli,
        control_plane,
        "materialize",
        "climate",
        "--start",
        start,
        "--end",
        end,
        "--source",
        str(path),
        "--json",
    )
    counts = json.loads(text)
    assert (int(counts["records_in"]), int(counts["accepted"]), int(counts["quarantined"])) == (4, 3, 1)
    assert int(counts["skipped_outside_window"]) == 1

    client = IngestionClient(control_plane.address)
    with pytest.raises(InvalidArgument, match=r"row 1: temperature_c: 75.2 above max 60"):
        await asyncio.to_thread(client.ingest, "climate", readings(), strict=True)
    assert len(await asyncio.to_thread(client.list_runs)) == 1  # the strict refusal wrote nothing
    client.close()


async def test_an_offline_store_that_refuses_the_write_is_failed_precondition_naming_it(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    """The view's folder in the offline store replaced by a file (a real fault): the write's
    NotADirectoryError was INTERNAL, logged as a bug. Now it is the store's error, FAILED_PRECONDITION
    naming the store and the OS error, with nothing stored or counted."""
    root = tmp_path / "offline"
    root.mkdir(exist_ok=True)
    (root / "climate").write_text("not a folder")
    client = IngestionClient(control_plane.address)
    try:
        refused = (
            rf"the offline store {root} could not write rows of feature view 'climate' version 1:"
            " NotADirectoryError"
        )
        with pytest.raises(FailedPrecondition, match=refused):
            await asyncio.to_thread(client.ingest, "climate", readings())
        assert await asyncio.to_thread(client.list_runs) == []
    finally:
        client.close()


async def test_a_cut_off_chunk_or_an_unreadable_file_is_invalid_argument_naming_it(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    """Arrow reports a cut-off IPC chunk, a truncated Parquet file and a directory as OSError, which
    only ArrowInvalid was caught for: INTERNAL instead of INVALID_ARGUMENT naming the chunk or file."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, readings().schema) as writer:
        writer.write_table(readings())
    data = sink.getvalue().to_pybytes()
    good = ingestion_pb2.IngestChunk(header=ingestion_pb2.IngestHeader(view="climate"), arrow_ipc=data)
    cut = ingestion_pb2.IngestChunk(arrow_ipc=data[: len(data) - 20])
    pq.write_table(readings(), tmp_path / "readings.parquet")
    raw = (tmp_path / "readings.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(raw[: len(raw) // 2] + raw[-8:])
    (tmp_path / "folder.parquet").mkdir()
    channel = grpc.insecure_channel(control_plane.address)
    stub = IngestionStub(channel)  # type: ignore[no-untyped-call]
    try:
        with pytest.raises(grpc.RpcError) as refused:
            await asyncio.to_thread(stub.IngestBatch, iter([good, cut]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("chunk 1: not a readable Arrow IPC stream")
        for name in ("cut.parquet", "folder.parquet"):
            request = ingestion_pb2.MaterializeRequest(
                header=ingestion_pb2.IngestHeader(view="climate"), source_uri=str(tmp_path / name)
            )
            with pytest.raises(grpc.RpcError) as refused:
                await asyncio.to_thread(stub.Materialize, request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details().startswith(f"cannot read Parquet source {str(tmp_path / name)!r}")
    finally:
        channel.close()
    assert control_plane.registry.get_feature_view("climate", 0).version == 1
    client = IngestionClient(control_plane.address)
    assert await asyncio.to_thread(client.list_runs) == []  # nothing was stored
    client.close()


def ipc_chunk(table: pa.Table, header: ingestion_pb2.IngestHeader) -> ingestion_pb2.IngestChunk:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return ingestion_pb2.IngestChunk(header=header, arrow_ipc=sink.getvalue().to_pybytes())


async def test_window_bounds_beyond_the_datetime_years_and_repeated_columns_are_not_internal_errors(
    control_plane: ControlPlaneServer,
) -> None:
    """An end_us of 2**62 or INT64_MAX ("no end") made datetime.fromtimestamp raise ValueError, and a
    table with a repeated column under a window raised KeyError looking up its timestamp before
    validation could name the repeat: both INTERNAL. An end after year 9999 or a start before year 1 is
    open now; a start after its end, a start after 9999 or an end before year 1 is INVALID_ARGUMENT."""
    channel = grpc.insecure_channel(control_plane.address)
    stub = IngestionStub(channel)  # type: ignore[no-untyped-call]

    def ingest(table: pa.Table, **bounds: int) -> ingestion_pb2.IngestResponse:
        header = ingestion_pb2.IngestHeader(view="climate", **bounds)
        response: ingestion_pb2.IngestResponse = stub.IngestBatch(iter([ipc_chunk(table, header)]))
        return response

    async def refused(table: pa.Table, details: str, **bounds: int) -> None:
        with pytest.raises(grpc.RpcError) as caught:
            await asyncio.to_thread(ingest, table, **bounds)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(details), caught.value.details()

    now_us = int(NOW.timestamp()) * 10**6
    try:
        for end in (2**62, 2**63 - 1):
            response = await asyncio.to_thread(ingest, readings(), start_us=-(2**62), end_us=end)
            assert (response.records_in, response.skipped_outside_window) == (5, 0)
        await refused(readings(), "the window's start", start_us=now_us, end_us=now_us - 1)
        await refused(
            readings(), "start_us: 4611686018427387904 µs since 1970 is after year 9999", start_us=2**62
        )
        await refused(
            readings(), "end_us: -4611686018427387904 µs since 1970 is before year 1", end_us=-(2**62)
        )
        table = readings()
        twice = table.append_column("event_ts", table.column("event_ts"))
        await refused(twice, "columns 'event_ts' appear more than once", start_us=now_us - 86_400 * 10**6)
    finally:
        channel.close()
    client = IngestionClient(control_plane.address)
    assert len(await asyncio.to_thread(client.list_runs)) == 2  # the refusals wrote nothing
    client.close()


async def test_run_end_encoded_columns_are_decoded_and_validated_like_plain_ones(
    control_plane: ControlPlaneServer,
) -> None:
    """A run-end-encoded column is legal Arrow IPC an IngestBatch may carry, but most Arrow kernels lack
    it: ``take`` (the rejected rows' copies) raised ArrowNotImplementedError, an INTERNAL error for the
    whole call. Its columns are decoded first, so its records are checked and counted as plain ones,
    under a window too (read from a run-end-encoded timestamp)."""

    def ree(*runs: tuple[int, object], arrow_type: pa.DataType) -> pa.Array:
        ends = list(itertools.accumulate(length for length, _value in runs))
        return pa.RunEndEncodedArray.from_arrays(ends, pa.array([value for _l, value in runs], arrow_type))

    table = pa.table(
        {
            "sensor_id": [1, 2, 3],
            "event_ts": ree((3, NOW - timedelta(minutes=1)), arrow_type=pa.timestamp("us", tz="UTC")),
            "temperature_c": ree((2, 21.5), (1, None), arrow_type=pa.float64()),
            "mode": ree((1, 1), (1, 9), (1, 2), arrow_type=pa.int64()),
        }
    )
    channel = grpc.insecure_channel(control_plane.address)
    stub = IngestionStub(channel)  # type: ignore[no-untyped-call]
    now_us = int(NOW.timestamp()) * 10**6
    try:
        for bounds in ({}, {"start_us": now_us - 3_600 * 10**6}):
            header = ingestion_pb2.IngestHeader(view="climate", **bounds)
            response = await asyncio.to_thread(stub.IngestBatch, iter([ipc_chunk(table, header)]))
            assert (response.records_in, response.accepted, response.quarantined) == (3, 2, 1)
    finally:
        channel.close()
    client = IngestionClient(control_plane.address)
    try:
        records = await asyncio.to_thread(client.list_quarantined, view="climate")
    finally:
        client.close()
    # The second run of the same source superseded the first one's copy of the record.
    assert [(json.loads(r.payload_json)["mode"], r.reason) for r in records] == [
        (9, "mode: 9 not in allowed values [1, 2, 3]")
    ]


async def test_the_null_fraction_rule_judges_the_whole_call_not_each_transport_piece(
    control_plane: ControlPlaneServer,
) -> None:
    """``IngestionClient.ingest`` cuts a table into IPC pieces (here 5,000 rows; 50,000 by default), and
    the server judged the null fraction per piece: a call with 1/6 nulls in temperature_c (whose rule
    allows 0.5), all in its last piece, had every null of that piece quarantined. Every piece is judged
    by the call's fraction: 1/6 accepts every null, and 7/12 (one piece at exactly 0.5, the other all
    nulls) quarantines every null, those of the piece at 0.5 too."""
    n = 6_000

    def table(null_rows: list[range]) -> pa.Table:
        nulls = {row for rows in null_rows for row in rows}
        return pa.table(
            {
                "sensor_id": pa.array(range(n), pa.int64()),
                "event_ts": pa.array([NOW - timedelta(minutes=1)] * n, pa.timestamp("us", tz="UTC")),
                "temperature_c": pa.array([None if i in nulls else 20.0 for i in range(n)], pa.float32()),
                "mode": pa.array([1] * n, pa.int32()),
            }
        )

    client = IngestionClient(control_plane.address)
    try:
        few = table([range(5_000, 6_000)])  # 1/6 of the call, all of its last piece
        assert len(list(ipc_chunks(few, 5_000, DEFAULT_CHUNK_BYTES))) == 2
        response = await asyncio.to_thread(client.ingest, "climate", few, chunk_rows=5_000)
        assert (response.records_in, response.accepted, response.quarantined) == (n, n, 0)

        many = table([range(2_500), range(5_000, 6_000)])  # 3,500 of 6,000: 0.583 > 0.5
        response = await asyncio.to_thread(client.ingest, "climate", many, chunk_rows=5_000)
        assert (response.records_in, response.accepted, response.quarantined) == (n, n - 3_500, 3_500)
        records = await asyncio.to_thread(client.list_quarantined, view="climate", limit=5_000)
    finally:
        client.close()
    assert len(records) == 3_500
    assert {record.reason for record in records} == {
        "temperature_c: null (null fraction 0.583 in batch exceeds max 0.5)"
    }


async def test_rows_wholly_outside_the_window_are_counted_as_skipped_not_an_internal_error(
    control_plane: ControlPlaneServer,
) -> None:
    """Every row before the window: the window filter leaves columns of no chunks, which validation
    refused (INTERNAL "Must pass at least one array"), after earlier chunks of the same call were stored."""
    client = IngestionClient(control_plane.address)
    old = readings().set_column(
        1, "event_ts", pa.array([NOW - timedelta(days=3)] * 5, pa.timestamp("us", tz="UTC"))
    )
    outcome = await asyncio.to_thread(
        client.ingest, "climate", old, start=NOW - timedelta(days=1), end=NOW + timedelta(hours=1)
    )
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (0, 0, 0)
    assert outcome.skipped_outside_window == 5
    client.close()


async def test_a_replay_of_records_another_replay_holds_is_failed_precondition_over_grpc_and_the_cli(
    control_plane: ControlPlaneServer, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """While one replay writes the records (stopped in its write by a pausing Redis client), a second
    one, through the control plane or ``aetherctl``, is refused with FAILED_PRECONDITION naming them."""
    client = IngestionClient(control_plane.address)
    await asyncio.to_thread(client.ingest, "climate", readings(), source="readings")
    records = await asyncio.to_thread(client.list_quarantined)
    ids = sorted(r.id for r in records)
    fixed = {
        r.id: json.dumps(json.loads(r.payload_json) | {"temperature_c": 20.0, "mode": 2}) for r in records
    }
    slow = PausingRedis.from_url(redis_url)
    offline = OfflineStore(offline_root(control_plane.context))
    holder = IngestionService(control_plane.context.sessions, control_plane.registry, offline, slow)
    failures: list[BaseException] = []

    def replay_first() -> None:
        try:
            holder.replay(ids, fixed)
        except BaseException as exc:
            failures.append(exc)
            slow.paused.set()

    first = threading.Thread(target=replay_first)
    first.start()
    try:
        assert await asyncio.to_thread(slow.paused.wait, 10)
        assert not failures
        with pytest.raises(FailedPrecondition) as refused:
            await asyncio.to_thread(client.replay, ids, fixed)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"quarantined records {ids} are being replayed by another replay" in refused.value.message
        argv = ["--control-plane", control_plane.address, "quarantine", "replay", str(ids[0])]
        assert await asyncio.to_thread(aetherctl, argv) == 1
        assert (
            f"error: FAILED_PRECONDITION: quarantined records [{ids[0]}] are being replayed by another replay"
            in capsys.readouterr().err
        )
    finally:
        slow.resume.set()
        await asyncio.to_thread(first.join, 20)
        slow.close()
    assert not failures
    replayed = await asyncio.to_thread(client.list_quarantined, status="replayed")
    assert sorted(r.id for r in replayed) == ids
    assert sum(b.num_rows for b in offline.scan("climate", 1)) == 3 + len(ids)  # each replayed row once
    client.close()


async def test_an_ingest_while_redis_is_down_is_unavailable_and_its_retry_stores_each_row_once(
    tmp_path: Path,
) -> None:
    """The online store is down (its own redis-server, stopped): the ingest is UNAVAILABLE with nothing
    stored or counted, and the retry once it is back stores each row once. It answered INTERNAL after
    storing and counting the rows offline, so the retry stored them twice. Then Redis takes no write
    after the run's check (out of memory: PING works): the run's rows stay stored and counted once, and
    its online part waits as online_pending records, whose replay writes only the online values."""
    online = RedisServer()
    online.start()
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=f"sqlite:///{tmp_path / 'aether.db'}", redis_url=online.url,
        listen_addr="127.0.0.1:0",
    )  # fmt: skip
    server = await start_server(settings, services=[add_to_server])
    client = IngestionClient(server.address)
    offline = OfflineStore(offline_root(server.context))

    def offline_rows() -> int:
        return sum(b.num_rows for b in offline.scan("climate", 1))

    try:
        server.registry.create_entity(ENTITY)
        server.registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
        online.stop()
        with pytest.raises(Unavailable, match=r"online store \(Redis\) is unavailable.*nothing of this run"):
            await asyncio.to_thread(client.ingest, "climate", readings())
        assert await asyncio.to_thread(client.list_runs, "climate") == []
        assert offline_rows() == 0
        online.start()
        done = await asyncio.to_thread(client.ingest, "climate", readings())
        assert (done.accepted, done.quarantined, done.online_rows) == (3, 2, 2)
        assert offline_rows() == 3

        writes = redis.Redis.from_url(online.url)
        writes.config_set("maxmemory", 1)  # the default noeviction policy then refuses every write
        later = pa.table({"sensor_id": [5, 6], "event_ts": [NOW, NOW], "temperature_c": [1.0, 2.0],
                          "mode": [1, 2]})  # fmt: skip
        with pytest.raises(
            FailedPrecondition, match="stored offline and counted, so do not ingest them again"
        ):
            await asyncio.to_thread(client.ingest, "climate", later)
        writes.config_set("maxmemory", 0)
        (run,) = [r for r in await asyncio.to_thread(client.list_runs, "climate") if r.records_in == 2]
        assert (run.accepted, run.quarantined) == (2, 0)
        pending = await asyncio.to_thread(client.list_quarantined, status="online_pending", run_id=run.run_id)
        assert len(pending) == 1  # the run's online part: its offline files hold the latest rows
        assert (
            "OutOfMemoryError" in pending[0].reason and pending[0].updated_at_us == 0
        )  # handed over at once
        replay = await asyncio.to_thread(client.replay, [r.id for r in pending])
        assert sorted(replay.replayed) == sorted(r.id for r in pending)
        assert offline_rows() == 5  # each row once
        view = server.registry.get_feature_view("climate", 1)
        layout = online_view_version(view)
        for sensor, temperature in ((5, 1.0), (6, 2.0)):
            blob = writes.get(online_key("sensor", [str(sensor)], "climate", 1))
            assert isinstance(blob, bytes)
            decoded = decode(blob, layout.layout, view.schema_fingerprint, len(layout.columns))
            assert decoded.values[0][0] == pytest.approx(temperature)
        writes.close()
    finally:
        client.close()
        await server.stop()
        online.close()


# A batch run of three chunks (one rejected record each) in a process of its own, killed by the test.
_CRASHING_RUN = """
import sys
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import redis

from control_plane.db import create_db_engine, create_session_factory
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.service import IngestionService
from control_plane.offline.store import OfflineStore

db_url, redis_url, offline_root = sys.argv[1:4]
sessions = create_session_factory(create_db_engine(db_url))
service = IngestionService(
    sessions, FeatureRegistry(sessions), OfflineStore(offline_root), redis.Redis.from_url(redis_url)
)
now = datetime.now(UTC).replace(microsecond=0)
chunks = [
    pa.table({
        "sensor_id": [1, 2, 3, 4],
        "event_ts": [now - timedelta(minutes=10 - k)] * 4,
        "temperature_c": [10.0 * k + 1, 10.0 * k + 2, 10.0 * k + 3, 99.0],  # sensor 4's is above max
        "mode": [1, 2, 3, 1],
    })
    for k in range(3)
]
service.ingest("climate", 1, chunks)
"""


def test_a_batch_run_killed_before_its_online_write_leaves_its_online_part_to_a_replay(
    tmp_path: Path,
) -> None:
    """A batch run's process is SIGKILLed after its last chunk's commit and before its online write (its
    own redis-server paused for writes, so the write never runs). Its rows are stored and counted once;
    its online part waits as an online_pending record of the run, held by the dead run (a replay is
    refused until the lease runs out), and a replay after it writes the latest row per entity online.
    Before, the run left no record of its missing online values: only re-ingesting (storing every row
    twice) would write them."""
    online = RedisServer()
    online.start()
    db_url = f"sqlite:///{tmp_path / 'aether.db'}"
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    registry.create_entity(ENTITY)
    registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
    offline = OfflineStore(str(tmp_path / "offline"))
    writes = redis.Redis.from_url(online.url)
    service = IngestionService(sessions, registry, offline, writes)

    def adds_up() -> list[RunCounts]:
        runs = service.list_runs("climate")
        assert all(r.records_in == r.accepted + r.quarantined for r in runs)
        return runs

    writes.client_pause(60_000, all=False)  # PING answers; the online write waits
    run_process = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_RUN, db_url, online.url, str(tmp_path / "offline")],
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not [r for r in adds_up() if r.records_in == 12]:  # the last chunk is committed
            assert run_process.poll() is None, run_process.communicate()[1]
            assert time.monotonic() < deadline, "the run never committed its last chunk"
            time.sleep(0.05)
        run_process.send_signal(signal.SIGKILL)
        run_process.wait()
    finally:
        if run_process.poll() is None:
            run_process.kill()
            run_process.wait()
        writes.client_unpause()
    try:
        (run,) = adds_up()
        assert (run.records_in, run.accepted, run.quarantined) == (12, 9, 3)
        assert sum(b.num_rows for b in offline.scan("climate", 1)) == 9
        keys = [online_key("sensor", [str(sensor)], "climate", 1) for sensor in (1, 2, 3)]
        assert writes.exists(*keys) == 0  # killed before its online write
        (part,) = service.list_quarantined(status="online_pending", run_id=run.run_id)
        assert part.updated_at_us > 0  # held by the dead run
        with pytest.raises(
            FailedPrecondition,
            match=rf"records \[{part.id}\] are being replayed by another replay \(or written online by the"
            r" batch run",
        ):
            service.replay([part.id], {})  # within the lease

        after_lease = IngestionService(sessions, registry, offline, writes, claim_lease_s=0.0)
        assert after_lease.replay([part.id], {}).replayed == [part.id]
        view = registry.get_feature_view("climate", 1)
        layout = online_view_version(view)
        for sensor, key in zip((1, 2, 3), keys, strict=True):
            blob = writes.get(key)
            assert isinstance(blob, bytes)
            decoded = decode(blob, layout.layout, view.schema_fingerprint, len(layout.columns))
            assert decoded.values[0][0] == pytest.approx(20.0 + sensor)  # the last chunk's row
        assert service.get_quarantined(part.id).status == "replayed"
        assert [(r.records_in, r.accepted, r.quarantined) for r in adds_up()] == [(12, 9, 3)]
        assert sum(b.num_rows for b in offline.scan("climate", 1)) == 9  # each row stored once
    finally:
        writes.close()
        engine.dispose()
        online.close()


async def test_list_quarantined_cuts_a_page_by_size_and_loses_no_record(
    control_plane: ControlPlaneServer,
) -> None:
    # 100 rejected rows, each carrying a 48,000-character column: their payloads made a 4.8 MB
    # ListQuarantined reply, over gRPC's 4 MiB, and listing the quarantine failed RESOURCE_EXHAUSTED.
    rows = 100
    table = pa.table(
        {
            "sensor_id": list(range(rows)),
            "event_ts": [NOW] * rows,
            "temperature_c": [99.0] * rows,  # above the max: every row is quarantined
            "mode": [1] * rows,
            "note": ["n" * 48_000] * rows,
        }
    )
    client = IngestionClient(control_plane.address)
    response = await asyncio.to_thread(client.ingest, "climate", table, source="wide")
    assert response.quarantined == rows

    channel = grpc.insecure_channel(control_plane.address)
    stub = IngestionStub(channel)  # type: ignore[no-untyped-call]
    first = await asyncio.to_thread(stub.ListQuarantined, ingestion_pb2.ListQuarantinedRequest())
    assert 0 < len(first.records) < rows and first.next_page_token
    assert first.ByteSize() <= pages.MAX_PAGE_BYTES + 16
    assert all(len(record.payload_json) > 48_000 for record in first.records)
    seen = [record.id for record in first.records]
    token = first.next_page_token
    while token:
        request = ingestion_pb2.ListQuarantinedRequest(page_token=token)
        page = await asyncio.to_thread(stub.ListQuarantined, request)
        assert page.records and page.ByteSize() <= pages.MAX_PAGE_BYTES + 16
        seen += [record.id for record in page.records]
        token = page.next_page_token
    assert len(seen) == len(set(seen)) == rows and seen == sorted(seen, reverse=True)

    # The SDK and aetherctl follow the tokens: the newest 100 (the default), or as many as asked.
    listed = await asyncio.to_thread(client.list_quarantined)
    assert [record.id for record in listed] == seen
    assert len(await asyncio.to_thread(client.list_quarantined, limit=30)) == 30
    text = await asyncio.to_thread(cli, control_plane, "quarantine", "list", "--json")
    assert sorted(record["id"] for record in json.loads(text)) == sorted(seen)
    foreign = ingestion_pb2.ListQuarantinedRequest(view="clicks", page_token=first.next_page_token)
    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(stub.ListQuarantined, foreign)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "different filter" in (refused.value.details() or "")
    channel.close()
