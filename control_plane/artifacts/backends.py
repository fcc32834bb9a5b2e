"""Where the artifact store's bytes live: a local folder (plain ``os`` calls, so every write can be
fsynced) or any filesystem ``pyarrow.fs`` reaches by URI (``s3://``, ``gs://``, ``file://``...).

Both offer the same four primitives on paths relative to the store's root: write a file atomically
(a temporary file in the destination folder, then a rename, so a reader never sees half a file and a
crash leaves at worst a stray temporary file), stream a file's chunks, tell its size, and name it.

Object stores (S3, GCS) follow the same path: a temporary key, then ``move`` (there a server-side copy,
which replaces the final key whole, then a delete of the temporary key). Never the final key directly:
their output stream publishes whatever it holds when closed, even after a failure, so a failed upload
would overwrite the blob already stored under that name, and discarding it would delete that blob."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs as pafs

TEMP_PREFIX = ".tmp-"


class AtomicWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None:
        """Makes the file visible under its final name (durably, where the filesystem allows)."""
        ...

    def abort(self) -> None:
        """Discards what was written; the final name is untouched."""
        ...


class Backend(Protocol):
    def start_write(self, relative: str) -> AtomicWriter: ...

    def read_chunks(self, relative: str, chunk_size: int) -> Iterator[bytes]:
        """The file's bytes in chunks; ``FileNotFoundError`` when it is absent."""
        ...

    def size(self, relative: str) -> int | None:
        """The file's size, ``None`` when it is absent."""
        ...

    def location(self, relative: str) -> str:
        """The file's full name, for messages and artifact URIs."""
        ...


class _LocalWriter:
    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self._final = final
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=final.parent)
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._final)
        # The rename itself lives in the folder: without this fsync a power loss could forget it.
        dir_fd = os.open(self._final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def abort(self) -> None:
        self._file.close()
        self._temp.unlink(missing_ok=True)


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    def start_write(self, relative: str) -> AtomicWriter:
        return _LocalWriter(self.root / relative)

    def read_chunks(self, relative: str, chunk_size: int) -> Iterator[bytes]:
        with open(self.root / relative, "rb") as file:
            while chunk := file.read(chunk_size):
                yield chunk

    def size(self, relative: str) -> int | None:
        try:
            return (self.root / relative).stat().st_size
        except FileNotFoundError:
            return None

    def location(self, relative: str) -> str:
        return str(self.root / relative)


class _ArrowWriter:
    def __init__(self, fs: Any, final: str) -> None:
        self._fs = fs
        self._final = final
        parent, name = final.rsplit("/", 1)
        fs.create_dir(parent, recursive=True)
        self._temp = f"{parent}/{TEMP_PREFIX}{os.urandom(8).hex()}-{name}"
        self._stream = fs.open_output_stream(self._temp)

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def commit(self) -> None:
        self._stream.close()
        # Only verified bytes reach the final name. On S3 this is one CopyObject (at most 5 GiB, S3's
        # limit for a single copy), which readers see all at once, and it replaces the object already
        # there: a blob that had been truncated or altered heals when its content is uploaded again.
        self._fs.move(self._temp, self._final)

    def abort(self) -> None:
        # Closing an object store's stream may publish what it holds, but under the temporary key, which
        # is removed either way; the final key is never touched.
        with contextlib.suppress(Exception):
            self._stream.close()
        with contextlib.suppress(Exception):
            self._fs.delete_file(self._temp)


class ArrowBackend:
    """A pyarrow filesystem: a local one, or an object store (S3, GCS) reached by URI."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self._fs, path = pafs.FileSystem.from_uri(uri)
        self._root = path.rstrip("/")

    def _path(self, relative: str) -> str:
        return f"{self._root}/{relative}"

    def start_write(self, relative: str) -> AtomicWriter:
        return _ArrowWriter(self._fs, self._path(relative))

    def read_chunks(self, relative: str, chunk_size: int) -> Iterator[bytes]:
        with self._fs.open_input_stream(self._path(relative)) as stream:
            while chunk := stream.read(chunk_size):
                yield bytes(chunk)

    def size(self, relative: str) -> int | None:
        info = self._fs.get_file_info(self._path(relative))
        if info.type == pafs.FileType.NotFound:
            return None
        return int(info.size)

    def location(self, relative: str) -> str:
        return f"{self.uri}/{relative}"


def backend_for(root: str) -> Backend:
    """A local folder for a plain path, a pyarrow filesystem for a URI (``scheme://...``)."""
    if "://" in root:
        return ArrowBackend(root)
    return LocalBackend(Path(root))
