"""Where the artifact store's bytes live: a local folder (plain ``os`` calls, so every write can be
fsynced) or any filesystem ``pyarrow.fs`` reaches by URI (``s3://``, ``gs://``, ``file://``...).

Both offer the same four primitives on paths relative to the store's root: write a file atomically
(a temporary file in the destination folder, then a rename, so a reader never sees half a file and a
crash leaves at worst a stray temporary file), stream a file's chunks, tell its size, and name it.

Object stores (S3, GCS) follow the same path: a temporary key, then a move (there a server-side copy,
which replaces the final key whole, then a delete of the temporary key; on S3, above the 5 GiB a single
copy may hold, a streamed upload: see :mod:`control_plane.artifacts.moves`). Never the final key directly:
their output stream publishes whatever it holds when closed, even after a failure, so a failed upload
would overwrite the blob already stored under that name, and discarding it would delete that blob.

A URI may carry credentials (``s3://KEY:SECRET@bucket/prefix``). They are used to reach the store and
never shown: names given out (``location``, which ends up in artifact URIs kept in the database and
returned by the APIs) and error messages use :func:`clients.uris.redact_uri`'s form of the URI."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pyarrow as pa
import pyarrow.fs as pafs

from clients.errors import InvalidArgument, Unavailable
from clients.uris import MISPLACED_CREDENTIALS, misplaced_credentials, redact_text, redact_uri
from control_plane.artifacts.moves import S3_SINGLE_COPY_LIMIT, move_into_place

TEMP_PREFIX = ".tmp-"
#: What a filesystem out of room for a file says: no space left, a quota reached, a file-size limit. The
#: store's writer turns these into RESOURCE_EXHAUSTED (:class:`~control_plane.artifacts.store.PendingBlob`).
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_log = logging.getLogger("aether.artifacts")


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

    def sweep_temps(self, older_than_s: float) -> int:
        """Removes temporary files last written more than ``older_than_s`` ago; returns how many."""
        ...

    def read_chunks(self, relative: str, chunk_size: int) -> Iterator[bytes]:
        """The file's bytes in chunks; ``FileNotFoundError`` when it is absent."""
        ...

    def size(self, relative: str) -> int | None:
        """The file's size, ``None`` when it is absent."""
        ...

    def location(self, relative: str) -> str:
        """The file's full name, for messages and artifact URIs (never with credentials)."""
        ...


#: Names tried for a temporary file before giving up (as ``tempfile``'s TMP_MAX).
_TEMP_ATTEMPTS = 10_000


def _create_temp(folder: Path) -> tuple[int, Path]:
    """A new, empty temporary file in ``folder``, open for writing. Created with mode 0o666, as ``open``
    creates files, so the umask (and a default ACL) gives the blob the mode any file the user writes gets:
    ``mkstemp``'s 0o600 kept blobs from a data plane or trainer running as another user. ``O_EXCL``
    neither follows a link nor reuses a file put there first."""
    for _ in range(_TEMP_ATTEMPTS):
        temp = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary file name in {folder}")


class _LocalWriter:
    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self._final = final
        fd, self._temp = _create_temp(final.parent)
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
        # Closing flushes what the buffer still holds, which fails again when the write failed for want
        # of space (ENOSPC, EDQUOT, EFBIG): the file is discarded all the same, or it kept that space.
        try:
            with contextlib.suppress(OSError):
                self._file.close()
        finally:
            self._temp.unlink(missing_ok=True)


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    def start_write(self, relative: str) -> AtomicWriter:
        return _LocalWriter(self.root / relative)

    def sweep_temps(self, older_than_s: float) -> int:
        # Only old ones: another process (a second control plane, a trainer's put_file) may be writing
        # one right now, and a live writer touches its file with every chunk.
        cutoff = time.time() - older_than_s
        removed = 0
        for temp in self.root.glob(f"*/*/{TEMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if temp.is_file() and temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
        return removed

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


Reported = Callable[[], AbstractContextManager[None]]


class _ArrowWriter:
    def __init__(self, fs: Any, final: str, reported: Reported, single_copy_limit: int) -> None:
        self._fs = fs
        self._final = final
        self._reported = reported
        self._single_copy_limit = single_copy_limit
        self._size = 0
        parent, name = final.rsplit("/", 1)
        self._temp = f"{parent}/{TEMP_PREFIX}{os.urandom(8).hex()}-{name}"
        with reported():
            fs.create_dir(parent, recursive=True)
            self._stream = fs.open_output_stream(self._temp)

    def write(self, data: bytes) -> None:
        with self._reported():
            self._stream.write(data)
        self._size += len(data)

    def commit(self) -> None:
        with self._reported():
            self._stream.close()
            # Only verified bytes reach the final name, all at once, replacing the object already there:
            # a blob that had been truncated or altered heals when its content is uploaded again.
            move_into_place(self._fs, self._temp, self._final, self._size, self._single_copy_limit)

    def abort(self) -> None:
        # Closing an object store's stream may publish what it holds, but under the temporary key, which
        # is removed either way; the final key is never touched.
        with contextlib.suppress(Exception):
            self._stream.close()
        with contextlib.suppress(Exception):
            self._fs.delete_file(self._temp)


class ArrowBackend:
    """A pyarrow filesystem: a local one, or an object store (S3, GCS) reached by URI. On S3, a blob over
    ``single_copy_limit`` bytes is moved into place by a streamed upload instead of one CopyObject."""

    def __init__(self, uri: str, *, single_copy_limit: int = S3_SINGLE_COPY_LIMIT) -> None:
        self._uri = uri  # with its credentials, if any: only ever given to pyarrow
        self._single_copy_limit = single_copy_limit
        try:
            if misplaced_credentials(uri):
                raise ValueError(MISPLACED_CREDENTIALS)
            self._fs, path = pafs.FileSystem.from_uri(uri)
        except (OSError, ValueError, pa.ArrowException) as exc:
            # pyarrow quotes the whole URI when it cannot parse it, and a URI it cannot parse may hide a
            # credential where redact_uri cannot find it (a secret key with a raw '/'): never show it.
            detail = redact_text(str(exc).replace(uri, "<the URI>"), uri)
            raise InvalidArgument(
                "the artifact store's URI (not shown: it may hold credentials) cannot be opened: "
                f"{detail}. Percent-encode '/', '+', ':' and '@' in credentials written into the URI, "
                "or leave them out and give them the way the filesystem's client reads them from the "
                "environment (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)"
            ) from None
        self._root = path.rstrip("/")
        # The name given out: without credentials, and with the blob's path before the query string
        # (``s3://bucket/prefix/sha256/ab/…?endpoint_override=…``), so that pyarrow can open it.
        shown = redact_uri(uri)
        cut = min((at for at in (shown.find("?"), shown.find("#")) if at != -1), default=len(shown))
        self._shown_base, self._shown_query = shown[:cut].rstrip("/"), shown[cut:]
        self.shown = self._shown_base + self._shown_query

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        """Turns the object store's failures into UNAVAILABLE naming the store, without its credentials
        (pyarrow's messages name buckets and keys; scrubbing them costs nothing and keeps it so). A
        filesystem out of room (:data:`NO_ROOM_ERRNOS`) is no outage that a retry outlasts: its error goes
        on unchanged, for the writer to report RESOURCE_EXHAUSTED."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno in NO_ROOM_ERRNOS:
                raise  # a full store, not an outage to retry: the writer says RESOURCE_EXHAUSTED
            self._unavailable(exc)
        except pa.ArrowException as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: Exception) -> NoReturn:
        message = f"artifact store {self.shown}: {redact_text(str(exc), self._uri)}"
        _log.warning("%s", message)
        raise Unavailable(message) from None

    def sweep_temps(self, older_than_s: float) -> int:
        # Not swept: listing a whole bucket at every start costs too much. On an object store, expire
        # the `.tmp-` keys with a lifecycle rule instead.
        return 0

    def _path(self, relative: str) -> str:
        return f"{self._root}/{relative}"

    def start_write(self, relative: str) -> AtomicWriter:
        return _ArrowWriter(self._fs, self._path(relative), self._reported, self._single_copy_limit)

    def read_chunks(self, relative: str, chunk_size: int) -> Iterator[bytes]:
        with self._reported(), self._fs.open_input_stream(self._path(relative)) as stream:
            while chunk := stream.read(chunk_size):
                yield bytes(chunk)

    def size(self, relative: str) -> int | None:
        with self._reported():
            info = self._fs.get_file_info(self._path(relative))
        if info.type == pafs.FileType.NotFound:
            return None
        return int(info.size)

    def location(self, relative: str) -> str:
        return f"{self._shown_base}/{relative}{self._shown_query}"


def backend_for(root: str, *, single_copy_limit: int = S3_SINGLE_COPY_LIMIT) -> Backend:
    """A local folder for a plain path, a pyarrow filesystem for a URI (``scheme://...``)."""
    if "://" in root:
        return ArrowBackend(root, single_copy_limit=single_copy_limit)
    return LocalBackend(Path(root))
