"""A batch run's Parquet source, read a chunk at a time (:func:`parquet_batches`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from clients.errors import InvalidArgument
from clients.uris import redact_text, redact_uri

PARQUET_BATCH_ROWS = 65_536  # rows per chunk: a run stores, counts and checks its view a chunk at a time


def parquet_batches(path: str, batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[pa.Table]:
    """The file's rows a chunk at a time. A file that cannot be read is ``InvalidArgument``; only the
    reading is covered, so an Arrow error of validation or of a store is never reported as a bad file.
    Arrow reports a cut-off or corrupt file, a directory or a file it may not open as OSError (or an
    encoding it lacks as ArrowNotImplementedError): caught as ArrowInvalid alone, they were INTERNAL."""
    rows_read = 0
    try:
        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=batch_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            rows_read += batch.num_rows
            yield pa.Table.from_batches([batch])
    except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        # The URI may carry an object store's keys: the message names it without them (clients.uris).
        where = "" if os.path.isabs(path) or "://" in path else f" (relative to {os.getcwd()})"
        after = f" after its first {rows_read} rows" if rows_read else ""
        raise InvalidArgument(
            f"cannot read Parquet source {redact_uri(path)!r}{where}{after}: {redact_text(str(exc), path)}"
        ) from exc
