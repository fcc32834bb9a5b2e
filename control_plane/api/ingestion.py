"""The ``aether.v1.Ingestion`` gRPC service: thin servicer over ``control_plane.ingestion.service``;
blocking work (SQL, Parquet, Redis) runs in worker threads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import grpc.aio
import pyarrow as pa

from clients.aether.v1 import ingestion_pb2 as pb
from clients.aether.v1 import ingestion_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument, ResourceExhausted, maps_errors
from clients.ipc_budget import IpcBudget
from clients.server_handlers import HandlerRegistry
from control_plane.api.context import ServiceContext
from control_plane.api.identity import actor_of
from control_plane.api.offline_features import offline_root
from control_plane.db import keyset, pages
from control_plane.ingestion.draining import RunDrain
from control_plane.ingestion.intent_recovery import IntentRecoveryLoop
from control_plane.ingestion.quarantine import QuarantinedRecord, RunCounts
from control_plane.ingestion.run_outcome import MaterializeOutcome
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.tables import QuarantineRow
from control_plane.ingestion.window import Window
from control_plane.offline.store import EARLIEST_EVENT_US, LATEST_EVENT_US, OfflineStore

INGESTION_SERVICE = pb.DESCRIPTOR.services_by_name["Ingestion"].full_name
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
DEFAULT_QUARANTINE_PAGE = 100
#: The most one IngestBatch may send, in bytes (all chunks together) and in what they decode into
#: (compressed Arrow IPC buffers included): a larger batch is RESOURCE_EXHAUSTED, and goes in several
#: calls or through Materialize, which reads a file the server can reach.
MAX_BATCH_BYTES = 1 << 30
#: The most rows one IngestBatch may send, checked before they are decoded: as many as MAX_BATCH_BYTES
#: holds of a plain row (an int64 key and a timestamp), where a column with no bytes (null-typed, run-end
#: encoded) could otherwise declare any number.
MAX_BATCH_ROWS = MAX_BATCH_BYTES // 16
# Newest first: by id, which is unique.
_QUARANTINE_ORDER = (keyset.KeyColumn(QuarantineRow.id, int, descending=True),)  # type: ignore[arg-type]


def record_message(record: QuarantinedRecord) -> pb.QuarantinedRecord:
    return pb.QuarantinedRecord(
        id=record.id, run_id=record.run_id, record_key=record.record_key, view=record.view,
        version=record.version, source_kind=record.source_kind, source_id=record.source_id,
        payload_json=record.payload, reason=record.reason, status=record.status,
        created_at_us=record.created_at_us, updated_at_us=record.updated_at_us,
    )  # fmt: skip


def run_message(run: RunCounts) -> pb.IngestionRun:
    return pb.IngestionRun(
        run_id=run.run_id, view=run.view, version=run.version, source_kind=run.source_kind,
        source_id=run.source_id, records_in=run.records_in, accepted=run.accepted,
        quarantined=run.quarantined, published=run.published,
    )  # fmt: skip


def _response(outcome: MaterializeOutcome) -> pb.IngestResponse:
    return pb.IngestResponse(
        run_id=outcome.run_id, records_in=outcome.records_in, accepted=outcome.accepted,
        quarantined=outcome.quarantined, skipped_outside_window=outcome.skipped_outside_window,
        online_rows=outcome.online_rows, offline_paths=outcome.offline_paths,
    )  # fmt: skip


def _window(header: pb.IngestHeader) -> Window:
    """The header's ``[start_us, end_us)``; 0 is open. A datetime holds years 1 to 9999, as the stores'
    event times do (``EARLIEST_EVENT_US``..``LATEST_EVENT_US``), and one beyond them raised ValueError
    (INTERNAL): a start before year 1 or an end after 9999 (2**62 or INT64_MAX meaning "no end") bounds
    no event time the stores hold, so it is open; a start after 9999 or an end before year 1 leaves none
    of them inside, so it is refused."""
    start, end = header.start_us, header.end_us
    if start > LATEST_EVENT_US:
        raise InvalidArgument(
            f"start_us: {start} µs since 1970 is after year 9999; no event time is after it"
        )
    if end and end < EARLIEST_EVENT_US:
        raise InvalidArgument(f"end_us: {end} µs since 1970 is before year 1; no event time is before it")
    return Window(
        _moment(start) if start and start >= EARLIEST_EVENT_US else None,
        _moment(end) if end and end <= LATEST_EVENT_US else None,
    )


def _moment(us: int) -> datetime:
    # Exact: us / 1e6 as a float is off by a microsecond for many present-day times.
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _tables(chunks: list[bytes]) -> list[pa.Table]:
    # One budget for all of a request's chunks: each was decompressed whole, unbounded (a few KiB of
    # zstd decode to GiB), before anything was checked (clients.ipc_budget).
    budget = IpcBudget("IngestBatch's chunks", MAX_BATCH_BYTES, MAX_BATCH_ROWS)
    tables = []
    for index, data in enumerate(chunks):
        try:
            tables.append(budget.read_stream(data))
        # A cut-off chunk is an OSError to Arrow, and a type it cannot read ArrowNotImplementedError:
        # the sender's data either way, not an internal error.
        except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidArgument(f"chunk {index}: not a readable Arrow IPC stream: {exc}") from exc
    return tables


class IngestionServicer(pb_grpc.IngestionServicer):
    def __init__(self, service: IngestionService, drain: RunDrain) -> None:
        self._service = service
        # Runs go through it, not plain to_thread: a stop would cancel their calls (UNAVAILABLE) while
        # their threads stored every row all the same (draining).
        self._drain = drain

    @maps_errors
    async def IngestBatch(
        self, request_iterator: AsyncIterator[pb.IngestChunk], context: Context
    ) -> pb.IngestResponse:
        header: pb.IngestHeader | None = None
        chunks: list[bytes] = []
        received = 0
        async for chunk in request_iterator:
            if header is None:
                if not chunk.HasField("header") or not chunk.header.view:
                    raise InvalidArgument("the first chunk must carry a header naming the view")
                header = chunk.header
            if chunk.arrow_ipc:
                # Held until the last chunk: without a bound, as much as a caller sends.
                received += len(chunk.arrow_ipc)
                if received > MAX_BATCH_BYTES:
                    raise ResourceExhausted(
                        f"IngestBatch's chunks exceed {MAX_BATCH_BYTES} bytes: send fewer rows per call"
                    )
                chunks.append(chunk.arrow_ipc)
        if header is None:
            raise InvalidArgument("empty request: no header")
        tables = _tables(chunks)
        window, actor = _window(header), actor_of(context)
        outcome = await self._drain.run(
            lambda watch: self._service.ingest(
                header.view, header.version, tables, window=window, strict=header.strict,
                source=header.source or "arrow", actor=actor, watch=watch, one_batch=True,
            ),  # one_batch: the null fraction is the call's, whatever pieces the client sent
            "this IngestBatch",
        )  # fmt: skip
        return _response(outcome)

    @maps_errors
    async def Materialize(self, request: pb.MaterializeRequest, context: Context) -> pb.IngestResponse:
        header = request.header
        window, actor = _window(header), actor_of(context)
        outcome = await self._drain.run(
            lambda watch: self._service.materialize_file(
                header.view, header.version, request.source_uri, window=window, strict=header.strict,
                actor=actor, watch=watch,
            ),
            "this Materialize",
        )  # fmt: skip
        return _response(outcome)

    @maps_errors
    async def ListQuarantined(
        self, request: pb.ListQuarantinedRequest, context: Context
    ) -> pb.ListQuarantinedResponse:
        scope = keyset.scope_digest(request.view, request.reason_contains, request.status, request.run_id)
        last = keyset.decode(
            request.page_token, "ListQuarantined", scope, _QUARANTINE_ORDER, scope_name="filter"
        )
        size = request.limit or DEFAULT_QUARANTINE_PAGE
        records = await asyncio.to_thread(
            self._service.list_quarantined, view=request.view, reason_contains=request.reason_contains,
            status=request.status, run_id=request.run_id, limit=size + 1,
            before_id=0 if last is None else int(last[0] or 0),
        )  # fmt: skip
        # Cut by size too: a payload is a whole rejected record (a stream message, a row of wide text
        # columns), and 100 of them outgrew gRPC's 4 MiB: the listing failed for good.
        messages = list(pages.fitting(record_message(r) for r in records[:size]))
        if len(records) <= len(messages):
            return pb.ListQuarantinedResponse(records=messages)
        token = keyset.encode("ListQuarantined", scope, [messages[-1].id])
        return pb.ListQuarantinedResponse(records=messages, next_page_token=token)

    @maps_errors
    async def GetQuarantined(
        self, request: pb.GetQuarantinedRequest, context: Context
    ) -> pb.QuarantinedRecord:
        return record_message(await asyncio.to_thread(self._service.get_quarantined, request.id))

    @maps_errors
    async def ReplayQuarantined(
        self, request: pb.ReplayQuarantinedRequest, context: Context
    ) -> pb.ReplayQuarantinedResponse:
        if not request.ids:
            raise InvalidArgument("ids: name at least one quarantined record")
        corrected = {c.id: c.payload_json for c in request.corrected}
        ids, actor = list(request.ids), actor_of(context)
        outcome = await self._drain.run(
            lambda _watch: self._service.replay(ids, corrected, actor), "this replay"
        )
        return pb.ReplayQuarantinedResponse(
            replayed=outcome.replayed,
            still_quarantined=[record_message(r) for r in outcome.still_quarantined],
            run_id=outcome.run_ids[0] if outcome.run_ids else "",
            run_ids=outcome.run_ids,
        )

    @maps_errors
    async def DiscardQuarantined(
        self, request: pb.DiscardQuarantinedRequest, context: Context
    ) -> pb.DiscardQuarantinedResponse:
        discarded = await asyncio.to_thread(self._service.discard, list(request.ids), actor_of(context))
        return pb.DiscardQuarantinedResponse(discarded=discarded)

    @maps_errors
    async def ListIngestionRuns(
        self, request: pb.ListIngestionRunsRequest, context: Context
    ) -> pb.ListIngestionRunsResponse:
        runs = await asyncio.to_thread(self._service.list_runs, request.view, request.limit)
        return pb.ListIngestionRunsResponse(runs=[run_message(r) for r in runs])


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Serves ingestion with the control plane's database, registry, Redis and offline store, after one
    intent recovery pass (the offline files of chunks that runs killed before counting them,
    ``ingestion/intents.py``), which then runs in the background (``ingestion/intent_recovery.py``)."""
    client = context.settings.redis_client()
    context.on_close.append(client.close)
    service = IngestionService(
        context.sessions, context.registry, OfflineStore(offline_root(context)), client,
        kafka_options=context.settings.kafka_options,  # a replay publishes as the materializer consumes
        max_join_key_bytes=context.settings.max_join_key_bytes,
    )  # fmt: skip
    recovery = IntentRecoveryLoop(service.batch)
    recovery.run_once()
    recovery.start()
    context.on_close.append(recovery.stop)
    drain = RunDrain(context.settings.shutdown_drain_s)
    context.on_stop.append(drain.stop)  # in-flight runs stop and answer before anything closes
    servicer = IngestionServicer(service, drain)
    pb_grpc.add_IngestionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return INGESTION_SERVICE
