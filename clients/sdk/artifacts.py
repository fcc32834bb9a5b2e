"""Client of the control plane's artifact store (``aether.v1.Artifacts``): upload a file or bytes in
chunks, download to a path, both checked against the sha256 on each side.

A download is written to a temporary file beside the destination and renamed into place only after
the stream ended OK and the received bytes hashed to the requested sha256: the destination never holds
unverified bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import grpc

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import model_registry_pb2_grpc as pb_grpc
from clients.errors import DataLoss, from_rpc_error
from clients.files import replace_when_done
from clients.sdk.auth import ChannelSecurity, open_channel

#: Upload chunk size: well under gRPC's default 4 MiB message limit.
CHUNK_SIZE = 1 << 20


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _file_messages(path: Path, sha256: str, chunk_size: int) -> Iterator[pb.UploadArtifactRequest]:
    yield pb.UploadArtifactRequest(sha256=sha256)
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            yield pb.UploadArtifactRequest(data=chunk)


def _bytes_messages(data: bytes, sha256: str, chunk_size: int) -> Iterator[pb.UploadArtifactRequest]:
    yield pb.UploadArtifactRequest(sha256=sha256)
    for start in range(0, len(data), chunk_size):
        yield pb.UploadArtifactRequest(data=data[start : start + chunk_size])


class ArtifactClient:
    """Client of the artifact service at ``target`` (``host:port``; token and TLS from ``security``,
    by default from the environment), or over an existing ``channel`` (which it then does not close).
    ``metadata`` is sent with every call; ``timeout`` bounds each call in seconds (None: no bound, for
    very large artifacts)."""

    def __init__(
        self,
        target: str = "",
        *,
        channel: grpc.Channel | None = None,
        security: ChannelSecurity | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = 600.0,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else open_channel(target, security)
        self._stub = pb_grpc.ArtifactsStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = tuple(metadata)
        self.timeout = timeout
        self.chunk_size = chunk_size

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _upload(self, messages: Iterator[pb.UploadArtifactRequest]) -> pb.ArtifactRef:
        try:
            ref = self._stub.Upload(messages, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if not isinstance(ref, pb.ArtifactRef):
            raise TypeError(f"expected ArtifactRef, got {type(ref).__name__}")
        return ref

    def upload_file(self, path: Path) -> pb.ArtifactRef:
        """Uploads a file (hashed here first; the server stores it only if what arrives matches)."""
        path = Path(path)
        return self._upload(_file_messages(path, sha256_of_file(path), self.chunk_size))

    def upload_bytes(self, data: bytes) -> pb.ArtifactRef:
        return self._upload(_bytes_messages(data, hashlib.sha256(data).hexdigest(), self.chunk_size))

    def stat(self, sha256: str) -> pb.ArtifactRef:
        try:
            ref = self._stub.StatArtifact(
                pb.StatArtifactRequest(sha256=sha256), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if not isinstance(ref, pb.ArtifactRef):
            raise TypeError(f"expected ArtifactRef, got {type(ref).__name__}")
        return ref

    def download_to(self, sha256: str, dest: Path) -> Path:
        """Downloads blob ``sha256`` to ``dest`` and returns it; ``DataLoss`` when the stored bytes are
        corrupt (the server's message names the file) or arrive altered."""
        dest = Path(dest)
        digest = hashlib.sha256()
        try:
            with replace_when_done(dest) as file:
                request = pb.DownloadArtifactRequest(sha256=sha256)
                for chunk in self._stub.Download(request, timeout=self.timeout, metadata=self._metadata):
                    digest.update(chunk.data)
                    file.write(chunk.data)
                if digest.hexdigest() != sha256:
                    raise DataLoss(f"downloaded artifact hashes to {digest.hexdigest()}, not {sha256}")
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return dest

    def download_bytes(self, sha256: str) -> bytes:
        """The blob's content in memory, checked like :meth:`download_to`."""
        try:
            request = pb.DownloadArtifactRequest(sha256=sha256)
            stream = self._stub.Download(request, timeout=self.timeout, metadata=self._metadata)
            data = b"".join(chunk.data for chunk in stream)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DataLoss(f"downloaded artifact hashes to {hashlib.sha256(data).hexdigest()}, not {sha256}")
        return data
