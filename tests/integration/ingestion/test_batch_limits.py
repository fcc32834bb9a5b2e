"""IngestBatch's chunks on a real control plane (gRPC on loopback, Redis, offline store) are bounded by
what they decode into: each chunk was decompressed whole before anything was checked, so a few KiB of
zstd made the server allocate any amount."""

from __future__ import annotations

import asyncio

import grpc
import pyarrow as pa
import pytest

from clients.aether.v1 import ingestion_pb2
from clients.aether.v1.ingestion_pb2_grpc import IngestionStub
from control_plane.api.ingestion import MAX_BATCH_BYTES, MAX_BATCH_ROWS
from control_plane.server import ControlPlaneServer
from tests.support.ipc_streams import compressed_zeros, plain


def refusal(address: str, *streams: bytes) -> grpc.RpcError:
    header = ingestion_pb2.IngestHeader(view="climate")
    chunks = [ingestion_pb2.IngestChunk(header=header, arrow_ipc=streams[0])]
    chunks += [ingestion_pb2.IngestChunk(arrow_ipc=data) for data in streams[1:]]
    with grpc.insecure_channel(address) as channel:
        stub = IngestionStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            stub.IngestBatch(iter(chunks), timeout=120)
    return refused.value


async def test_a_compressed_chunk_decoding_past_the_bound_is_refused(
    control_plane: ControlPlaneServer,
) -> None:
    data = compressed_zeros(MAX_BATCH_BYTES)
    assert len(data) < 1 << 20
    refused = await asyncio.to_thread(refusal, control_plane.address, data)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details().startswith(
        f"IngestBatch's chunks exceed {MAX_BATCH_BYTES} bytes once decompressed"
    ), refused.details()


async def test_chunks_declaring_more_rows_than_the_bound_together_are_refused(
    control_plane: ControlPlaneServer,
) -> None:
    """Each chunk is under the bound; the request is not. A null-typed column has no bytes behind it."""
    half = plain(pa.table({"sensor_id": pa.nulls(MAX_BATCH_ROWS // 2 + 1)}))
    assert len(half) < 1024
    refused = await asyncio.to_thread(refusal, control_plane.address, half, half)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details().startswith(f"IngestBatch's chunks exceed {MAX_BATCH_ROWS} rows"), (
        refused.details()
    )
