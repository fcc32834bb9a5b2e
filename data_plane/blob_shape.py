"""The exact bytes a null-free blob of one view version has, so that a whole block of blobs is checked
and decoded with a prefix comparison per blob and one ``numpy.frombuffer`` for them all.

A valid blob without nulls of a given view version always starts with the same 16 bytes (magic, format
version, flags = 0, count, schema fingerprint) and has one length, so ``blob.startswith(head)`` plus a
length check is the codec's validation for it. Anything else (a blob with a null bitmap, or a bad one)
goes through ``kernels.packed_blob.decode``, which handles nulls and names what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.packed_blob import FORMAT_VERSION, HEADER, HEADER_SIZE, MAGIC, values_nbytes

_HEAD_SIZE = 16  # magic, format, flags, count, fingerprint: the part every blob of a version shares
EVENT_TS = slice(_HEAD_SIZE, _HEAD_SIZE + 8)  # the event timestamp's bytes (little-endian int64, µs)


@dataclass(frozen=True, slots=True)
class BlobShape:
    size: int  # bytes of a null-free blob
    head: bytes  # its first 16 bytes
    record: np.dtype[np.void]  # one whole blob: head, event_ts, write_ts, values ([count] plain, or a record)
    zero: bytes  # `size` zero bytes: stands for a missing row (event_ts 0, values 0)


def blob_shape(layout: np.dtype[np.generic], count: int, fingerprint: int) -> BlobShape:
    value_bytes = values_nbytes(layout, count)
    values_field: tuple[str, np.dtype[np.generic]] | tuple[str, np.dtype[np.generic], tuple[int]]
    values_field = ("values", layout) if layout.names else ("values", layout, (count,))
    record = np.dtype([("head", f"V{_HEAD_SIZE}"), ("event_ts", "<i8"), ("write_ts", "<i8"), values_field])
    size = HEADER_SIZE + value_bytes
    assert record.itemsize == size, "the blob record must match the codec's layout byte for byte"
    assert record.fields is not None and record.fields["event_ts"][1] == EVENT_TS.start
    head = HEADER.pack(MAGIC, FORMAT_VERSION, 0, count, fingerprint, 0, 0)[:_HEAD_SIZE]
    return BlobShape(size=size, head=head, record=record, zero=bytes(size))
