"""The length limit of a string join key: a key longer than ``max_key_bytes`` bytes of UTF-8 is
quarantined, on every path that ingests (batch runs, their replays, the stream materializer).

A key names a Redis key (``ae:{<entity>:<key>}:<view>:v<N>``) and is stored in every offline row of its
entity: with no limit, a 5 MB key became a 5 MB Redis key, and a 5 MB row of the offline store. Bytes,
not characters, as Redis and Parquet hold bytes (513 ``é`` are 1,026 bytes). The default, 1,024, is far
above any id (a UUID is 36, a URL or e-mail address a few hundred); an operator changes it with
``AETHER_MAX_JOIN_KEY_BYTES`` (``ControlPlaneSettings.max_join_key_bytes``), read by the control plane
and the stream materializer alike; the control plane sends its value with each registry snapshot, and the
data planes refuse a read of a longer key by it (``clients.join_key_limit`` holds the variable, its
default and its range for both planes). Rows
already stored (a rebuild's re-read of applied events, an online part's rows, a retraining window) are
judged by no limit: they were accepted under the one of their day.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clients.join_key_limit import MAX_JOIN_KEY_BYTES_VARIABLE
from control_plane.ingestion.rejections import Reasons
from control_plane.ingestion.shown_values import show


def check_key_length(name: str, keys: pa.Array, max_key_bytes: int | None, reasons: Reasons) -> None:
    """Adds to ``reasons`` each row whose string key in ``keys`` (the cast join key column) is longer than
    ``max_key_bytes`` bytes of UTF-8 (None: no limit; an integer key has no length to limit)."""
    if max_key_bytes is None or not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        return
    lengths = pc.fill_null(pc.binary_length(keys), 0).to_numpy(zero_copy_only=False)
    longer = np.asarray(lengths > max_key_bytes, dtype=bool)
    reasons.add(
        longer,
        lambda row: (
            f"{name}: {show(keys[row])} is {int(lengths[row]):,} bytes of UTF-8, longer than the limit of"
            f" {max_key_bytes:,} bytes for a join key ({MAX_JOIN_KEY_BYTES_VARIABLE})"
        ),
    )
