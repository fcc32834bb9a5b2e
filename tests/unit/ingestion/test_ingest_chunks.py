"""clients.sdk.ingestion.ipc_chunks against the table it cuts: every chunk is one Arrow IPC stream under
the byte limit (unless one row alone is larger), and the chunks in order are the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from clients.sdk.ingestion import header, ipc_chunks


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 3000),
    columns=st.integers(1, 12),
    text=st.booleans(),
    chunk_rows=st.integers(1, 5000),
    chunk_bytes=st.integers(600, 200_000),
)
def test_chunks_are_small_enough_and_rebuild_the_table(
    rows: int, columns: int, text: bool, chunk_rows: int, chunk_bytes: int
) -> None:
    rng = np.random.default_rng(rows * 31 + columns)
    data: dict[str, object] = {f"f{j}": rng.random(rows) for j in range(columns)}
    if text:
        data["note"] = [f"row {i} " * (i % 7) for i in range(rows)]
    table = pa.table(data)
    chunks = list(ipc_chunks(table, chunk_rows, chunk_bytes))
    tables = [pa.ipc.open_stream(pa.py_buffer(chunk)).read_all() for chunk in chunks]
    for chunk, part in zip(chunks, tables, strict=True):
        assert part.num_rows <= chunk_rows
        assert len(chunk) <= chunk_bytes or part.num_rows == 1
    rebuilt = pa.concat_tables(tables) if tables else table.slice(0, 0)
    assert rebuilt.equals(table)


def test_a_wide_table_is_not_sent_as_one_oversized_message() -> None:
    """The reviewer's case: 50,000 rows of 12 float64 columns made one ~5 MB message (limit 4 MiB)."""
    table = pa.table({f"f{j}": np.random.default_rng(j).random(50_000) for j in range(12)})
    chunks = list(ipc_chunks(table, 50_000, 2 * 1024 * 1024))
    assert len(chunks) > 1 and max(map(len, chunks)) <= 2 * 1024 * 1024


def test_window_bounds_are_exact_microseconds() -> None:
    """``int(moment.timestamp() * 1_000_000)`` went through a float: these came out 1 us low (after
    1970) or high (before), so a window could take in or leave out a row at its very edge."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for text in (
        "2004-03-07T01:47:56.681383+00:00",
        "2041-01-26T23:37:24.316013+00:00",
        "1952-08-29T01:21:59.041138+00:00",
    ):
        moment = datetime.fromisoformat(text)
        exact = (moment - epoch) // timedelta(microseconds=1)
        assert header("v", start=moment, end=moment).start_us == exact == header("v", end=moment).end_us
    same_in_paris = datetime(2004, 3, 7, 2, 47, 56, 681383, tzinfo=timezone(timedelta(hours=1)))
    assert header("v", start=same_in_paris).start_us == 1078624076681383
    with pytest.raises(InvalidArgument, match=r"^end: expected a time-zone-aware datetime"):
        header("v", end=datetime(2024, 1, 1))  # was a bare ValueError naming neither bound
