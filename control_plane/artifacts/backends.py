"""Where the artifact store's bytes live: a local folder (plain ``os`` calls, so every write can be
fsynced) or any filesystem ``pyarrow.fs`` reaches by URI (``s3://``, ``gs://``, ``file://``...).

Both offer the same four primitives on paths relative to the store's root: write a file atomically
(a temporary file in the destination folder, then a rename, so a reader never sees half a file and a
crash leaves at worst a stray temporary file), stream a file's chunks, tell its size, and name it."""

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
    def __init__(self, fs: Any, final: str, direct: bool) -> None:
        self._fs = fs
        self._final = final
        parent = final.rsplit("/", 1)[0]
        fs.create_dir(parent, recursive=True)
        name = final.rsplit("/", 1)[1]
        self._target = final if direct else f"{parent}/{TEMP_PREFIX}{os.urandom(8).hex()}-{name}"
        self._stream = fs.open_output_stream(self._target)

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def commit(self) -> None:
        self._stream.close()
        if self._target != self._final:
            self._fs.move(self._target, self._final)

    def abort(self) -> None:
        # An object store publishes an object only when its upload completes; a stream closed after a
        # failure may still publish what it holds, so the target is removed either way.
        with contextlib.suppress(Exception):
            self._stream.close()
        with contextlib.suppress(Exception):
            self._fs.delete_file(self._target)


class ArrowBackend:
    """A pyarrow filesystem. Object stores (S3, GCS) make an object visible only once its upload
    completes, so there the final key is written directly; elsewhere a temporary file is renamed."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self._fs, path = pafs.FileSystem.from_uri(uri)
        self._root = path.rstrip("/")
        self._direct = self._fs.type_name in {"s3", "gcs"}

    def _path(self, relative: str) -> str:
        return f"{self._root}/{relative}"

    def start_write(self, relative: str) -> AtomicWriter:
        return _ArrowWriter(self._fs, self._path(relative), self._direct)

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
