"""Entity rows sent as Arrow IPC to a real control plane (gRPC on loopback) are bounded by what they
decode into, not only by the bytes sent: a read-only caller's few KiB of zstd made the server allocate
1 GiB, and more KiB any amount."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from clients.aether.v1 import offline_features_pb2 as pb
from clients.aether.v1 import offline_features_pb2_grpc as pb_grpc
from control_plane.api.auth import AuthSettings
from control_plane.api.offline_features import MAX_ENTITY_ROWS, MAX_ENTITY_ROWS_BYTES, add_to_server
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.support.ipc_streams import compressed_zeros, plain

READER = "reader-secret"


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[ControlPlaneServer]:
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=db_url,
        listen_addr="127.0.0.1:0",
        auth=AuthSettings(admin_token="admin-secret", readonly_token=READER),
    )
    handle = await start_server(settings, services=[add_to_server])
    yield handle
    await handle.stop()


def refusal(address: str, entity_rows_arrow: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.OfflineFeaturesStub(channel)  # type: ignore[no-untyped-call]
        request = pb.GetHistoricalFeaturesRequest(features=["stats"], entity_rows_arrow=entity_rows_arrow)
        with pytest.raises(grpc.RpcError) as refused:
            for _ in stub.GetHistoricalFeatures(
                iter([request]), metadata=[("authorization", f"Bearer {READER}")], timeout=120
            ):
                pass
    return refused.value


async def test_compressed_entity_rows_decoding_past_the_bound_are_refused_before_decoding(
    server: ControlPlaneServer,
) -> None:
    data = compressed_zeros(MAX_ENTITY_ROWS_BYTES)
    assert len(data) < 1 << 20  # a small request
    refused = await asyncio.to_thread(refusal, server.address, data)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details().startswith(
        f"entity rows exceed {MAX_ENTITY_ROWS_BYTES} bytes once decompressed"
    ), refused.details()


async def test_entity_rows_declaring_more_rows_than_the_bound_are_refused(server: ControlPlaneServer) -> None:
    """A null-typed column has no bytes behind its rows: a few hundred bytes declared any number."""
    data = plain(pa.table({"user_id": pa.nulls(MAX_ENTITY_ROWS + 1)}))
    assert len(data) < 1024
    refused = await asyncio.to_thread(refusal, server.address, data)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details().startswith(f"entity rows exceed {MAX_ENTITY_ROWS} rows"), refused.details()
