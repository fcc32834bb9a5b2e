"""The offline store's boundary for filesystem errors: an OSError that pyarrow (or the OS) raises while
the store writes, lists, opens or compacts its files becomes ``clients.errors.offline_store_error``
(UNAVAILABLE for a failure that may pass, FAILED_PRECONDITION for a fault of the store's setup or files),
naming the store and the OS error; so does pyarrow's ArrowInvalid while a stored file is read (a file
whose bytes are not Parquet). It fell through to INTERNAL with a logged traceback: a full disk, a
read-only volume or a view's folder replaced by a file read as a bug of the server. Only the store's own
operations are wrapped, so an OSError anywhere else still reads as the bug it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from clients.errors import OfflineStoreMisconfigured, OfflineStoreUnavailable, offline_store_error
from clients.uris import redact_uri


@contextmanager
def store_errors(
    root: str, doing: str, passing: tuple[type[OSError], ...] = (), decoding: bool = False
) -> Iterator[None]:
    """Raises an OSError of the block as the offline store's error (``root``: the store's root as
    configured, shown without credentials; ``doing``: what the store could not do, "write ..."). Those of
    ``passing`` go on as they are (a reader's FileNotFoundError, which the store answers itself). With
    ``decoding`` (a block that reads stored Parquet files), pyarrow's ArrowInvalid is the store's error
    too: a file whose bytes are not Parquet (FAILED_PRECONDITION), where elsewhere it is a bug."""
    try:
        yield
    except (OfflineStoreUnavailable, OfflineStoreMisconfigured):
        raise
    except passing:
        raise
    except OSError as exc:
        raise offline_store_error(redact_uri(root), doing, exc) from exc
    except pa.ArrowInvalid as exc:
        if not decoding:
            raise
        raise offline_store_error(redact_uri(root), doing, exc) from exc
