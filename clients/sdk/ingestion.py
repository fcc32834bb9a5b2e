"""Synchronous client of the control plane's ``aether.v1.Ingestion``: ingest Arrow tables (sent as
Arrow IPC chunks of at most ``chunk_rows`` rows, so any size fits under gRPC's message limit),
materialize a Parquet source, and work the quarantine. Errors arrive as :mod:`clients.errors`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from clients.aether.v1 import ingestion_pb2 as pb
from clients.aether.v1 import ingestion_pb2_grpc as pb_grpc
from clients.sdk.service_client import ServiceClient

DEFAULT_CHUNK_ROWS = 50_000


def _us(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        raise ValueError("window bounds must be time-zone-aware")
    return int(moment.timestamp() * 1_000_000)


def header(
    view: str, version: int = 0, start: datetime | None = None, end: datetime | None = None,
    strict: bool = False, source: str = "",
) -> pb.IngestHeader:  # fmt: skip
    return pb.IngestHeader(
        view=view, version=version, start_us=_us(start), end_us=_us(end), strict=strict, source=source
    )


class IngestionClient(ServiceClient):
    DEFAULT_TIMEOUT_S = 300.0

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.IngestionStub(self._channel)  # type: ignore[no-untyped-call]

    def ingest_ipc(self, head: pb.IngestHeader, ipc_chunks: Iterable[bytes]) -> pb.IngestResponse:
        """Sends already-encoded Arrow IPC streams (one per chunk) as one run."""

        def requests() -> Iterator[pb.IngestChunk]:
            yield pb.IngestChunk(header=head)
            for data in ipc_chunks:
                yield pb.IngestChunk(arrow_ipc=data)

        return self._call(self._stub.IngestBatch, requests(), pb.IngestResponse)

    def ingest(
        self, view: str, table: Any, *, version: int = 0, start: datetime | None = None,
        end: datetime | None = None, strict: bool = False, source: str = "",
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> pb.IngestResponse:  # fmt: skip
        """Validates and materializes a ``pyarrow.Table`` (pyarrow is imported only here, so the SDK's
        other calls do not need it)."""
        import pyarrow as pa

        def chunks() -> Iterator[bytes]:
            for batch in table.to_batches(max_chunksize=chunk_rows):
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, batch.schema) as writer:
                    writer.write_batch(batch)
                yield sink.getvalue().to_pybytes()

        return self.ingest_ipc(header(view, version, start, end, strict, source), chunks())

    def materialize(
        self, view: str, *, version: int = 0, start: datetime | None = None, end: datetime | None = None,
        source_uri: str = "", strict: bool = False,
    ) -> pb.IngestResponse:  # fmt: skip
        request = pb.MaterializeRequest(
            header=header(view, version, start, end, strict), source_uri=source_uri
        )
        return self._call(self._stub.Materialize, request, pb.IngestResponse)

    def list_quarantined(
        self, *, view: str = "", reason_contains: str = "", status: str = "", run_id: str = "", limit: int = 0
    ) -> list[pb.QuarantinedRecord]:
        request = pb.ListQuarantinedRequest(
            view=view, reason_contains=reason_contains, status=status, run_id=run_id, limit=limit
        )
        return list(self._call(self._stub.ListQuarantined, request, pb.ListQuarantinedResponse).records)

    def get_quarantined(self, record_id: int) -> pb.QuarantinedRecord:
        return self._call(
            self._stub.GetQuarantined, pb.GetQuarantinedRequest(id=record_id), pb.QuarantinedRecord
        )

    def replay(
        self, ids: Iterable[int], corrected: Mapping[int, str] | None = None
    ) -> pb.ReplayQuarantinedResponse:
        """Re-validates the records; ``corrected`` maps an id to its corrected payload (JSON object text)."""
        request = pb.ReplayQuarantinedRequest(
            ids=list(ids),
            corrected=[pb.CorrectedRecord(id=i, payload_json=p) for i, p in (corrected or {}).items()],
        )
        return self._call(self._stub.ReplayQuarantined, request, pb.ReplayQuarantinedResponse)

    def discard(self, ids: Iterable[int]) -> int:
        response = self._call(
            self._stub.DiscardQuarantined,
            pb.DiscardQuarantinedRequest(ids=list(ids)),
            pb.DiscardQuarantinedResponse,
        )
        return int(response.discarded)

    def list_runs(self, view: str = "", limit: int = 0) -> list[pb.IngestionRun]:
        return list(
            self._call(
                self._stub.ListIngestionRuns,
                pb.ListIngestionRunsRequest(view=view, limit=limit),
                pb.ListIngestionRunsResponse,
            ).runs
        )
