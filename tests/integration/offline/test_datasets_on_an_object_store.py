"""``GetHistoricalFeatures`` with an S3 datasets root, on a real control plane (gRPC on loopback) and the
suite's S3 endpoint (tests/support/s3_server.py): paths under the root reach the root's store with the
root's options, and nothing a caller writes makes the server send a request anywhere else."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.aether.v1 import types_pb2
from clients.errors import PermissionDenied
from clients.sdk.auth import ChannelSecurity
from clients.sdk.offline import OfflineFeaturesClient
from control_plane.api.auth import AuthSettings
from control_plane.api.offline_features import add_to_server
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.support.s3_server import FakeS3Server
from tests.unit.offline.builders import at, create_view, ensure_entity, entity_rows, feature_spec

ADMIN, READER = "admin-secret", "reader-secret"
#: The server's own credentials, from its environment: what a redirected request would be signed with.
SERVER_KEY_ID, SERVER_SECRET = "AKIASERVERKEYID00001", "server-secret-key"


def parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def rows() -> pa.Table:
    return entity_rows({"user_id": [1, 2, 3]}, [at(10), at(20), at(30)])


async def control_plane(datasets_root: str, home: Path, db_url: str) -> ControlPlaneServer:
    settings = ControlPlaneSettings(
        home=home,
        db_url=db_url,
        listen_addr="127.0.0.1:0",
        datasets_root=datasets_root,
        auth=AuthSettings(admin_token=ADMIN, readonly_token=READER),
    )
    handle = await start_server(settings, services=[add_to_server])
    await asyncio.to_thread(ensure_entity, handle.registry)
    spec = feature_spec("stats", (("score", types_pb2.FLOAT64),), ttl_seconds=7200)
    await asyncio.to_thread(create_view, handle.registry, spec)
    return handle


@pytest.fixture
def server_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SERVER_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SERVER_SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def plain_root_server(
    server_credentials: None, tmp_path: Path, db_url: str
) -> AsyncIterator[ControlPlaneServer]:
    """A control plane whose datasets root is ``s3://aether/datasets``, credentials from its environment."""
    handle = await control_plane("s3://aether/datasets", tmp_path / "home", db_url)
    yield handle
    await handle.stop()


async def test_a_query_on_a_path_under_the_root_sends_no_request_anywhere(
    plain_root_server: ControlPlaneServer, s3: FakeS3Server
) -> None:
    """pyarrow reads a URI's query as the filesystem's options: a read-only caller's
    ``?endpoint_override=HOST:PORT&scheme=http`` made the server send its S3 requests, signed with its
    own credentials, to that host (here the suite's S3 endpoint, holding the rows it asked for)."""
    s3.objects["datasets/rows.parquet"] = parquet(rows())
    redirect = f"?region=us-east-1&scheme=http&endpoint_override=127.0.0.1:{s3.port}"
    reader = OfflineFeaturesClient(plain_root_server.address, security=ChannelSecurity(token=READER))
    admin = OfflineFeaturesClient(plain_root_server.address, security=ChannelSecurity(token=ADMIN))
    with reader, admin:
        for where in (f"s3://aether/datasets/rows.parquet{redirect}", f"rows.parquet{redirect}"):
            with pytest.raises(PermissionDenied, match=r"entity_rows_path: .* no query or fragment"):
                await asyncio.to_thread(reader.historical_features, where, ["stats"])
            with pytest.raises(PermissionDenied, match=r"output_path: .* no query or fragment"):
                await asyncio.to_thread(admin.historical_features, rows(), ["stats"], output_path=where)
        # Another host, port or userinfo than the root's is outside it.
        for where in (
            "s3://aether:443/datasets/rows.parquet",
            "s3://someone:else@aether/datasets/rows.parquet",
            "s3://aether.evil/datasets/rows.parquet",
            "s3://aether/datasets2/rows.parquet",
        ):
            with pytest.raises(PermissionDenied, match="entity_rows_path: the path given is outside"):
                await asyncio.to_thread(reader.historical_features, where, ["stats"])
    assert s3.requests == []


async def test_paths_under_a_root_with_options_reach_its_store(
    s3: FakeS3Server, tmp_path: Path, db_url: str
) -> None:
    """A root that names its endpoint and credentials in its URI: a relative path was appended after the
    root's query, so it never named a key under the root; the full URI is the root's without them."""
    root = s3.uri("datasets", "AKIAROOTKEY000000001", "root-secret")
    s3.objects["datasets/labels/rows.parquet"] = parquet(rows())
    handle = await control_plane(root, tmp_path / "home", db_url)
    try:
        with OfflineFeaturesClient(handle.address, security=ChannelSecurity(token=ADMIN)) as admin:
            for where in ("labels/rows.parquet", "s3://aether/datasets/labels/rows.parquet"):
                built = await asyncio.to_thread(admin.historical_features, where, ["stats"])
                assert built.row_count == 3
            written = await asyncio.to_thread(
                admin.historical_features, rows(), ["stats"], output_path="sets/train.parquet"
            )
    finally:
        await handle.stop()
    assert written.output_path.startswith("s3://aether/datasets/sets/train.parquet?endpoint_override=")
    assert "root-secret" not in written.output_path
    assert pq.read_table(io.BytesIO(s3.objects["datasets/sets/train.parquet"])).num_rows == 3
    # Only keys under the root's prefix ('' is the bucket: pyarrow's HEAD to check it exists, and the
    # start's sweep listing the root). The copy is uploaded under a hidden name next to its own, read back
    # and copied to it (offline.uploads), and the hidden one removed.
    keys = {key for _, key, _ in s3.requests} - {""}
    staged = {key for key in keys if re.fullmatch(r"datasets/sets/\.train\.parquet\.[0-9a-f]{32}\.tmp", key)}
    assert len(staged) == 1 and not staged & set(s3.objects)
    assert keys - staged == {
        "datasets/",
        "datasets/labels/rows.parquet",
        "datasets/sets/",
        "datasets/sets/train.parquet",
    }


async def test_a_percent_encoded_dot_dot_reads_nothing_outside_the_roots_prefix(
    s3: FakeS3Server, tmp_path: Path, db_url: str
) -> None:
    """The check looked for '..' segments before percent-decoding: pyarrow decodes ``%2e%2e`` to ``..``
    and the S3 client collapses it, so a read-only caller read ``private/secret.parquet``, outside the
    ``datasets/`` prefix, and an admin could write there."""
    s3.objects["private/secret.parquet"] = parquet(rows())
    handle = await control_plane(s3.uri("datasets"), tmp_path / "home", db_url)
    try:
        reader = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token=READER))
        admin = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token=ADMIN))
        with reader, admin:
            for where in (
                "a/%2e%2e/%2e%2e/private/secret.parquet",
                "s3://aether/datasets/a/%2E%2E/%2E%2E/private/secret.parquet",
                "a%2f..%2f..%2fprivate%2fsecret.parquet",
            ):
                with pytest.raises(PermissionDenied, match="entity_rows_path: not a plain key"):
                    await asyncio.to_thread(reader.historical_features, where, ["stats"])
                with pytest.raises(PermissionDenied, match="output_path: not a plain key"):
                    await asyncio.to_thread(admin.historical_features, rows(), ["stats"], output_path=where)
    finally:
        await handle.stop()
    assert [key for _, key, _ in s3.requests if key and not key.startswith("datasets/")] == []
    assert s3.objects["private/secret.parquet"] == parquet(rows())
