"""Client of the control plane's artifact store (``aether.v1.Artifacts``): upload a file or bytes in
chunks, download to a path, both checked against the sha256 on each side.

A download is written to a temporary file beside the destination and renamed into place only after
the stream ended OK and the received bytes hashed to the requested sha256: the destination never holds
unverified bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import model_registry_pb2_grpc as pb_grpc
from clients.errors import DataLoss, InvalidArgument, from_rpc_error
from clients.files import replace_when_done
from clients.sdk.auth import ChannelSecurity
from clients.sdk.service_client import ServiceClient

#: Upload chunk size: well under gRPC's default 4 MiB message limit.
CHUNK_SIZE = 1 << 20
#: The largest upload chunk: the control plane takes messages of up to gRPC's default 4 MiB, and a chunk
#: travels with a few bytes of framing (1 KiB left for them).
MAX_CHUNK_SIZE = (4 << 20) - 1024


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


class ArtifactClient(ServiceClient):
    """Client of the artifact service at ``target`` (``host:port``): ``security``, ``actor`` and
    ``channel`` as for every :class:`ServiceClient` (another client's :meth:`ServiceClient.sharing`
    gives one over its channel); ``timeout`` bounds each call in seconds (None: no bound, for very large
    artifacts)."""

    DEFAULT_TIMEOUT_S = 600.0

    def __init__(
        self,
        target: str = "",
        *,
        security: ChannelSecurity | None = None,
        actor: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        chunk_size: int = CHUNK_SIZE,
        channel: grpc.Channel | None = None,
    ) -> None:
        super().__init__(target, security=security, actor=actor, channel=channel)
        self.timeout = timeout  # unlike other clients', None means no bound here
        # Checked here: a chunk over the server's message limit failed every upload RESOURCE_EXHAUSTED
        # ("Received message larger than max"), and 0 sent no bytes at all, refused as DATA_LOSS.
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidArgument(
                f"chunk_size: expected 1 to {MAX_CHUNK_SIZE} bytes (the control plane takes messages of"
                f" up to 4 MiB), got {chunk_size}"
            )
        self.chunk_size = chunk_size

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.ArtifactsStub(self._channel)  # type: ignore[no-untyped-call]

    def _upload(self, messages: Iterator[pb.UploadArtifactRequest]) -> pb.ArtifactRef:
        return self._call_streaming(self._stub.Upload, messages, pb.ArtifactRef)

    def upload_file(self, path: Path) -> pb.ArtifactRef:
        """Uploads a file (hashed here first; the server stores it only if what arrives matches)."""
        path = Path(path)
        return self._upload(_file_messages(path, sha256_of_file(path), self.chunk_size))

    def upload_bytes(self, data: bytes) -> pb.ArtifactRef:
        return self._upload(_bytes_messages(data, hashlib.sha256(data).hexdigest(), self.chunk_size))

    def stat(self, sha256: str) -> pb.ArtifactRef:
        return self._call(self._stub.StatArtifact, pb.StatArtifactRequest(sha256=sha256), pb.ArtifactRef)

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
