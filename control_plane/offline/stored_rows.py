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
        # The range a row group at a time (a range can be most of a big merged file), cut as above: full
        # batches as they fill, the remainder carried to the next row group.
        wanted = list(columns) if columns is not None else None
        end = self._offset + self._rows
        pending: list[pa.Table] = []
        pending_rows = start = 0
        for index in range(self.parquet.metadata.num_row_groups):
            group_start, start = start, start + self.parquet.metadata.row_group(index).num_rows
            first, last = max(group_start, self._offset), min(start, end)
            if last > first:
                group = self.parquet.read_row_group(index, wanted, use_threads=use_threads)
                pending.append(without_record(group.slice(first - group_start, last - first)))
                pending_rows += last - first
            if start >= end:
                break
            if pending_rows >= batch_size:
                table = pa.concat_tables(pending).combine_chunks()
                whole = pending_rows - pending_rows % batch_size
                yield from table.slice(0, whole).to_batches(max_chunksize=batch_size)
                pending, pending_rows = [table.slice(whole)], pending_rows - whole
        if pending_rows:
            yield from pa.concat_tables(pending).combine_chunks().to_batches(max_chunksize=batch_size)


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
