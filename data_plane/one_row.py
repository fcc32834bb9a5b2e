"""``GetOnlineFeatures``' answer for one entity row, written from the fetched blobs straight to wire bytes.

One entity is what serving asks per request. The general path assembles a ``BlockResult`` per block and
then encodes the blocks (``reader.assemble``, ``wire.encode_response``); for one row every field of the
answer but the values and the event timestamp is known from the plan (``BlockPlan.one_row_frame``), so
the answer is one join of slices of the blobs. Measured in a serving process, where caches are cold
between requests, this took ~20 µs of CPU off a 1×1,000 read (~450 µs per call all told). A property
test holds the bytes equal to the general path's for any block and blob.
"""

from __future__ import annotations

from data_plane.reader import Fetched, one_row_parts
from data_plane.wire import ONE_ROW


def one_row_response(fetched: Fetched) -> bytes | None:
    """The serialized ``GetOnlineFeaturesResponse`` of a one-row fetch, or None when a row needs the
    general path (a blob with nulls or a bad one, a column subset of a mixed-type view) or there is not
    exactly one row."""
    if fetched.row_count != 1:
        return None
    now_us = fetched.now_us
    parts = [ONE_ROW]
    for block, blob in zip(fetched.plan.blocks, fetched.blobs, strict=True):
        row = one_row_parts(block, blob, now_us)
        if row is None:
            return None
        values, status, event_ts = row
        frame = block.one_row_frame
        parts += (frame.head, values, frame.tails[status], event_ts)
    return b"".join(parts)
