"""Publishing a file on an object store whole or not at all.

pyarrow's S3 output stream completes its upload when it is closed, even when the writing raised: a
``with filesystem.open_output_stream(final)`` whose write fails part-way (an encoder's error, a dropped
connection, a signal) publishes the part it had under ``final``, over the previous object. So a file is
published here in steps (:func:`publish_whole`), which an ingested data file
(``data_file_writes.write_whole_file``), compaction's merged files (``compaction._merge``), a training
set's ``output_path`` copy and a dataset record (``datasets``) share:

1. it is written whole to a local temporary file in :func:`upload_temp_folder` (``aether-upload-*.tmp``;
   a compaction pass's are ``aether-compact-*.tmp``): a write that fails leaves nothing on the store;
2. it is uploaded under a hidden name next to its final one (a leading ``.``, which no reader lists) and
   its size and tail (a Parquet file's footer) read back there (:func:`stage`): an upload that fails, or
   does not read back as written, is removed and raises;
3. it is copied to its final name server-side (one CopyObject: the object appears whole, or not at all),
   and the hidden one removed.

What a crash leaves: a local temporary file, removed at the control plane's start once past
``STALE_TEMP_AGE_S`` (:func:`sweep_stale_upload_temps`); a hidden staged object, which its owner's
sweep removes (a merged or a data file's: the partition's next compaction pass; a copy or a record:
``datasets.sweep_stale_copies`` and ``OfflineStore.sweep_stale_temps``); an unfinished upload, never
visible, which the bucket's lifecycle rule for incomplete multipart uploads removes.

One limit: S3 copies at most :data:`S3_SINGLE_COPY_LIMIT` bytes in one CopyObject. A file larger than
that (only a training set's copy can be: compaction keeps its runs below it) is uploaded from the
complete local file straight to its final name: a failing write of its rows still leaves the previous
object as it was (step 1), but an upload cut off part-way is not covered.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

#: A temporary file untouched this long is a dead writer's (the sweeps of the offline store, of the
#: datasets root and of :func:`upload_temp_folder`), as in the artifact store.
STALE_TEMP_AGE_S = 15 * 60.0

#: The local temporary file of a publish, before its upload.
UPLOAD_TEMP_PREFIX = "aether-upload-"
#: A compaction pass's (``compaction._merge``): swept alike.
COMPACT_TEMP_PREFIX = "aether-compact-"
_UPLOAD_CHUNK = 8 << 20
_READ_BACK_TRIES = 3
_READ_BACK_PAUSE_S = 0.5
#: The most of a non-Parquet file read back whole (a dataset record is a few KiB).
_READ_BACK_TAIL = 1 << 20
#: The largest object S3 copies in one CopyObject (5 GiB).
S3_SINGLE_COPY_LIMIT = 5 * 1024**3


def upload_temp_folder() -> Path:
    """Where a file bound for an object store is written whole before its upload."""
    return Path(tempfile.gettempdir())


def local_upload_temp(prefix: str = UPLOAD_TEMP_PREFIX) -> str:
    """A fresh name for a local temporary file in :func:`upload_temp_folder`."""
    return f"{upload_temp_folder()}/{prefix}{uuid.uuid4().hex}.tmp"


def sweep_stale_upload_temps(older_than_s: float = STALE_TEMP_AGE_S) -> int:
    """Removes the local temporary files that processes killed before their upload ended left in
    :func:`upload_temp_folder` (``aether-upload-*.tmp`` and ``aether-compact-*.tmp``, its top level only)
    and that were last written more than ``older_than_s`` ago (a younger one may be a live writer's);
    returns how many."""
    cutoff = time.time() - older_than_s
    removed = 0
    for prefix in (UPLOAD_TEMP_PREFIX, COMPACT_TEMP_PREFIX):
        for path in upload_temp_folder().glob(f"{prefix}*.tmp"):
            with contextlib.suppress(FileNotFoundError):  # its writer finished meanwhile
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    return removed


def publish_whole(
    filesystem: pafs.FileSystem, final: str, staged: str, write: Callable[[BinaryIO], object]
) -> None:
    """Publishes what ``write`` writes to the file it is given as ``final`` on the object store
    ``filesystem``, staged under the hidden name ``staged`` (module doc). Raises what ``write`` raised
    (nothing was uploaded then), or the store's OSError (nothing was published, unless the copy itself
    reported a failure after creating ``final``: then ``final`` is a whole copy of the checked bytes)."""
    local = local_upload_temp()
    try:
        with open(local, "wb") as sink:
            write(sink)
        size = os.path.getsize(local)
        if filesystem.type_name == "s3" and size > S3_SINGLE_COPY_LIMIT:
            _upload(filesystem, local, final)  # too large to copy at once (module doc)
            return
        stage(filesystem, local, staged)
        try:
            filesystem.copy_file(staged, final)
        finally:
            discard_staged(filesystem, staged)
    finally:
        Path(local).unlink(missing_ok=True)


def stage(filesystem: pafs.FileSystem, local: str, staged: str) -> None:
    """Uploads the complete local file ``local`` as ``staged`` (a hidden name, which readers skip) and
    reads its size and tail back. An upload that fails, or does not read back as written, is removed and
    raises: it was never visible. A file over :data:`S3_SINGLE_COPY_LIMIT` on S3 is refused (OSError),
    since it could not be copied to its name at once."""
    size = os.path.getsize(local)
    if filesystem.type_name == "s3" and size > S3_SINGLE_COPY_LIMIT:
        raise OSError(f"a file of {size} bytes is over the {S3_SINGLE_COPY_LIMIT} S3 copies at once")
    try:
        _upload(filesystem, local, staged)
        check_staged(filesystem, local, size, staged)
    except BaseException:
        discard_staged(filesystem, staged)
        raise


def _upload(filesystem: pafs.FileSystem, local: str, key: str) -> None:
    with open(local, "rb") as source, filesystem.open_output_stream(key) as sink:
        while chunk := source.read(_UPLOAD_CHUNK):
            sink.write(chunk)


def check_staged(filesystem: pafs.FileSystem, local: str, size: int, staged: str) -> None:
    """``staged`` must hold ``size`` bytes and end as the local file ``local`` does: a Parquet file's
    footer (the schema, a merged file's record of its run, every row group's place and length), or up to
    1 MiB of any other file (a dataset record whole). A read that fails is tried again a few times (a
    dropped connection, a throttled request) before giving up."""
    tail = _tail_length(local, size)
    with open(local, "rb") as source:
        source.seek(size - tail)
        expected = source.read(tail)
    for attempt in range(_READ_BACK_TRIES):
        try:
            with filesystem.open_input_file(staged) as found_file:
                found_size = int(found_file.size())
                found = found_file.read_at(tail, size - tail) if found_size == size else b""
            break
        except FileNotFoundError:
            found_size, found = -1, b""
            break
        except OSError:
            if attempt + 1 == _READ_BACK_TRIES:
                raise
            time.sleep(_READ_BACK_PAUSE_S * (attempt + 1))
    if found_size != size or bytes(found) != expected:
        # EIO: an upload that may read back whole when tried again, so UNAVAILABLE (offline_store_error
        # reads an OSError's errno first).
        raise OSError(
            errno.EIO, f"the file uploaded as {staged} did not read back as written; it was removed"
        )


def _tail_length(local: str, size: int) -> int:
    if size >= 12:
        with open(local, "rb") as source:
            source.seek(size - 8)
            footer = source.read(8)
        if footer[4:] == b"PAR1":
            return min(size, int.from_bytes(footer[:4], "little") + 8)
    return min(size, _READ_BACK_TAIL)


def discard_staged(filesystem: pafs.FileSystem, staged: str) -> None:
    """Removes a staged object, quietly: left behind, it is hidden, and its owner's sweep removes it."""
    with contextlib.suppress(OSError):
        filesystem.delete_file(staged)
