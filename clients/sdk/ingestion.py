"""Synchronous client of the control plane's ``aether.v1.Ingestion``: ingest Arrow tables (sent as
Arrow IPC chunks of at most ``chunk_rows`` rows and about ``chunk_bytes`` bytes, so a table of any size
or width fits under gRPC's message limit), materialize a Parquet source, and work the quarantine.
Errors arrive as :mod:`clients.errors`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from clients.aether.v1 import ingestion_pb2 as pb
from clients.aether.v1 import ingestion_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument
from clients.sdk.arguments import checked_request
from clients.sdk.service_client import ServiceClient

DEFAULT_CHUNK_ROWS = 50_000
# Half of gRPC's default 4 MiB message limit: a chunk message also carries its framing.
DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _us(moment: datetime | None, name: str) -> int:
    """Microseconds since the epoch, exactly: ``int(moment.timestamp() * 1_000_000)`` went through a
    float and came out 1 us off for about 1 % of datetimes (low after 1970, high before)."""
    if moment is None:
        return 0
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise InvalidArgument(f"{name}: expected a time-zone-aware datetime, got {moment!r:.80}")
    return (moment - _EPOCH) // _MICROSECOND


def header(
    view: str, version: int = 0, start: datetime | None = None, end: datetime | None = None,
    strict: bool = False, source: str = "",
) -> pb.IngestHeader:  # fmt: skip
    return checked_request(
        pb.IngestHeader,
        view=view,
        version=version,
        start_us=_us(start, "start"),
        end_us=_us(end, "end"),
        strict=strict,
        source=source,
    )


def ipc_chunks(table: Any, chunk_rows: int, chunk_bytes: int) -> Iterator[bytes]:
    """``table`` as Arrow IPC streams of at most ``chunk_rows`` rows, each at most ``chunk_bytes`` unless
    one row alone is larger. Cutting by rows only sent 50,000 rows of a dozen float64 columns as one
    message over gRPC's limit. (pyarrow is imported only here: the SDK's other calls do not need it.)"""
    import pyarrow as pa

    def serialized(batch: pa.RecordBatch) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return bytes(sink.getvalue().to_pybytes())

    def pieces(batch: pa.RecordBatch) -> Iterator[bytes]:
        data = serialized(batch)
        if len(data) <= chunk_bytes or batch.num_rows <= 1:
            yield data
            return
        half = batch.num_rows // 2
        yield from pieces(batch.slice(0, half))
        yield from pieces(batch.slice(half))

    if table.num_rows and table.nbytes > chunk_bytes:  # a first guess from the size per row
        chunk_rows = min(chunk_rows, max(1, int(chunk_bytes * 0.8 * table.num_rows / table.nbytes)))
    for batch in table.to_batches(max_chunksize=chunk_rows):
        yield from pieces(batch)


class IngestionClient(ServiceClient):
    DEFAULT_TIMEOUT_S = 300.0

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.IngestionStub(self._channel)  # type: ignore[no-untyped-call]

    def ingest_ipc(self, head: pb.IngestHeader, ipc_chunks: Iterable[bytes]) -> pb.IngestResponse:
        """Sends already-encoded Arrow IPC streams (one per chunk) as one run; an exception raised while
        drawing ``ipc_chunks`` ends the call and is raised as it is."""

        def requests() -> Iterator[pb.IngestChunk]:
            yield pb.IngestChunk(header=head)
            for data in ipc_chunks:
                yield pb.IngestChunk(arrow_ipc=data)

        return self._call_streaming(self._stub.IngestBatch, requests(), pb.IngestResponse)

    def ingest(
        self, view: str, table: Any, *, version: int = 0, start: datetime | None = None,
        end: datetime | None = None, strict: bool = False, source: str = "",
        chunk_rows: int = DEFAULT_CHUNK_ROWS, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> pb.IngestResponse:  # fmt: skip
        """Validates and materializes a ``pyarrow.Table`` as one run. It travels in IPC pieces of at most
        ``chunk_rows`` rows and about ``chunk_bytes`` bytes, but the server judges the null-fraction
        rule over the whole table (all of the call's pieces), whatever pieces it was cut into."""
        chunks = ipc_chunks(table, chunk_rows, chunk_bytes)
        return self.ingest_ipc(header(view, version, start, end, strict, source), chunks)

    def materialize(
        self, view: str, *, version: int = 0, start: datetime | None = None, end: datetime | None = None,
        source_uri: str = "", strict: bool = False,
    ) -> pb.IngestResponse:  # fmt: skip
        request = pb.MaterializeRequest(
            header=header(view, version, start, end, strict), source_uri=source_uri
        )
        return self._call(self._stub.Materialize, request, pb.IngestResponse)

    def quarantined_page(
        self,
        *,
        view: str = "",
        reason_contains: str = "",
        status: str = "",
        run_id: str = "",
        limit: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.QuarantinedRecord], str]:
        """One page of records, newest first: at most ``limit`` (0 = 100; fewer where they fill the page's
        bytes), and the next page's token ("" on the last: the server reads one past a page, so a page
        that ends at the last record says so)."""
        request = checked_request(
            pb.ListQuarantinedRequest,
            view=view,
            reason_contains=reason_contains,
            status=status,
            run_id=run_id,
            limit=limit,
            page_token=page_token,
        )
        response = self._call(self._stub.ListQuarantined, request, pb.ListQuarantinedResponse)
        return list(response.records), response.next_page_token

    def list_quarantined(
        self, *, view: str = "", reason_contains: str = "", status: str = "", run_id: str = "", limit: int = 0
    ) -> list[pb.QuarantinedRecord]:
        """The newest ``limit`` records (0 = 100), newest first, over as many pages as that takes (a page
        is also bounded in bytes, so it may hold fewer)."""
        # As the field holds it: a negative limit returned [] without a call, as if nothing were kept.
        checked_request(pb.ListQuarantinedRequest, limit=limit)
        wanted = limit or 100
        records: list[pb.QuarantinedRecord] = []
        token = ""
        while len(records) < wanted:
            page, token = self.quarantined_page(
                view=view,
                reason_contains=reason_contains,
                status=status,
                run_id=run_id,
                limit=wanted - len(records),
                page_token=token,
            )
            records.extend(page)
            if not token:
                break
        return records

    def get_quarantined(self, record_id: int) -> pb.QuarantinedRecord:
        return self._call(
            self._stub.GetQuarantined,
            checked_request(pb.GetQuarantinedRequest, id=record_id),
            pb.QuarantinedRecord,
        )

    def replay(
        self, ids: Iterable[int], corrected: Mapping[int, str] | None = None
    ) -> pb.ReplayQuarantinedResponse:
        """Re-validates the records; ``corrected`` maps an id to its corrected payload (JSON object text)."""
        request = checked_request(
            pb.ReplayQuarantinedRequest,
            ids=list(ids),
            corrected=[
                checked_request(pb.CorrectedRecord, id=i, payload_json=p)
                for i, p in (corrected or {}).items()
            ],
        )
        return self._call(self._stub.ReplayQuarantined, request, pb.ReplayQuarantinedResponse)

    def discard(self, ids: Iterable[int]) -> int:
        response = self._call(
            self._stub.DiscardQuarantined,
            checked_request(pb.DiscardQuarantinedRequest, ids=list(ids)),
            pb.DiscardQuarantinedResponse,
        )
        return int(response.discarded)

    def list_runs(self, view: str = "", limit: int = 0) -> list[pb.IngestionRun]:
        return list(
            self._call(
                self._stub.ListIngestionRuns,
                checked_request(pb.ListIngestionRunsRequest, view=view, limit=limit),
                pb.ListIngestionRunsResponse,
            ).runs
        )
