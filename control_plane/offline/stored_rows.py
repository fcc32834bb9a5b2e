"""The rows of one stored data file as the offline store's readers read them: a whole Parquet file, or the
row range of a merged file that now holds a compacted file's rows (``merged``), cut into the same batches
either way so that a two-pass reader sees the same batches whether the file was merged between."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from control_plane.offline.merged import without_record


class StoredRows:
    """The rows of one data file: a whole Parquet file, or the row range of a merged file that holds a
    merged file's rows (:meth:`OfflineStore.open_rows`)."""

    def __init__(self, parquet: pq.ParquetFile, offset: int = 0, rows: int | None = None) -> None:
        self.parquet = parquet
        self._offset = offset
        self._rows = rows

    @property
    def schema_arrow(self) -> pa.Schema:
        return self.parquet.schema_arrow

    @property
    def num_rows(self) -> int:
        return self._rows if self._rows is not None else int(self.parquet.metadata.num_rows)

    def batches(
        self, columns: Sequence[str] | None, batch_size: int, use_threads: bool
    ) -> Iterator[pa.RecordBatch]:
        """As :func:`parquet_batches`, which a range cuts the same way: one batch when it holds at most
        ``batch_size`` rows, else ``batch_size`` rows per batch (what ``iter_batches`` gives whatever the
        row groups), so a two-pass reader sees the same batches whether the file was merged between."""
        if self._rows is None:
            for batch in parquet_batches(self.parquet, columns, batch_size, use_threads):
                yield without_record(batch)
            return
        wanted = list(columns) if columns is not None else None
        metadata = self.parquet.metadata
        groups: list[int] = []
        first_row = start = 0
        for index in range(metadata.num_row_groups):
            rows = metadata.row_group(index).num_rows
            if start + rows > self._offset and start < self._offset + self._rows:
                if not groups:
                    first_row = start
                groups.append(index)
            start += rows
        table = self.parquet.read_row_groups(groups, wanted, use_threads=use_threads)
        table = without_record(table.slice(self._offset - first_row, self._rows).combine_chunks())
        yield from table.to_batches(max_chunksize=batch_size)


def parquet_batches(
    parquet: pq.ParquetFile, columns: Sequence[str] | None, batch_size: int, use_threads: bool
) -> Iterator[pa.RecordBatch]:
    """The batches of an open file, ``batch_size`` rows at a time; ``use_threads`` decodes columns in
    parallel (turn it off when several files are read at once already). The same file and batch size
    give the same batch lengths whichever columns are read."""
    wanted = list(columns) if columns is not None else None
    if 0 < parquet.metadata.num_rows <= batch_size:
        # One batch either way; reading the file whole skips the batching reader's overhead.
        yield from parquet.read(wanted, use_threads=use_threads).combine_chunks().to_batches()
        return
    yield from parquet.iter_batches(batch_size=batch_size, columns=wanted, use_threads=use_threads)
