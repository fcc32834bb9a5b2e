"""The near cache: online-store blobs kept in the data plane's memory, dropped the moment Redis says they
changed (Redis server-assisted client-side caching, ``CLIENT TRACKING``).

Why: on the serving path one Redis round trip is most of the distance between a prediction with a feature
fetch and one without (``benchmarks/serving.py``, the "near cache off" row). A blob read again before it
changes needs no round trip.

Correctness does not rest on this module but on how :mod:`data_plane.redis_client` feeds it:

* Only replies read on a connection with tracking on are stored (``CLIENT TRACKING ON`` over RESP3), and
  they are stored in the connection's ``data_received``, in stream order: Redis sends a key's invalidation
  on the same connection, after the reply that read the key, so a stored value can never outlive the
  message that invalidates it. Keys that do not exist are tracked too (their creation is announced), so
  an absent key is cached as absent.
* A connection that closes (Redis restarted, a timeout, failover) can no longer announce changes: the
  whole cache is cleared (:meth:`NearCache.reset`), and FLUSHDB/FLUSHALL and a replica's full resync (an
  invalidation of no keys) do the same. Redis also announces keys it expires, evicts, or drops from its
  tracking table. SWAPDB it does not announce: the client watches Redis's count of them instead
  (``data_plane.db_swaps``, with each heartbeat and each :meth:`RedisClient.sync`) and clears the cache.
* A lookup is made only when no tracking connection has unread bytes (:meth:`RedisClient.quiet`, one
  ``poll``): an invalidation that has reached this host is applied before the cache answers.

What that gives, and what it does not: a change is seen once its invalidation has arrived. Redis queues
the invalidation while it runs the write, and sends it in the same pass of its event loop as the writer's
acknowledgement, but not always before it (Redis 7 writes its clients' replies in the order they became
pending, newest first). So a read that reaches the data plane right after a write was acknowledged may
still get the previous value: on loopback, in-process reads made within microseconds of the
acknowledgement did (a review measured hundreds in 2,000 such reads), and reads over gRPC rarely (4 in
1,000 on a loaded 2-core host, 0 in another run). A caller that must see a given write waits for
:meth:`RedisClient.sync` (a round trip per tracking connection, answered after the invalidations owed it),
or turns the cache off (``AETHER_NEAR_CACHE_MB=0``). A connection that stops hearing from Redis without
closing (a partition) stops the cache from answering within about a second, and is closed when its
heartbeat ping goes unanswered for 10 s (:meth:`RedisClient._beat`), which clears the cache.

Two bounds besides invalidation: an entry is served for at most ``max_age_s`` after it was stored, and a
blob of a view with a TTL only until its write time (in its header) plus that TTL. Writers keep keys for
at least the TTL after the write (``control_plane/features/online_writer.py``), so a key the writers' own
expiry removes is never served, with the TTL as margin for clock skew between the writer and this host;
an expiry set on a key by hand is seen when Redis deletes the key (it samples expired keys), or at the
max age. Staleness itself is still judged per read from the blob's event time.

The cache is bounded by bytes (values, keys and a fixed overhead per entry) and evicts the least recently
used entry first.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Final

from kernels.packed_blob import HEADER_SIZE

#: The stand-in for "not in the cache" in :meth:`NearCache.lookup` (None means "cached as absent"); compare
#: with ``is``: a value read from Redis is never this object.
MISS: Final = b"\x00near-cache-miss"
#: Bytes an entry costs besides its key's and value's contents, measured with tracemalloc (Python 3.11):
#: the two bytes objects' headers (33 each), the OrderedDict's slot and link, the (value, until) tuple and
#: its float (~131). The byte bound counts it.
ENTRY_OVERHEAD = 200
_WRITE_TS = slice(HEADER_SIZE - 8, HEADER_SIZE)  # the header's last field: the write timestamp (µs)


@dataclass(frozen=True, slots=True)
class NearCacheStats:
    hits: int
    misses: int
    invalidations: int  # entries dropped because Redis said the key changed (or all, on a reset)
    evictions: int  # entries dropped to stay under the byte bound
    entries: int
    bytes: int


class NearCache:
    """Key → (value or None for absent, served until) with an LRU byte bound. Single-threaded: the event
    loop's."""

    def __init__(self, max_bytes: int, max_age_s: float) -> None:
        if max_bytes < 1 or max_age_s <= 0:
            raise ValueError(
                f"near cache needs max_bytes ≥ 1 and max_age_s > 0, got {max_bytes}, {max_age_s}"
            )
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._entries: collections.OrderedDict[bytes, tuple[bytes | None, float]] = collections.OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._invalidations = 0
        self._evictions = 0

    def lookup(self, keys: list[bytes], now_s: float) -> list[bytes | None]:
        """Each key's cached value (None: cached as absent) or :data:`MISS`; ``now_s`` is the wall clock."""
        entries = self._entries
        out: list[bytes | None] = []
        for key in keys:
            entry = entries.get(key)
            if entry is not None and now_s < entry[1]:
                entries.move_to_end(key)
                out.append(entry[0])
                self._hits += 1
                continue
            if entry is not None:  # past its bound: its key may be gone from Redis
                self._drop(key)
            out.append(MISS)
            self._misses += 1
        return out

    def missed(self, count: int) -> None:
        """Counts ``count`` reads that went to Redis without a lookup (Redis had sent something unread)."""
        self._misses += count

    def store(self, keys: list[bytes], values: object, ttls_s: list[int], now_s: float) -> None:
        """Stores an MGET's reply ``values`` for ``keys`` (``ttls_s``: each key's view TTL, 0 = none). Called
        by the connection that read the reply, before it reads anything after it. A reply of the wrong
        shape (an error) stores nothing."""
        if not isinstance(values, list) or len(values) != len(keys):
            return
        age_bound = now_s + self.max_age_s
        for key, value, ttl_s in zip(keys, values, ttls_s, strict=True):
            until = age_bound
            if value is not None:
                if not isinstance(value, bytes):
                    continue
                if ttl_s > 0:
                    if len(value) < HEADER_SIZE:
                        continue  # not a blob: the reader reports it; nothing to bound it by
                    write_s = int.from_bytes(value[_WRITE_TS], "little", signed=True) / 1_000_000
                    until = min(until, write_s + ttl_s)
                    if until <= now_s:
                        continue
            self._put(key, value, until)

    def invalidate(self, keys: list[bytes] | None) -> None:
        """Redis says ``keys`` changed (None: the whole database was flushed)."""
        if keys is None:
            self.reset()
            return
        for key in keys:
            if key in self._entries:
                self._drop(key)
                self._invalidations += 1

    def reset(self) -> None:
        """Forget everything: a connection that could announce changes is gone."""
        self._invalidations += len(self._entries)
        self._entries.clear()
        self._bytes = 0

    def stats(self) -> NearCacheStats:
        return NearCacheStats(
            hits=self._hits,
            misses=self._misses,
            invalidations=self._invalidations,
            evictions=self._evictions,
            entries=len(self._entries),
            bytes=self._bytes,
        )

    def _put(self, key: bytes, value: bytes | None, until: float) -> None:
        if key in self._entries:  # first, so that a value too large to keep leaves no older one behind
            self._drop(key)
        size = _size(key, value)
        if size > self.max_bytes:
            return
        self._entries[key] = (value, until)
        self._bytes += size
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self._evictions += 1

    def _drop(self, key: bytes) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= _size(key, value)


def _size(key: bytes, value: bytes | None) -> int:
    return len(key) + (len(value) if value is not None else 0) + ENTRY_OVERHEAD
