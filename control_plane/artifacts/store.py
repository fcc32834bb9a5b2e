"""The artifact store: blobs named by the sha256 of their content under ``<root>/sha256/ab/abcdef…``.

Every write goes to a temporary file beside its final name and is renamed into place only after its
hash was checked and its bytes were flushed to disk, so a blob under a name is always complete. Every
read hashes what it returns and raises :class:`DataLoss` naming the stored file when the bytes no
longer match their name (bit rot, a truncated copy, someone editing the store by hand).

A blob nobody references (an upload whose registration never committed) is harmless: it is only ever
found through a reference, and writing the same content again replaces it with identical bytes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clients.errors import DataLoss, InvalidArgument, NotFound, ResourceExhausted
from clients.files import replace_when_done
from clients.uris import redact_uri
from control_plane.artifacts.backends import NO_ROOM_ERRNOS, Backend, backend_for
from control_plane.artifacts.moves import S3_SINGLE_COPY_LIMIT

#: Chunk size for streaming reads and writes (well under gRPC's 4 MiB default message limit).
CHUNK_SIZE = 1 << 20
#: A temporary upload file untouched this long is taken for the leftover of a crashed upload.
STALE_TEMP_AGE_S = 15 * 60.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ArtifactRef:
    """A stored blob: its content hash (lowercase hex), its size in bytes and where it lives (a path, or
    a URI without credentials: this is what model versions and run artifacts keep and give out)."""

    sha256: str
    size: int
    uri: str


def check_sha256(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits; ``InvalidArgument`` otherwise."""
    if not _SHA256.fullmatch(sha256):
        raise InvalidArgument(f"artifact hash must be 64 lowercase hex digits (sha256), got {sha256!r}")
    return sha256


def _file_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            yield chunk


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


class PendingBlob:
    """A blob being written: invisible under its name until :meth:`commit` checked its hash."""

    def __init__(self, expected_sha256: str, backend: Backend, relative: str) -> None:
        self.expected_sha256 = expected_sha256
        self._backend = backend
        self._relative = relative
        self._writer = backend.start_write(relative)
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)
        try:
            self._writer.write(chunk)
        except OSError as error:
            no_room = self._no_room(error)
            if no_room is None:
                raise
            raise no_room from error

    def _no_room(self, error: OSError) -> ResourceExhausted | None:
        """RESOURCE_EXHAUSTED for a filesystem out of room (INTERNAL read as a bug of the server, not as
        a full store its operator can make room in); None for any other failure."""
        if error.errno not in NO_ROOM_ERRNOS:
            return None
        return ResourceExhausted(
            f"the artifact store has no room for artifact sha256:{self.expected_sha256} (after "
            f"{self.size} bytes received, writing beside {self._backend.location(self._relative)}: "
            f"{error.strerror}); nothing was stored: free space in the store, then upload it again"
        )

    def commit(self) -> ArtifactRef:
        actual = self._digest.hexdigest()
        if actual != self.expected_sha256:
            self._writer.abort()
            raise DataLoss(
                f"artifact content does not match its declared sha256 {self.expected_sha256}: "
                f"the {self.size} bytes received hash to {actual}; nothing was stored"
            )
        try:
            self._writer.commit()  # flushes and fsyncs: may find the disk full too
        except OSError as error:
            self._writer.abort()
            no_room = self._no_room(error)
            if no_room is None:
                raise
            raise no_room from error
        except BaseException:
            self._writer.abort()
            raise
        return ArtifactRef(self.expected_sha256, self.size, self._backend.location(self._relative))

    def abort(self) -> None:
        self._writer.abort()


class ArtifactStore:
    """Content-addressed blobs under ``root``: a local path, or a pyarrow.fs URI (``s3://bucket/x``,
    ``file:///srv/artifacts``). Thread-safe: it keeps no state besides the root.

    Credentials in a URI root reach the store; nothing the store gives out (references, messages,
    ``root``) carries them. On S3, a blob over ``single_copy_limit`` bytes (by default the 5 GiB S3 copies
    at once) is moved from its temporary key by a streamed upload instead of one server-side copy."""

    def __init__(self, root: str, *, single_copy_limit: int = S3_SINGLE_COPY_LIMIT) -> None:
        self._backend: Backend = backend_for(root, single_copy_limit=single_copy_limit)
        self.root = redact_uri(root)  # for messages

    @staticmethod
    def _relative(sha256: str) -> str:
        return f"sha256/{sha256[:2]}/{sha256}"

    def location(self, sha256: str) -> str:
        """The stored file of blob ``sha256`` (present or not)."""
        return self._backend.location(self._relative(check_sha256(sha256)))

    # ------------------------------------------------------------------ writes

    def put_bytes(self, data: bytes) -> ArtifactRef:
        return self.put_stream([data], hashlib.sha256(data).hexdigest())

    def put_file(self, path: Path) -> ArtifactRef:
        """Stores a file's content. The file is read twice (hash, then copy); if it changes in between,
        the copy fails the hash check and nothing is stored."""
        return self.put_stream(_file_chunks(path), sha256_of_file(path))

    def put_stream(self, chunks: Iterable[bytes], expected_sha256: str) -> ArtifactRef:
        """Stores the concatenated ``chunks``, which must hash to ``expected_sha256``: otherwise nothing is
        stored and ``DataLoss`` says what arrived. The blob becomes visible only once complete."""
        pending = self.begin_put(expected_sha256)
        try:
            for chunk in chunks:
                pending.write(chunk)
        except BaseException:
            pending.abort()
            raise
        return pending.commit()

    def begin_put(self, expected_sha256: str) -> PendingBlob:
        """A blob written piece by piece (e.g. as upload chunks arrive): ``write`` each piece, then
        ``commit`` (checks the hash) or ``abort``."""
        relative = self._relative(check_sha256(expected_sha256))
        return PendingBlob(expected_sha256, self._backend, relative)

    # ------------------------------------------------------------------ reads

    def sweep_stale_temps(self, older_than_s: float = STALE_TEMP_AGE_S) -> int:
        """Removes the temporary files of uploads that never finished (a crash or a kill between their
        first write and their commit or abort) and were last written more than ``older_than_s`` ago; an
        upload stalled that long loses its file and fails at commit. Local stores only (see
        :meth:`ArrowBackend.sweep_temps`). Returns how many were removed."""
        return self._backend.sweep_temps(older_than_s)

    def stat(self, sha256: str) -> ArtifactRef:
        """The reference of a stored blob (without reading it); ``NotFound`` when it is absent."""
        relative = self._relative(check_sha256(sha256))
        size = self._backend.size(relative)
        if size is None:
            raise NotFound(f"artifact sha256:{sha256} not found in the artifact store {self.root}")
        return ArtifactRef(sha256, size, self._backend.location(relative))

    def exists(self, sha256: str) -> bool:
        return self._backend.size(self._relative(check_sha256(sha256))) is not None

    def iter_verified(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The blob's bytes in chunks. The hash is known only at the end, so the last step of the
        iteration raises ``DataLoss`` when the content does not match: consumers must treat what they
        received as provisional until the iteration finished (``fetch_to`` and ``open_verified`` do)."""
        ref = self.stat(sha256)
        digest = hashlib.sha256()
        size = 0
        for chunk in self._backend.read_chunks(self._relative(sha256), chunk_size):
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        if digest.hexdigest() != sha256:
            raise DataLoss(
                f"artifact file {ref.uri} is corrupt: its {size} bytes hash to sha256 "
                f"{digest.hexdigest()}, not the {sha256} it is stored under"
            )

    def verify(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> ArtifactRef:
        """Reads the whole blob and checks it against its hash, keeping none of it: its reference when it
        verifies, ``NotFound`` when it is absent, ``DataLoss`` when its bytes no longer match their name.
        Reads every byte (a large model takes a while): call it outside any database transaction."""
        ref = self.stat(sha256)
        try:
            for _ in self.iter_verified(sha256, chunk_size):
                pass
        except FileNotFoundError:  # removed between the stat and the read
            raise NotFound(f"artifact sha256:{sha256} not found in the artifact store {self.root}") from None
        return ref

    def open_verified(self, sha256: str) -> bytes:
        """The blob's whole content, checked against its hash."""
        return b"".join(self.iter_verified(sha256))

    def fetch_to(self, sha256: str, dest: Path) -> Path:
        """Copies the blob to ``dest`` (a temporary file beside it, renamed once the hash checked out, so
        ``dest`` never holds unverified bytes) and returns ``dest``."""
        dest = Path(dest)
        with replace_when_done(dest) as file:
            for chunk in self.iter_verified(sha256):
                file.write(chunk)
        return dest
