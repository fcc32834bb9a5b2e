"""An artifact write that the filesystem refuses part-way (a full disk, a quota, here a file-size limit:
the kernel's EFBIG, a real fault on a real file) leaves nothing behind.

Small chunks stay in the writer's buffer: discarding the file flushed them, which failed again, and the
temporary file was never removed. On a full disk that file kept the space the next upload needed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from clients.errors import ResourceExhausted
from clients.sdk.artifacts import ArtifactClient
from tests.support.file_size_limit import run_with_file_limit, start_with_file_limit

LIMIT = 1_000_000

_SCRIPT = """
import hashlib, os, sys
from control_plane.artifacts.store import ArtifactStore

store = ArtifactStore(sys.argv[1])
data = os.urandom(3 * int(sys.argv[2]))
for chunk_size in (4096, 100_000, 1 << 20):
    chunks = (data[at : at + chunk_size] for at in range(0, len(data), chunk_size))
    try:
        store.put_stream(chunks, hashlib.sha256(data).hexdigest())
    except Exception as error:
        print(chunk_size, type(error).__name__)
    else:
        print(chunk_size, "stored")
"""


def test_a_write_refused_part_way_leaves_no_temporary_file(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    out = run_with_file_limit(_SCRIPT, LIMIT, str(root), str(LIMIT))
    refused = ["4096 ResourceExhausted", "100000 ResourceExhausted", "1048576 ResourceExhausted"]
    assert out.split("\n")[:3] == refused  # EFBIG, each time
    assert [path.name for path in root.rglob("*") if path.is_file()] == []


#: The artifact service alone, on 127.0.0.1, in the interpreter whose files are limited; prints its port.
_SERVER = """
import asyncio, sys
import grpc.aio
from clients.aether.v1 import model_registry_pb2_grpc
from control_plane.api.artifacts import ArtifactsServicer
from control_plane.artifacts.store import ArtifactStore

async def serve() -> None:
    server = grpc.aio.server()
    servicer = ArtifactsServicer(ArtifactStore(sys.argv[1]))
    model_registry_pb2_grpc.add_ArtifactsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await server.stop(None)

asyncio.run(serve())
"""


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_an_upload_past_the_space_left_is_resource_exhausted(tmp_path: Path, as_uri: bool) -> None:
    """It was INTERNAL ("internal error in ArtifactsServicer.Upload: OSError") in a store named by its
    path, which reads as a bug of the server, and UNAVAILABLE in one named by a ``file://`` URI (pyarrow),
    which clients retry as a passing outage: neither says the store is full."""
    root = tmp_path / "artifacts"
    root.mkdir()
    server = start_with_file_limit(_SERVER, LIMIT, root.as_uri() if as_uri else str(root))
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with ArtifactClient(f"127.0.0.1:{port}", chunk_size=64 * 1024) as client:
            with pytest.raises(ResourceExhausted) as caught:
                client.upload_bytes(os.urandom(3 * LIMIT))
            assert "no room" in caught.value.message
            assert str(root) in caught.value.message
            assert "File too large" in caught.value.message
            assert "nothing was stored" in caught.value.message
            assert client.upload_bytes(b"small").size == 5  # the store still takes what fits
    finally:
        server.communicate("stop\n", timeout=30)
    assert [path.name for path in root.rglob("*") if path.is_file()] == [hashlib.sha256(b"small").hexdigest()]
