"""Scanning protobuf wire bytes without building Python objects.

The online read path receives the same list of (up to thousands of) feature references on every call;
parsing them into Python strings costs ~0.1 µs each, more than the rest of the request. The data plane
instead keys its plan cache on the *bytes* of those references, which it finds with
:func:`leading_run`: the run of consecutive length-delimited entries of one field at the start of a
message (serializers write fields in field-number order, so a message's ``repeated string`` field 1 is
such a run).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

#: Wire type of length-delimited fields (strings, bytes, messages).
LENGTH_DELIMITED = 2


@njit(cache=True, nogil=True)
def _leading_run(data: npt.NDArray[np.uint8], tag: int) -> tuple[int, int]:
    n = data.shape[0]
    position = 0
    count = 0
    while position < n and data[position] == tag:
        # The length: a base-128 varint of at most five bytes (a message is under 2 GiB).
        cursor = position + 1
        length = 0
        shift = 0
        while True:
            if cursor >= n or shift > 28:
                return -1, 0
            byte = data[cursor]
            cursor += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        end = cursor + length
        if end > n:
            return -1, 0
        position = end
        count += 1
    return position, count


def leading_run(data: bytes, field_number: int) -> tuple[int, int]:
    """``(end, count)``: the run of ``count`` length-delimited entries of ``field_number`` that starts
    ``data`` ends at byte ``end`` (``(0, 0)`` when the message does not start with that field; ``(-1, 0)``
    when an entry's length runs past the end: malformed, let the real parser report it).
    ``field_number`` must be 1 to 15 (a one-byte tag)."""
    if not 1 <= field_number <= 15:
        raise ValueError(f"field number {field_number} does not have a one-byte tag")
    if not data:
        return 0, 0
    end, count = _leading_run(np.frombuffer(data, dtype=np.uint8), (field_number << 3) | LENGTH_DELIMITED)
    return int(end), int(count)
