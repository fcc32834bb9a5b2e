"""The artifact service over real gRPC: chunked upload and download, checksums on both sides."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1.model_registry_pb2_grpc import ArtifactsStub
from clients.errors import DataLoss, InvalidArgument, NotFound
from clients.sdk.artifacts import MAX_CHUNK_SIZE, ArtifactClient
from tests.integration.model_registry.conftest import Plane

CHUNK = 64 * 1024


def stored_path(plane: Plane, sha256: str) -> Path:
    return plane.home / "artifacts" / "sha256" / sha256[:2] / sha256


def test_multi_chunk_upload_and_download_round_trip(plane: Plane, tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(os.urandom(5 * CHUNK + 123))  # six chunks, the last one short
    with ArtifactClient(plane.address, chunk_size=CHUNK) as client:
        ref = client.upload_file(source)
        assert ref.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        assert ref.size == source.stat().st_size
        assert stored_path(plane, ref.sha256).read_bytes() == source.read_bytes()
        dest = client.download_to(ref.sha256, tmp_path / "copy" / "model.onnx")
        assert dest.read_bytes() == source.read_bytes()
        assert client.stat(ref.sha256).size == ref.size
        assert client.upload_bytes(b"small").size == 5


def test_corrupt_stored_file_is_data_loss_naming_the_file(plane: Plane, tmp_path: Path) -> None:
    with ArtifactClient(plane.address, chunk_size=CHUNK) as client:
        ref = client.upload_bytes(b"x" * (3 * CHUNK))
        path = stored_path(plane, ref.sha256)
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        with pytest.raises(DataLoss, match=str(path)):
            client.download_to(ref.sha256, tmp_path / "dest.bin")
        assert list(tmp_path.glob("*dest.bin*")) == []  # no unverified bytes left at the destination


def test_upload_not_matching_its_declared_hash_is_refused(plane: Plane) -> None:
    declared = hashlib.sha256(b"the real weights").hexdigest()
    with grpc.insecure_channel(plane.address) as channel:
        stub = ArtifactsStub(channel)  # type: ignore[no-untyped-call]
        messages = [pb.UploadArtifactRequest(sha256=declared), pb.UploadArtifactRequest(data=b"tampered")]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Upload(iter(messages))
        assert caught.value.code() == grpc.StatusCode.DATA_LOSS
        with pytest.raises(grpc.RpcError) as caught:
            stub.Upload(iter([pb.UploadArtifactRequest(data=b"no hash first")]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not stored_path(plane, declared).exists()


def test_unknown_and_malformed_hashes(plane: Plane, tmp_path: Path) -> None:
    with ArtifactClient(plane.address) as client:
        with pytest.raises(NotFound):
            client.download_to("a" * 64, tmp_path / "x")
        with pytest.raises(InvalidArgument):
            client.stat("not-a-hash")


def test_concurrent_downloads_to_one_destination_leave_one_whole_blob(plane: Plane, tmp_path: Path) -> None:
    """Two workers fetching different versions into one path: the destination always holds one of the
    blobs, whole (with one fixed temporary name they wrote into the same file, and one of them renamed
    the mixture into place after checking only its own bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    blobs = [os.urandom(8 * CHUNK), os.urandom(8 * CHUNK)]
    dest = tmp_path / "shared" / "model.onnx"
    with ArtifactClient(plane.address, chunk_size=CHUNK) as client:
        refs = [client.upload_bytes(blob).sha256 for blob in blobs]
        with ThreadPoolExecutor(2) as pool:
            for _ in range(5):
                list(pool.map(lambda sha: client.download_to(sha, dest), refs))
                assert dest.read_bytes() in blobs
    assert [p.name for p in dest.parent.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_uploads_cancelled_midway_leave_no_temporary_file(plane: Plane) -> None:
    """The abort after a client's cancel was itself cancelled in 4 of 10 tries: the file stayed."""
    temps_before = set(plane.home.glob("artifacts/sha256/*/.tmp-*"))
    with grpc.insecure_channel(plane.address) as channel:
        stub = ArtifactsStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(10):
            data = os.urandom(2 * CHUNK)
            gate = threading.Event()

            def messages(
                data: bytes = data, gate: threading.Event = gate
            ) -> Iterator[pb.UploadArtifactRequest]:
                yield pb.UploadArtifactRequest(sha256=hashlib.sha256(data).hexdigest())
                yield pb.UploadArtifactRequest(data=data[:CHUNK])
                gate.wait(5)  # the client stalls, then gives up

            call = stub.Upload.future(messages())
            deadline = time.monotonic() + 5
            while (
                time.monotonic() < deadline
                and set(plane.home.glob("artifacts/sha256/*/.tmp-*")) == temps_before
            ):
                time.sleep(0.01)  # until the server has started the upload's file
            time.sleep(0.05)
            call.cancel()
            gate.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(plane.home.glob("artifacts/sha256/*/.tmp-*")) != temps_before:
        time.sleep(0.05)
    assert set(plane.home.glob("artifacts/sha256/*/.tmp-*")) == temps_before


def test_upload_chunk_size_is_checked_when_the_client_is_made(plane: Plane) -> None:
    """A chunk over the server's 4 MiB message limit failed every upload RESOURCE_EXHAUSTED ("Received
    message larger than max"), and 0 sent no bytes, refused as DATA_LOSS as if they had been corrupted."""
    for wrong in (0, -1, 4 << 20):
        with pytest.raises(InvalidArgument, match=f"chunk_size: expected 1 to {MAX_CHUNK_SIZE}.*got {wrong}"):
            ArtifactClient(plane.address, chunk_size=wrong)
    data = os.urandom(2 * MAX_CHUNK_SIZE + 1)
    with ArtifactClient(plane.address, chunk_size=MAX_CHUNK_SIZE) as client:  # the largest allowed fits
        assert client.upload_bytes(data).size == len(data)
        assert client.download_bytes(hashlib.sha256(data).hexdigest()) == data
