"""Protobuf wire encoding of ``GetOnlineFeaturesResponse``, written by hand.

Why: building the response through the generated classes costs ~600 µs for one 1,000-feature block
(one ``FeatureColumnSpec`` message per column), more than everything else on the read path together.
The column list of a block depends only on the plan, so it is serialized once per compiled plan
(:func:`block_prefix`) and each response is a concatenation of that prefix with three length-delimited
byte fields. The output parses with the generated ``GetOnlineFeaturesResponse`` (a unit test checks
field by field against protobuf's own serializer).

Field numbers are those of ``proto/aether/v1/online_features.proto``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_LEN = 2  # wire type of length-delimited fields
_VARINT = 0

# GetOnlineFeaturesResponse
_RESPONSE_ROW_COUNT = 1
_RESPONSE_BLOCKS = 2
# FeatureBlock
_BLOCK_VIEW = 1
_BLOCK_VERSION = 2
_BLOCK_COLUMNS = 3
_BLOCK_VALUES = 4
_BLOCK_STATUSES = 5
_BLOCK_EVENT_TIMESTAMPS = 6
# FeatureColumnSpec
_COLUMN_NAME = 1
_COLUMN_VALUE_TYPE = 2


_ONE_BYTE_VARINTS = tuple(bytes((value,)) for value in range(0x80))


def varint(value: int) -> bytes:
    if value < 0x80:
        if value < 0:
            raise ValueError("negative values are not encoded by this module")
        return _ONE_BYTE_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, _LEN) + varint(len(payload)) + payload


def block_prefix(view: str, version: int, columns: Sequence[tuple[str, int]]) -> bytes:
    """FeatureBlock fields 1–3 (view, version, columns), serialized once per plan."""
    parts = [_length_delimited(_BLOCK_VIEW, view.encode())] if view else []
    if version:
        parts.append(_tag(_BLOCK_VERSION, _VARINT) + varint(version))
    for name, value_type in columns:
        column = _length_delimited(_COLUMN_NAME, name.encode()) if name else b""
        if value_type:
            column += _tag(_COLUMN_VALUE_TYPE, _VARINT) + varint(value_type)
        parts.append(_length_delimited(_BLOCK_COLUMNS, column))
    return b"".join(parts)


_VALUES_TAG = _tag(_BLOCK_VALUES, _LEN)
_STATUSES_TAG = _tag(_BLOCK_STATUSES, _LEN)
_TIMESTAMPS_TAG = _tag(_BLOCK_EVENT_TIMESTAMPS, _LEN)
_BLOCKS_TAG = _tag(_RESPONSE_BLOCKS, _LEN)
assert len(_VALUES_TAG) == len(_STATUSES_TAG) == len(_TIMESTAMPS_TAG) == 1  # encode_response counts on it
_ROW_COUNT_TAG = _tag(_RESPONSE_ROW_COUNT, _VARINT)


def encode_response(row_count: int, blocks: Iterable[tuple[bytes, bytes, bytes, bytes]]) -> bytes:
    """A serialized GetOnlineFeaturesResponse from (prefix, values, statuses, event timestamps) blocks."""
    parts = [_ROW_COUNT_TAG + varint(row_count)] if row_count else []
    for prefix, values, statuses, timestamps in blocks:
        block = [prefix]
        size = len(prefix)
        # Each field: a one-byte tag, the length's varint, the bytes (size adds up as it goes).
        if values:
            length = varint(len(values))
            block += (_VALUES_TAG, length, values)
            size += 1 + len(length) + len(values)
        if statuses:
            length = varint(len(statuses))
            block += (_STATUSES_TAG, length, statuses)
            size += 1 + len(length) + len(statuses)
        if timestamps:
            length = varint(len(timestamps))
            block += (_TIMESTAMPS_TAG, length, timestamps)
            size += 1 + len(length) + len(timestamps)
        parts += (_BLOCKS_TAG, varint(size), *block)
    return b"".join(parts)


ONE_ROW = _ROW_COUNT_TAG + varint(1)  # how a response of one entity row starts


@dataclass(frozen=True, slots=True)
class OneRowFrame:
    """A block's entry in a one-row response is ``head + values + tails[status] + event timestamp``: all
    but the values and the timestamp depend on the plan only, so they are serialized once per plan.
    (``data_plane.one_row``; a property test holds it equal to :func:`encode_response`.)"""

    head: bytes  # blocks tag, entry length, the block prefix, values tag and length
    tails: Mapping[int, bytes]  # by the status all columns share: statuses field, timestamps tag and length


def one_row_frame(prefix: bytes, value_bytes: int, columns: int, statuses: Iterable[int]) -> OneRowFrame:
    """The frame of a block whose one row has ``value_bytes`` of values over ``columns`` columns, for
    each of ``statuses``; fields are left out where empty, as :func:`encode_response` does."""
    values_field = _VALUES_TAG + varint(value_bytes) if value_bytes else b""
    statuses_tag = _STATUSES_TAG + varint(columns) if columns else b""
    timestamps_field = _TIMESTAMPS_TAG + varint(8)
    size = len(prefix) + len(values_field) + value_bytes + len(statuses_tag) + columns
    size += len(timestamps_field) + 8
    return OneRowFrame(
        head=_BLOCKS_TAG + varint(size) + prefix + values_field,
        tails={status: statuses_tag + bytes((status,)) * columns + timestamps_field for status in statuses},
    )
