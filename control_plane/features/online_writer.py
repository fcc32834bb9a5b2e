"""Writes feature values into the online store (Redis): one packed blob per (entity, view, version).

Used by the materializer (and by tests and benchmarks). Many entities of one view version are encoded at
once (``kernels.packed_blob.encode_rows``, vectorized) and sent in one pipeline (one round trip).

Expiry: staleness is judged by the data plane at read time from the blob's *event* timestamp against the
view's TTL; Redis expiry only bounds memory. Keys therefore live for ``EXPIRY_TTL_FACTOR`` x TTL after the
write: were they to expire exactly at the TTL, a value written late (event time well before write time)
or one the materializer failed to refresh would vanish and read as MISSING, hiding the fact that a value
exists but is old. Kept longer, it reads as STALE for a while (a signal that materialization is behind)
and disappears only after that. A TTL of 0 means values never become stale, and keys never expire.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import redis

from control_plane.features.validation import MAX_TTL_SECONDS
from kernels.online_keys import online_key
from kernels.packed_blob import encode_rows, layout_dtype

EXPIRY_TTL_FACTOR = 2


@dataclass(frozen=True, slots=True)
class OnlineViewVersion:
    """What writing needs to know about one feature-view version."""

    name: str
    version: int
    entity: str
    columns: tuple[tuple[str, str], ...]  # (feature name, numpy dtype name), in registered order
    fingerprint: int  # the registered schema fingerprint of this version
    ttl_seconds: int = 0

    @property
    def layout(self) -> np.dtype[np.generic]:
        return layout_dtype([dtype for _, dtype in self.columns])


def expiry_ms(ttl_seconds: int) -> int | None:
    """Redis PX for a view's TTL (None: no expiry). A TTL above the registry's maximum (a view stored
    before it was enforced) is no expiry: its PX could exceed what Redis accepts and fail every write."""
    if ttl_seconds <= 0 or ttl_seconds > MAX_TTL_SECONDS:
        return None
    return ttl_seconds * 1000 * EXPIRY_TTL_FACTOR


class OnlineWriter:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def write(
        self,
        view: OnlineViewVersion,
        join_values: Sequence[Sequence[str]],
        values: npt.NDArray[np.generic],
        event_ts_us: npt.ArrayLike,
        *,
        nulls: npt.NDArray[np.bool_] | None = None,
        write_ts_us: int | None = None,
    ) -> int:
        """Writes one row per entity: ``join_values[i]`` holds entity i's join-key values as text (in the
        entity's join-key order; integers in canonical decimal), ``values`` is [n, features] for a view
        whose features share one dtype or a [n] record array of ``view.layout`` otherwise, ``event_ts_us``
        one timestamp (or one per row), ``nulls`` an optional [n, features] mask. Returns rows written."""
        n = len(join_values)
        if values.shape[0] != n:
            raise ValueError(f"{n} entities but {values.shape[0]} rows of values")
        if n == 0:
            return 0
        written_at = time.time_ns() // 1000 if write_ts_us is None else write_ts_us
        blobs = encode_rows(values, view.layout, view.fingerprint, event_ts_us, written_at, nulls)
        px = expiry_ms(view.ttl_seconds)
        pipeline = self._client.pipeline(transaction=False)
        for keys, blob in zip(join_values, blobs, strict=True):
            pipeline.set(online_key(view.entity, keys, view.name, view.version), blob, px=px)
        pipeline.execute()
        return n
