"""Entity codes for the as-of join, which compares entities as int64.

``kernels.join_keys.factorize_keys`` codes several tables at once; a streaming join sees the feature side
one partition at a time, so here the label side is coded once and every feature batch is *looked up*
against the label keys (Arrow's hash-based ``index_in``). A feature key that no label has gets
:data:`ABSENT`, a label with a null key gets :data:`NULL_LABEL`: neither matches anything.

A single non-null integer key needs no coding at all: its values are the codes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from clients.errors import InvalidArgument
from control_plane.offline.resolve import JoinKeySpec

Int64Array = npt.NDArray[np.int64]

NULL_LABEL = -1
ABSENT = -2
_INT64_MIN = np.iinfo(np.int64).min


class KeyEncoder:
    """Codes the label rows' join keys once; :meth:`encode` codes a feature batch's keys consistently."""

    def __init__(self, keys: Sequence[JoinKeySpec], label_columns: Sequence[pa.ChunkedArray]) -> None:
        self.keys = tuple(keys)
        columns = [
            _cast_key(column, key, "entity rows") for column, key in zip(label_columns, keys, strict=True)
        ]
        first = columns[0]
        self._raw = (
            len(columns) == 1
            and pa.types.is_integer(first.type)
            and first.null_count == 0
            and (len(first) == 0 or pc.min(first).as_py() > _INT64_MIN)
        )
        if self._raw:
            self.label_codes: Int64Array = np.ascontiguousarray(first.to_numpy(), dtype=np.int64)
            # Feature rows with a null key must match nothing: give them a value below every label's.
            self._null_fill = int(self.label_codes.min()) - 1 if len(first) else 0
            return
        self._distinct = [pc.unique(column.drop_null()) for column in columns]
        self._pair_tables: list[Int64Array] = []
        codes = None
        for c, column in enumerate(columns):
            column_codes = _codes(pc.index_in(column, value_set=self._distinct[c]))
            if codes is None:
                codes = column_codes
                continue
            packed = _pack(codes, column_codes, len(self._distinct[c]))
            table = np.unique(packed[packed >= 0])
            self._pair_tables.append(table)
            codes = np.where(packed >= 0, np.searchsorted(table, packed), -1)
        assert codes is not None
        self.label_codes = np.ascontiguousarray(np.where(codes >= 0, codes, NULL_LABEL), dtype=np.int64)

    def encode(self, batch: pa.RecordBatch | pa.Table) -> Int64Array:
        """Codes of a feature batch's key columns (named like the entity's join keys)."""
        columns = [_cast_key(_column(batch, key.name), key, "offline store") for key in self.keys]
        if self._raw:
            return np.ascontiguousarray(pc.fill_null(columns[0], self._null_fill).to_numpy(), dtype=np.int64)
        codes = None
        for c, column in enumerate(columns):
            column_codes = _codes(pc.index_in(column, value_set=self._distinct[c]))
            if codes is None:
                codes = column_codes
                continue
            packed = _pack(codes, column_codes, len(self._distinct[c]))
            table = self._pair_tables[c - 1]
            if len(table) == 0:
                codes = np.full(len(packed), -1, dtype=np.int64)
                continue
            position = np.minimum(np.searchsorted(table, packed), len(table) - 1)
            found = (packed >= 0) & (table[position] == packed)
            codes = np.where(found, position, -1)
        assert codes is not None
        return np.ascontiguousarray(np.where(codes >= 0, codes, ABSENT), dtype=np.int64)


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array | pa.ChunkedArray:
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise InvalidArgument(f"offline store file lacks join key column {name!r}")
    return batch.column(index)


def _cast_key(column: pa.Array | pa.ChunkedArray, key: JoinKeySpec, side: str) -> pa.Array | pa.ChunkedArray:
    if column.type == key.dtype:
        return column
    # Keys in an encoding of their type (a pandas category is a dictionary, a Polars string a string
    # view), as ingestion reads them: through it, to their plain values.
    if pa.types.is_run_end_encoded(column.type):
        column = pc.run_end_decode(column)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    compatible = (
        pa.types.is_null(column.type)
        or (pa.types.is_integer(column.type) and pa.types.is_integer(key.dtype))
        or (
            pa.types.is_string(key.dtype)
            and (
                pa.types.is_string(column.type)
                or pa.types.is_large_string(column.type)
                or pa.types.is_string_view(column.type)
            )
        )
    )
    # (a column of nulls only, e.g. an empty table built from a Python list, has the null type)
    if not compatible:
        raise InvalidArgument(f"join key {key.name!r} in the {side} is {column.type}, expected {key.dtype}")
    try:
        return column.cast(key.dtype)
    except pa.ArrowInvalid:  # integers only: an unsigned value beyond int64 (strings cast as they are)
        raise InvalidArgument(
            f"join key {key.name!r} in the {side} holds {pc.max(column)}, beyond the range of {key.dtype}"
        ) from None


def _codes(indices: pa.Array | pa.ChunkedArray) -> Int64Array:
    """``index_in`` positions as int64, -1 where the key is null or not among the label keys."""
    return np.ascontiguousarray(pc.fill_null(indices, -1).to_numpy(), dtype=np.int64)


def _pack(codes: Int64Array, column_codes: Int64Array, cardinality: int) -> Int64Array:
    # Both codes are below the label row count, so the pair fits in int64 for any realistic table.
    return np.where((codes >= 0) & (column_codes >= 0), codes * max(cardinality, 1) + column_codes, -1)
