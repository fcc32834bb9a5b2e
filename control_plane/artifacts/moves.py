"""Moving a verified temporary object to its final name on a pyarrow filesystem, at any size.

pyarrow's ``move`` renames on a local filesystem (atomic, any size). On S3 it is one CopyObject, then a
delete of the source, and S3 refuses a CopyObject whose source is over 5 GiB (:data:`S3_SINGLE_COPY_LIMIT`).
pyarrow's S3 filesystem has no multipart copy (UploadPartCopy) and no way to abort an output stream: a
stream closed, even after a failure, publishes what it was given (so does one left to the garbage
collector). So above ``single_copy_limit`` the bytes are streamed from the temporary object into a new
multipart upload of the final key, which S3 shows only when complete, with these safeguards:

* A final object that already holds the same bytes is left alone, and the move is done: a failed copy
  over it would publish part of it in its place.
* When the copy fails and closing the stream published part of the bytes, that part is deleted. Every
  complete copy of a blob has exactly its size and a failed copy publishes fewer bytes, so this never
  deletes a whole blob. The final key ends as it was, or, if it held a corrupt blob, without it (reads
  of it failed with DATA_LOSS either way; uploading the content again stores it).
* Moves to one final key take turns within the process: a client retrying an upload cannot interleave
  its copy with the first one's.

A failure that stops the process (a crash, SIGKILL) publishes nothing: S3 never completes an upload its
client did not complete. What remains possible: two control-plane processes moving the same large blob
at once, one of them failing partway, can leave the final key without the blob until it is uploaded
again (never with wrong bytes that a read would not catch: every read checks the hash)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

#: The largest source S3 copies in one CopyObject (5 GiB).
S3_SINGLE_COPY_LIMIT = 5 * 1024**3
#: Bytes read from the temporary object per request while streaming a copy.
COPY_CHUNK = 8 << 20
#: Bytes after which a streaming copy waits for its uploaded parts (bounds the memory they hold).
_FLUSH_EVERY = 64 << 20


class _Turns:
    """One lock per key, kept while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


_turns = _Turns()


def move_into_place(fs: Any, temp: str, final: str, size: int, single_copy_limit: int) -> None:
    """Replaces ``final`` with the ``size`` bytes of ``temp`` (as a whole, or not at all) and removes
    ``temp``."""
    if fs.type_name != "s3" or size <= single_copy_limit:
        fs.move(temp, final)
        return
    with _turns.hold(final):
        if not _same_bytes(fs, final, temp, size):
            _stream_copy(fs, temp, final, size)
        fs.delete_file(temp)


def _digest(fs: Any, path: str) -> bytes:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.digest()


def _same_bytes(fs: Any, final: str, temp: str, size: int) -> bool:
    """Whether ``final`` already holds ``temp``'s bytes (read only when the sizes match: re-uploads of a
    stored blob, and the rare corrupt one of the right size)."""
    info = fs.get_file_info(final)
    if info.type != pafs.FileType.File or info.size != size:
        return False
    return bool(_digest(fs, final) == _digest(fs, temp))


def _stream_copy(fs: Any, temp: str, final: str, size: int) -> None:
    stream = fs.open_output_stream(final)
    copied = 0
    try:
        with fs.open_input_stream(temp) as source:
            while chunk := source.read(COPY_CHUNK):
                stream.write(chunk)
                copied += len(chunk)
                if copied % _FLUSH_EVERY < len(chunk):
                    stream.flush()  # waits for the parts in flight
        if copied != size:
            raise OSError(f"the temporary object {temp} holds {copied} bytes, not the {size} written")
    except BaseException:
        _discard(fs, stream, final, size)
        raise
    stream.close()  # completes the upload: the whole blob appears at once


def _discard(fs: Any, stream: Any, final: str, size: int) -> None:
    """Undoes a failed copy: closing the stream publishes what it holds (pyarrow cannot abort it) unless
    a part upload had failed; what was published is deleted (it is shorter than the blob)."""
    try:
        stream.close()
    except Exception:
        return  # the upload was not completed: nothing was published
    with contextlib.suppress(Exception):
        info = fs.get_file_info(final)
        if info.type == pafs.FileType.File and info.size != size:
            fs.delete_file(final)
