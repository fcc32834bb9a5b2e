"""The offline store's boundary for filesystem errors: an OSError that pyarrow (or the OS) raises while
the store writes, lists, opens or compacts its files becomes ``clients.errors.offline_store_error``
(UNAVAILABLE for a failure that may pass, FAILED_PRECONDITION for a fault of the store's setup or files),
naming the store and the OS error; so does pyarrow's ArrowInvalid or a UnicodeDecodeError while a stored
file is read (a file whose bytes are not Parquet, or whose column names are not UTF-8), and
:class:`UndecodableFile` wherever it is raised. It fell through to INTERNAL with a logged traceback: a
full disk, a read-only volume or a view's folder replaced by a file read as a bug of the server. Only the
store's own operations are wrapped, so an OSError anywhere else still reads as the bug it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from clients.errors import OfflineStoreMisconfigured, OfflineStoreUnavailable, offline_store_error
from clients.uris import redact_uri


class UndecodableFile(ValueError):
    """A stored file whose footer does not decode, named in the message: a merged file's record that is
    not the JSON compaction wrote, or a footer pyarrow refuses. A fault of the file, never of the code,
    so :func:`store_errors` maps it in any block (FAILED_PRECONDITION): it was a JSONDecodeError,
    UnicodeDecodeError or KeyError out of every listing of the file's partition, INTERNAL, and the
    retraining loop (which acts on FAILED_PRECONDITION) failed every tick with no decision and no alert."""


@contextmanager
def decoding_footer(path: str) -> Iterator[None]:
    """Raises a ValueError of the block, which reads the footer of the stored file ``path``, as
    :class:`UndecodableFile` naming it: pyarrow's ArrowInvalid, a UnicodeDecodeError of a column name or
    of a record, a JSONDecodeError. An OSError (the filesystem's, which may pass) goes on as it is."""
    try:
        yield
    except UndecodableFile:
        raise
    except ValueError as exc:
        raise UndecodableFile(f"the footer of {path} does not decode: {type(exc).__name__}: {exc}") from exc


@contextmanager
def store_errors(
    root: str, doing: str, passing: tuple[type[OSError], ...] = (), decoding: bool = False
) -> Iterator[None]:
    """Raises an OSError of the block as the offline store's error (``root``: the store's root as
    configured, shown without credentials; ``doing``: what the store could not do, "write ..."). Those of
    ``passing`` go on as they are (a reader's FileNotFoundError, which the store answers itself). With
    ``decoding`` (a block that reads stored Parquet files), pyarrow's ArrowInvalid and a UnicodeDecodeError
    (of a column name in a footer) are the store's error too: a file whose bytes are not Parquet
    (FAILED_PRECONDITION), where elsewhere they are a bug. :class:`UndecodableFile` is, in any block."""
    try:
        yield
    except (OfflineStoreUnavailable, OfflineStoreMisconfigured):
        raise
    except passing:
        raise
    except (OSError, UndecodableFile) as exc:
        raise offline_store_error(redact_uri(root), doing, exc) from exc
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if not decoding:
            raise
        raise offline_store_error(redact_uri(root), doing, exc) from exc
