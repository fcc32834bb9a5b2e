"""Arrow tables cut into bounded pieces of one IPC stream (how the SDK and the service exchange them)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from clients.sdk.offline import arrow_stream_pieces, read_arrow_stream


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=3000),
    chunk_bytes=st.integers(1, 5000),
)
def test_pieces_are_bounded_and_rebuild_the_table(values: list[int | None], chunk_bytes: int) -> None:
    table = pa.table({"x": pa.array(values, pa.int64()), "s": [str(v) for v in values]})
    pieces = list(arrow_stream_pieces(table, chunk_bytes))
    assert pieces and all(0 < len(piece) <= chunk_bytes for piece in pieces)
    assert read_arrow_stream(pieces).equals(table)


def test_a_broken_stream_is_an_invalid_argument() -> None:
    pieces = list(arrow_stream_pieces(pa.table({"x": list(range(100))}), 64))
    with pytest.raises(InvalidArgument, match="Arrow IPC"):
        read_arrow_stream(pieces[:-2])
