"""The online store's value format: one packed blob per (entity, feature view, version).

Layout (little-endian)::

    offset  size  field
    0       2     magic b"AE"
    2       1     format version (1)
    3       1     flags (bit 0: a null bitmap follows the values)
    4       4     count: number of values
    8       8     schema fingerprint (kernels.fingerprint.schema_fingerprint)
    16      8     event timestamp, microseconds since the Unix epoch
    24      8     write timestamp, microseconds since the Unix epoch
    32      ...   the values: one contiguous array in the layout dtype of the schema
    ...     ...   optional null bitmap, ceil(count / 8) bytes, bit i set = value i is null

The layout dtype comes from the registered schema, never from the blob: a plain typed array when every
feature has one dtype, else one packed record (numpy structured dtype, no padding). Decoding is
``numpy.frombuffer`` at offset 32: zero-copy, no per-value parsing. The header is 32 bytes so that the
values start 8-byte aligned for every dtype.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAGIC = b"AE"
FORMAT_VERSION = 1
FLAG_HAS_NULLS = 0x01
HEADER = struct.Struct("<2sBBIQqq")
HEADER_SIZE = HEADER.size  # 32

#: numpy dtype names a feature may have.
SUPPORTED_DTYPES = ("float32", "float64", "int32", "int64", "bool")

_HEADER_RECORD = np.dtype(
    [
        ("magic", "S2"),
        ("format", "u1"),
        ("flags", "u1"),
        ("count", "<u4"),
        ("fingerprint", "<u8"),
        ("event_ts", "<i8"),
        ("write_ts", "<i8"),
    ]
)
assert _HEADER_RECORD.itemsize == HEADER_SIZE


class BlobError(ValueError):
    """A blob that cannot be decoded against the expected schema."""


class FingerprintMismatch(BlobError):
    """The blob was written for another schema (another view version, or a changed layout)."""


class CorruptBlob(BlobError):
    """The blob is truncated, has a bad magic or an unknown format version."""


def layout_dtype(dtypes: Sequence[str]) -> np.dtype[np.generic]:
    """The in-blob dtype of a schema whose features have ``dtypes`` in order.

    Homogeneous schemas get a plain little-endian dtype (one value per feature); mixed schemas a packed
    record with fields ``f0``, ``f1``... (one record per entity)."""
    for d in dtypes:
        if d not in SUPPORTED_DTYPES:
            raise ValueError(f"unsupported feature dtype {d!r}; expected one of {SUPPORTED_DTYPES}")
    if not dtypes:
        raise ValueError("a schema needs at least one feature")
    if len(set(dtypes)) == 1:
        return np.dtype(dtypes[0]).newbyteorder("<")
    return np.dtype([(f"f{i}", np.dtype(d).newbyteorder("<")) for i, d in enumerate(dtypes)])


def values_nbytes(dtype: np.dtype[np.generic], count: int) -> int:
    """Bytes the values of one blob take: ``count`` values of a plain dtype, or one record."""
    return dtype.itemsize if dtype.names else dtype.itemsize * count


@dataclass(frozen=True, slots=True)
class DecodedBlob:
    values: npt.NDArray[np.generic]  # read-only view into the blob: [count] plain, or [1] record
    event_ts_us: int
    write_ts_us: int
    nulls: npt.NDArray[np.bool_] | None  # [count], None when no value is null


def encode(
    values: npt.ArrayLike,
    dtype: np.dtype[np.generic],
    fingerprint: int,
    event_ts_us: int,
    write_ts_us: int,
    nulls: npt.NDArray[np.bool_] | None = None,
) -> bytes:
    """One blob. ``values`` holds one value per feature (for a record dtype: a sequence of them)."""
    count = len(dtype.names) if dtype.names else None
    if dtype.names:
        row = np.empty(1, dtype=dtype)
        row[0] = tuple(values)  # type: ignore[arg-type]
        payload = row.tobytes()
    else:
        array = np.ascontiguousarray(values, dtype=dtype)
        if array.ndim != 1:
            raise ValueError(f"expected a 1-D array of values, got shape {array.shape}")
        count = array.shape[0]
        payload = array.tobytes()
    flags = 0
    bitmap = b""
    if nulls is not None and bool(np.any(nulls)):
        if len(nulls) != count:
            raise ValueError(f"null mask has {len(nulls)} entries for {count} values")
        flags |= FLAG_HAS_NULLS
        bitmap = np.packbits(np.asarray(nulls, dtype=bool), bitorder="little").tobytes()
    header = HEADER.pack(MAGIC, FORMAT_VERSION, flags, count, fingerprint, event_ts_us, write_ts_us)
    return header + payload + bitmap


def encode_rows(
    values: npt.NDArray[np.generic],
    dtype: np.dtype[np.generic],
    fingerprint: int,
    event_ts_us: npt.ArrayLike,
    write_ts_us: npt.ArrayLike,
    nulls: npt.NDArray[np.bool_] | None = None,
) -> list[bytes]:
    """Blobs for many entities at once, vectorized: ``values`` is [n, count] for a plain dtype or a [n]
    record array for a record dtype; ``event_ts_us`` and ``write_ts_us`` one timestamp each or one per
    row; ``nulls`` an optional [n, count] mask."""
    n = values.shape[0]
    if dtype.names:
        count = len(dtype.names)
        payload = np.ascontiguousarray(values, dtype=dtype).reshape(n, 1)
    else:
        payload = np.ascontiguousarray(values, dtype=dtype)
        if payload.ndim != 2:
            raise ValueError(f"expected [rows, features] values, got shape {payload.shape}")
        count = payload.shape[1]
    value_bytes = values_nbytes(dtype, count)
    has_nulls = np.zeros(n, dtype=bool) if nulls is None else np.asarray(nulls, dtype=bool).any(axis=1)
    bitmap_bytes = (count + 7) // 8
    headers = np.zeros(n, dtype=_HEADER_RECORD)
    headers["magic"] = MAGIC
    headers["format"] = FORMAT_VERSION
    headers["flags"] = np.where(has_nulls, FLAG_HAS_NULLS, 0)
    headers["count"] = count
    headers["fingerprint"] = fingerprint
    headers["event_ts"] = np.broadcast_to(np.asarray(event_ts_us, dtype=np.int64), (n,))
    headers["write_ts"] = np.broadcast_to(np.asarray(write_ts_us, dtype=np.int64), (n,))
    body = np.empty((n, HEADER_SIZE + value_bytes), dtype=np.uint8)
    body[:, :HEADER_SIZE] = headers.view(np.uint8).reshape(n, HEADER_SIZE)
    body[:, HEADER_SIZE:] = payload.view(np.uint8).reshape(n, value_bytes)
    out = [row.tobytes() for row in body]
    if nulls is not None and has_nulls.any():
        bitmaps = np.packbits(np.asarray(nulls, dtype=bool), axis=1, bitorder="little")
        assert bitmaps.shape[1] == bitmap_bytes
        for i in np.flatnonzero(has_nulls):
            out[i] += bitmaps[i].tobytes()
    return out


def read_header(blob: bytes) -> tuple[int, int, int, int, int]:
    """(flags, count, fingerprint, event_ts_us, write_ts_us) of a blob, validating magic and format."""
    if len(blob) < HEADER_SIZE:
        raise CorruptBlob(f"blob of {len(blob)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, fmt, flags, count, fingerprint, event_ts, write_ts = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptBlob(f"bad magic {magic!r}")
    if fmt != FORMAT_VERSION:
        raise CorruptBlob(f"unknown blob format version {fmt} (this reader knows {FORMAT_VERSION})")
    return flags, count, fingerprint, event_ts, write_ts


def decode(
    blob: bytes, dtype: np.dtype[np.generic], expected_fingerprint: int, feature_count: int
) -> DecodedBlob:
    """Decode one blob against the registered schema: its layout dtype, fingerprint and number of features.

    The count is checked against the schema's, not taken from the header: a homogeneous layout's dtype does
    not say how many values a row has, and a header that disagrees with the schema (a damaged or foreign
    write) would otherwise decode into a short row, or into misaligned rows that look valid."""
    flags, count, fingerprint, event_ts, write_ts = read_header(blob)
    if fingerprint != expected_fingerprint:
        raise FingerprintMismatch(
            f"schema fingerprint {fingerprint:#018x} does not match "
            f"the registered {expected_fingerprint:#018x}"
        )
    if dtype.names and len(dtype.names) != feature_count:
        raise ValueError(f"layout {dtype} has {len(dtype.names)} fields, not {feature_count} features")
    if count != feature_count:
        raise CorruptBlob(f"blob holds {count} values, the schema has {feature_count}")
    value_bytes = values_nbytes(dtype, count)
    bitmap_bytes = (count + 7) // 8 if flags & FLAG_HAS_NULLS else 0
    if len(blob) != HEADER_SIZE + value_bytes + bitmap_bytes:
        raise CorruptBlob(f"blob is {len(blob)} bytes, expected {HEADER_SIZE + value_bytes + bitmap_bytes}")
    values = np.frombuffer(blob, dtype=dtype, count=1 if dtype.names else count, offset=HEADER_SIZE)
    nulls = None
    if bitmap_bytes:
        bits = np.frombuffer(blob, dtype=np.uint8, count=bitmap_bytes, offset=HEADER_SIZE + value_bytes)
        nulls = np.unpackbits(bits, count=count, bitorder="little").astype(bool)
    return DecodedBlob(values, event_ts, write_ts, nulls)
