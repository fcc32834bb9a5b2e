"""Timestamp columns as the offline store keeps them: ``timestamp[us, tz=UTC]`` (split from ``store``)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from clients.errors import InvalidArgument
from clients.int64 import INT64_MAX

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


def normalize_timestamps(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """``table`` with the named columns cast to ``timestamp[us, tz=UTC]``; nanoseconds (pandas' unit) are
    floored to the microsecond, as ingestion drops the digits below one. A missing or repeated column, a
    non-timestamp column, a naive (zone-less) one or a time beyond the microsecond range is refused,
    naming the column: a naive time would be read in some unknown zone and silently shift every join."""
    for name in names:
        index = table.schema.get_field_index(name)
        if index < 0:
            repeats = table.column_names.count(name)
            if repeats:
                raise InvalidArgument(f"column {name!r} appears {repeats} times; give each column one name")
            raise InvalidArgument(f"column {name!r} is missing (columns: {', '.join(table.column_names)})")
        column_type = table.schema.field(index).type
        if not pa.types.is_timestamp(column_type):
            raise InvalidArgument(f"column {name!r} must be a timestamp with a time zone, got {column_type}")
        if column_type.tz is None:
            raise InvalidArgument(f"column {name!r} holds naive timestamps; give them a time zone (e.g. UTC)")
        if column_type != TIMESTAMP_TYPE:
            table = table.set_column(index, name, _to_micros(table.column(index), name))
    return table


def _to_micros(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    unit = column.type.unit
    if unit == "ns":
        # Floored in UTC: pyarrow floors in the column's own zone, and refused a local time that a DST
        # change makes ambiguous or nonexistent; a microsecond boundary is the same instant in every zone.
        column = pc.floor_temporal(column.cast(pa.timestamp("ns", tz="UTC")), unit="microsecond")
    try:
        return column.cast(TIMESTAMP_TYPE)
    except pa.ArrowInvalid:  # seconds or milliseconds whose microseconds overflow int64
        raw = column.cast(pa.int64())
        limit = INT64_MAX // (1_000 if unit == "ms" else 1_000_000)
        beyond = pc.filter(raw, pc.greater(pc.abs(raw), limit))
        raise InvalidArgument(
            f"column {name!r} holds {len(beyond)} time(s) beyond the range of the stored microsecond"
            f" timestamps (about ±292,000 years), the first {beyond[0]} {unit} since 1970-01-01"
        ) from None
