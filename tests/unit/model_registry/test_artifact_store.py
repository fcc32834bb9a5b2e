"""The content-addressed artifact store on a local folder, through pyarrow's filesystem (file://), and on
an object store (pyarrow's S3 client against a fake S3 endpoint), blobs over S3's single-copy limit too."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import DataLoss, InvalidArgument, NotFound, Unavailable
from control_plane.artifacts.backends import TEMP_PREFIX
from control_plane.artifacts.moves import COPY_CHUNK
from control_plane.artifacts.store import ArtifactStore
from tests.support.s3_server import FakeS3Server


@pytest.fixture(params=["local", "pyarrow"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    root = tmp_path / "artifacts"
    return ArtifactStore(str(root) if request.param == "local" else root.as_uri())


def stored_file(store: ArtifactStore, sha256: str) -> Path:
    return Path(store.location(sha256).removeprefix("file://"))


def test_blob_is_stored_under_its_hash_and_reads_back(store: ArtifactStore) -> None:
    data = b"weights" * 1000
    ref = store.put_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert (ref.sha256, ref.size) == (digest, len(data))
    path = stored_file(store, digest)
    assert path.parts[-3:] == ("sha256", digest[:2], digest)
    assert path.read_bytes() == data
    assert store.open_verified(digest) == data
    assert store.stat(digest) == ref
    assert [p.name for p in path.parent.iterdir()] == [digest]  # no temporary file left behind


def test_put_file_and_fetch_to(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(bytes(range(256)) * 5000)
    ref = store.put_file(source)
    dest = store.fetch_to(ref.sha256, tmp_path / "out" / "copy.onnx")
    assert dest.read_bytes() == source.read_bytes()


def test_corrupt_file_on_disk_is_data_loss_naming_it(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_bytes(b"a" * 3_000_000)
    path = stored_file(store, ref.sha256)
    corrupted = bytearray(path.read_bytes())
    corrupted[1_500_000] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    with pytest.raises(DataLoss, match=str(path)):
        store.open_verified(ref.sha256)
    dest = tmp_path / "dest.bin"
    with pytest.raises(DataLoss, match=ref.sha256):
        store.fetch_to(ref.sha256, dest)
    assert list(tmp_path.glob("*dest.bin*")) == []  # neither the file nor its partial copy


def test_verify_reads_the_whole_blob_and_keeps_none_of_it(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"b" * 3_000_000)
    assert store.verify(ref.sha256, chunk_size=1 << 16) == ref
    path = stored_file(store, ref.sha256)
    corrupted = bytearray(path.read_bytes())
    corrupted[-1] ^= 0xFF  # the last byte: only a read of the whole blob finds it
    path.write_bytes(bytes(corrupted))
    with pytest.raises(DataLoss, match=ref.sha256):
        store.verify(ref.sha256)
    path.unlink()
    with pytest.raises(NotFound, match=f"sha256:{ref.sha256} not found"):
        store.verify(ref.sha256)


def test_stream_not_matching_its_declared_hash_stores_nothing(store: ArtifactStore) -> None:
    declared = hashlib.sha256(b"expected").hexdigest()
    with pytest.raises(DataLoss, match="nothing was stored"):
        store.put_stream([b"something ", b"else"], declared)
    assert not store.exists(declared)
    assert list(stored_file(store, declared).parent.iterdir()) == []  # the temporary file is gone


def test_absent_and_malformed_hashes(store: ArtifactStore) -> None:
    with pytest.raises(NotFound, match="0" * 64):
        store.open_verified("0" * 64)
    with pytest.raises(InvalidArgument):
        store.stat("../../etc/passwd")
    with pytest.raises(InvalidArgument):
        store.put_stream([b"x"], "ABC")


def test_writing_the_same_content_twice_heals_a_corrupt_copy(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"model")
    stored_file(store, ref.sha256).write_bytes(b"m0del")
    store.put_bytes(b"model")
    assert store.open_verified(ref.sha256) == b"model"


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=6))
def test_chunked_put_equals_whole_put(tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]) -> None:
    store = ArtifactStore(str(tmp_path_factory.mktemp("store")))
    whole = b"".join(chunks)
    ref = store.put_stream(chunks, hashlib.sha256(whole).hexdigest())
    assert ref.size == len(whole)
    assert b"".join(store.iter_verified(ref.sha256, chunk_size=7)) == whole


@pytest.fixture
def s3() -> Iterator[FakeS3Server]:
    server = FakeS3Server()
    yield server
    server.close()


def _writes_to(s3: FakeS3Server, key: str) -> list[tuple[str, str, str]]:
    """The calls that wrote or deleted ``key``."""
    return [call for call in s3.requests if call[1] == key and call[0] in ("PUT", "POST", "DELETE")]


def test_a_failed_upload_to_an_object_store_leaves_the_stored_blob_alone(s3: FakeS3Server) -> None:
    # An S3 stream closed after a failure still publishes what it holds: a re-upload that is aborted
    # (the client went away) or refused (other bytes under the blob's hash) must neither replace nor
    # delete the blob a registered model points at.
    store = ArtifactStore(s3.uri("artifacts"))
    good = b"weights" * 1000
    ref = store.put_bytes(good)
    final_key = f"artifacts/sha256/{ref.sha256[:2]}/{ref.sha256}"
    s3.requests.clear()

    pending = store.begin_put(ref.sha256)
    pending.write(good[:100])
    pending.abort()
    with pytest.raises(DataLoss, match="nothing was stored"):
        store.put_stream([b"garbage"], ref.sha256)

    assert _writes_to(s3, final_key) == []
    assert store.open_verified(ref.sha256) == good
    assert [key for key in s3.objects if not key.endswith("/")] == [final_key]  # no temporary key left


def test_an_object_store_shows_a_blob_only_once_verified_and_a_re_upload_heals_it(s3: FakeS3Server) -> None:
    store = ArtifactStore(s3.uri("artifacts"))
    data = bytes(range(256)) * 100
    digest = hashlib.sha256(data).hexdigest()
    final_key = f"artifacts/sha256/{digest[:2]}/{digest}"
    pending = store.begin_put(digest)
    pending.write(data[:1000])
    pending.abort()  # a partial upload, published by the stream's close under some key
    assert not store.exists(digest) and _writes_to(s3, final_key) == []

    ref = store.put_bytes(data)
    assert store.open_verified(digest) == data and ref.size == len(data)
    s3.objects[final_key] = data[:1000]  # a truncated copy, e.g. left by an older version's failed upload
    store.put_bytes(data)
    assert store.open_verified(digest) == data


# Moves over S3's single-copy limit (5 GiB): the same paths with a limit of 1 MiB, which the fake
# endpoint enforces the way S3 does. Blobs span two of the mover's 8 MiB reads.
LIMIT = 1 << 20
LARGE = COPY_CHUNK + 3 * LIMIT + 123


@pytest.fixture
def small_copies() -> Iterator[FakeS3Server]:
    server = FakeS3Server(max_copy_size=LIMIT)
    yield server
    server.close()


def _temporary_keys(s3: FakeS3Server) -> list[str]:
    return [key for key in s3.objects if TEMP_PREFIX in key]


def test_a_blob_over_the_single_copy_limit_is_moved_by_a_streamed_upload(small_copies: FakeS3Server) -> None:
    s3 = small_copies
    store = ArtifactStore(s3.uri("artifacts"), single_copy_limit=LIMIT)
    data = os.urandom(LARGE)
    ref = store.put_bytes(data)
    final_key = f"artifacts/sha256/{ref.sha256[:2]}/{ref.sha256}"
    assert s3.objects[final_key] == data and store.open_verified(ref.sha256) == data
    assert _temporary_keys(s3) == []
    writes = _writes_to(s3, final_key)
    assert ("PUT", final_key, "") not in writes  # no CopyObject: a multipart upload, completed once
    assert [call for call in writes if call[0] == "POST"] == [
        ("POST", final_key, "uploads"),
        ("POST", final_key, "uploadId"),
    ]
    small = store.put_bytes(b"small")  # at or under the limit: one copy, as before
    assert ("PUT", f"artifacts/sha256/{small.sha256[:2]}/{small.sha256}", "") in s3.requests


def test_a_large_re_upload_leaves_an_intact_blob_alone_and_heals_a_corrupt_one(
    small_copies: FakeS3Server,
) -> None:
    s3 = small_copies
    store = ArtifactStore(s3.uri("artifacts"), single_copy_limit=LIMIT)
    data = os.urandom(LARGE)
    ref = store.put_bytes(data)
    final_key = f"artifacts/sha256/{ref.sha256[:2]}/{ref.sha256}"
    s3.requests.clear()
    store.put_bytes(data)
    assert _writes_to(s3, final_key) == [] and _temporary_keys(s3) == []
    s3.objects[final_key] = data[:-1] + bytes([data[-1] ^ 1])  # bit rot, same size
    store.put_bytes(data)
    assert s3.objects[final_key] == data and _temporary_keys(s3) == []


def test_a_large_move_failing_partway_leaves_no_half_blob_and_no_stored_blob_harmed(
    small_copies: FakeS3Server,
) -> None:
    s3 = small_copies
    store = ArtifactStore(s3.uri("artifacts"), single_copy_limit=LIMIT)
    stored, other = os.urandom(LARGE), os.urandom(LARGE)
    kept = store.put_bytes(stored)
    kept_key = f"artifacts/sha256/{kept.sha256[:2]}/{kept.sha256}"
    other_sha = hashlib.sha256(other).hexdigest()
    other_key = f"artifacts/sha256/{other_sha[:2]}/{other_sha}"
    s3.fail_reads(TEMP_PREFIX, from_offset=COPY_CHUNK)  # temporary objects break after their first read
    s3.requests.clear()

    with pytest.raises(Unavailable, match="ACCESS_DENIED"):
        store.put_bytes(other)  # the copy into a new key breaks after its first 8 MiB
    assert other_key not in s3.objects  # the part that closing the stream published was deleted again
    assert ("POST", other_key, "uploadId") in s3.requests and ("DELETE", other_key, "") in s3.requests
    with pytest.raises(Unavailable):
        store.put_bytes(stored)  # a re-upload over a stored blob, breaking while compared with it
    assert _writes_to(s3, kept_key) == [] and s3.objects[kept_key] == stored
    assert _temporary_keys(s3) == []
    assert not store.exists(other_sha) and store.open_verified(kept.sha256) == stored


def test_stale_temporary_files_of_a_local_store_are_swept(tmp_path: Path) -> None:
    """A crash between an upload's first write and its commit or abort left its file forever."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.put_bytes(b"weights")
    folder = stored_file(store, ref.sha256).parent
    stale, fresh = folder / f"{TEMP_PREFIX}crashed", folder / f"{TEMP_PREFIX}writing"
    stale.write_bytes(b"half an upload")
    fresh.write_bytes(b"an upload in another process")
    an_hour_ago = os.path.getmtime(fresh) - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert store.sweep_stale_temps() == 1
    assert not stale.exists() and fresh.exists()  # a live writer's file is left alone
    assert store.open_verified(ref.sha256) == b"weights"
    assert store.sweep_stale_temps(older_than_s=0) == 1 and not fresh.exists()


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask set to the parameter for the test (not left to the environment, where 0o077 would
    make every file 0o600 and hide the difference), then restored."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_a_blob_gets_the_mode_of_any_file_the_user_creates(store: ArtifactStore, umask: int) -> None:
    # mkstemp made every local blob 0o600, whatever the umask: a data plane or trainer running as another
    # user could not read the artifacts it was told to load.
    ref = store.put_bytes(b"weights")
    blob = stored_file(store, ref.sha256)
    ordinary = blob.parent / "ordinary"
    ordinary.write_bytes(b"")
    assert blob.stat().st_mode & 0o777 == ordinary.stat().st_mode & 0o777 == 0o666 & ~umask
