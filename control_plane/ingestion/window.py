"""A batch run's window of event times (``[start, end)``, ``Window``), which of a chunk's rows it reads
through it (``in_window``), and where those rows are in the whole source (``source_row_numbers``: a
record's key). Kept apart from ``batch``, which runs a source through it chunk by chunk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from control_plane.ingestion.casting import TIMESTAMP_TYPE, decode_run_ends, lossless_cast
from control_plane.ingestion.validation import refuse_repeated_columns


@dataclass(frozen=True)
class Window:
    """``[start, end)``; a bound of None is open."""

    start: datetime | None = None
    end: datetime | None = None


OPEN_WINDOW = Window()


def source_row_numbers(offset: int, windowed: Windowed, row_index: pa.ChunkedArray) -> list[int]:
    """Row numbers in the whole source of rows ``row_index`` of a chunk's in-window rows (``offset``
    rows of the source come before the chunk). A record's key is its row in the source, whatever window
    a run reads it through, so a rerun of the file with another window supersedes the pending copy
    an earlier run quarantined instead of quarantining the record a second time under another key."""
    positions = row_index.to_numpy()
    if windowed.kept is not None:
        positions = windowed.kept[positions]
    return [offset + int(i) for i in positions]


@dataclass(frozen=True)
class Windowed:
    """A chunk's rows to validate, how many it skipped, and where those rows were in the chunk (None
    when none was skipped: row i is the chunk's row i)."""

    rows: pa.Table
    skipped: int
    kept: npt.NDArray[np.int64] | None


def in_window(table: pa.Table, ts_name: str, window: Window) -> Windowed:
    """The rows to validate: those inside the window and those whose timestamp cannot be placed."""
    refuse_repeated_columns(table)  # before the timestamp column is looked up by name
    table = decode_run_ends(table)  # casting.py: before any kernel reads it, validation's too
    if (window.start is None and window.end is None) or ts_name not in table.column_names:
        return Windowed(table, 0, None)
    stamps, _failed = lossless_cast(table.column(ts_name).combine_chunks(), TIMESTAMP_TYPE)
    outside = pa.array(np.zeros(len(stamps), dtype=bool))
    if window.start is not None:
        outside = pc.or_(
            outside, pc.fill_null(pc.less(stamps, pa.scalar(window.start, TIMESTAMP_TYPE)), False)
        )
    if window.end is not None:
        outside = pc.or_(
            outside, pc.fill_null(pc.greater_equal(stamps, pa.scalar(window.end, TIMESTAMP_TYPE)), False)
        )
    skipped = int(pc.sum(outside.cast(pa.int64())).as_py() or 0)
    if not skipped:
        return Windowed(table, 0, None)
    kept = np.flatnonzero(~outside.to_numpy(zero_copy_only=False)).astype(np.int64)
    return Windowed(table.filter(pc.invert(outside)), skipped, kept)
