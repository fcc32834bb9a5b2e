"""Synchronous client of the control plane's ``aether.v1.OfflineFeatures``: point-in-time training sets.

Arrow tables travel as one Arrow IPC stream cut into pieces of at most :data:`CHUNK_BYTES`, both ways,
so no gRPC message grows with the data. (pyarrow is the one import beyond the usual client set: the
training set *is* an Arrow table.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from clients.aether.v1 import offline_features_pb2 as pb
from clients.aether.v1 import offline_features_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument
from clients.ipc_budget import IpcBudget
from clients.sdk.arguments import str_list
from clients.sdk.service_client import ServiceClient

#: Largest Arrow piece per message, well under gRPC's default 4 MiB message limit.
CHUNK_BYTES = 1 << 20
_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class HistoricalFeatures:
    """A training set and what the server said about it."""

    table: pa.Table
    dataset_hash: str
    row_count: int
    matched: dict[str, int] = field(default_factory=dict)
    output_path: str = ""
    #: Whether the server wrote the set's lineage record (not for the read-only token; False from a server
    #: older than the field).
    lineage_recorded: bool = False

    def matched_fraction(self, column: str) -> float:
        return self.matched.get(column, 0) / self.row_count if self.row_count else 0.0


class _Collector:
    """A write-only file that keeps what was written until taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def arrow_stream_pieces(table: pa.Table, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """``table`` as an Arrow IPC stream, in pieces of at most ``chunk_bytes``, serialized one record
    batch at a time (the whole stream is never held at once)."""
    sink = _Collector()
    pending = b""
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
            writer.write_batch(batch)
            pending += sink.take()
            while len(pending) >= chunk_bytes:
                yield pending[:chunk_bytes]
                pending = pending[chunk_bytes:]
    pending += sink.take()  # the end-of-stream marker
    for start in range(0, len(pending), chunk_bytes):
        yield pending[start : start + chunk_bytes]


def read_arrow_stream(pieces: Iterable[bytes], budget: IpcBudget | None = None) -> pa.Table:
    """The table from the pieces of one Arrow IPC stream; INVALID_ARGUMENT when they are not one. With
    a ``budget`` (a server reading a caller's stream), RESOURCE_EXHAUSTED when the stream declares more
    decoded bytes or rows than it allows, before any of it is decompressed (:mod:`clients.ipc_budget`)."""
    data = b"".join(pieces)
    try:
        if budget is not None:
            return budget.read_stream(data)
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidArgument(f"not a valid Arrow IPC stream: {exc}") from None


class OfflineFeaturesClient(ServiceClient):
    """Client of one control plane at ``target`` (``host:port``); each call times out after ``timeout``
    seconds (training sets take a while: the default is generous)."""

    DEFAULT_TIMEOUT_S = 600.0

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.OfflineFeaturesStub(self._channel)  # type: ignore[no-untyped-call]

    def get_historical_features(
        self,
        entity_rows: pa.Table | str | os.PathLike[str],
        features: Sequence[str],
        *,
        timestamp_column: str = "",
        output_path: str = "",
        timeout: float | None = None,
    ) -> tuple[pa.Table, str]:
        """(training set, dataset hash). ``entity_rows`` is a table, or a Parquet path the *server* reads
        (a str or ``os.PathLike``); ``features`` a list of references (a lone str is refused, not split)."""
        result = self.historical_features(
            entity_rows, features, timestamp_column=timestamp_column, output_path=output_path, timeout=timeout
        )
        return result.table, result.dataset_hash

    def historical_features(
        self,
        entity_rows: pa.Table | str | os.PathLike[str],
        features: Sequence[str],
        *,
        timestamp_column: str = "",
        output_path: str = "",
        summary_only: bool = False,
        timeout: float | None = None,
    ) -> HistoricalFeatures:
        """Like :meth:`get_historical_features`, with the matched counts and the server's output path.
        ``summary_only`` leaves the rows on the server, written to ``output_path`` (INVALID_ARGUMENT
        without one): the table comes back empty."""
        head = pb.GetHistoricalFeaturesRequest(
            features=str_list(features, "features"),
            timestamp_column=timestamp_column,
            output_path=output_path,
            summary_only=summary_only,
        )
        requests = _requests(head, entity_rows)
        responses = self._stream_streaming(
            self._stub.GetHistoricalFeatures, requests, self.timeout if timeout is None else timeout
        )
        pieces: list[bytes] = []
        last = pb.GetHistoricalFeaturesResponse()
        for response in responses:
            if response.arrow_chunk:
                pieces.append(response.arrow_chunk)
            last = response
        table = read_arrow_stream(pieces) if pieces else pa.table({})
        return HistoricalFeatures(
            table=table,
            dataset_hash=last.dataset_hash,
            row_count=last.row_count,
            matched={m.column: m.rows for m in last.matched},
            output_path=last.output_path,
            lineage_recorded=last.lineage_recorded,
        )

    def compact(
        self, view: str, version: int = 0, *, dry_run: bool = False, timeout: float | None = None
    ) -> pb.CompactOfflineFilesResponse:
        """One compaction pass over ``view``'s offline files (every version with data when ``version`` is
        0): what was merged (each file out, the files in, its rows) and how many merged files were
        deleted. ``dry_run`` only reports. A partition with a file that does not decode is left as it is
        and listed in ``damaged_partitions`` (the error naming the file); the call still succeeds."""
        request = pb.CompactOfflineFilesRequest(view=view, version=version, dry_run=dry_run)
        return self._call(self._stub.CompactOfflineFiles, request, pb.CompactOfflineFilesResponse, timeout)


def _requests(
    head: pb.GetHistoricalFeaturesRequest, entity_rows: pa.Table | str | os.PathLike[str]
) -> Iterator[pb.GetHistoricalFeaturesRequest]:
    """The request stream: ``head`` naming the server-side path, or ``head`` and the table's pieces.
    The type is checked here, before the call: drawn on gRPC's thread, a wrong one failed as UNKNOWN
    "Exception iterating requests!"."""
    if isinstance(entity_rows, (str, os.PathLike)):
        head.entity_rows_path = os.fspath(entity_rows)
        return iter([head])
    if not isinstance(entity_rows, pa.Table):
        raise InvalidArgument(
            "entity_rows: expected a pyarrow Table or a path the server reads, "
            f"got {type(entity_rows).__name__}"
        )
    return _table_requests(head, entity_rows)


def _table_requests(
    head: pb.GetHistoricalFeaturesRequest, entity_rows: pa.Table
) -> Iterator[pb.GetHistoricalFeaturesRequest]:
    first = True
    for piece in arrow_stream_pieces(entity_rows):
        if first:
            head.entity_rows_arrow = piece
            yield head
            first = False
        else:
            yield pb.GetHistoricalFeaturesRequest(entity_rows_arrow=piece)
