"""The content-addressed artifact store on a local folder and through pyarrow's filesystem (file://)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import DataLoss, InvalidArgument, NotFound
from control_plane.artifacts.store import ArtifactStore


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
