"""The near cache's own rules, without Redis: the byte bound and LRU order (against a brute-force
reference), the age and write-time bounds, invalidation and reset."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.near_cache import ENTRY_OVERHEAD, MISS, NearCache

NOW = 1_000_000.0


def blob(write_s: float, payload: bytes = b"") -> bytes:
    """A 32-byte header whose write timestamp is ``write_s`` (the cache reads nothing else of it)."""
    return bytes(24) + struct.pack("<q", int(write_s * 1_000_000)) + payload


def test_a_stored_reply_is_served_and_absent_keys_are_cached_as_absent() -> None:
    cache = NearCache(1 << 20, 60.0)
    value = blob(NOW)
    cache.store([b"a", b"b"], [value, None], [0, 0], NOW)
    assert cache.lookup([b"a", b"b", b"c"], NOW + 1) == [value, None, MISS]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 1, 2)


def test_entries_expire_after_max_age() -> None:
    cache = NearCache(1 << 20, 5.0)
    cache.store([b"a"], [blob(NOW)], [0], NOW)
    assert cache.lookup([b"a"], NOW + 4.9)[0] is not MISS
    assert cache.lookup([b"a"], NOW + 5.0)[0] is MISS
    assert cache.stats().entries == 0  # dropped, not kept


def test_a_blob_of_a_view_with_ttl_is_served_only_until_write_time_plus_ttl() -> None:
    """Writers keep a key at least TTL after its write: past that Redis may have dropped it."""
    cache = NearCache(1 << 20, 60.0)
    cache.store([b"a", b"old"], [blob(NOW - 8), blob(NOW - 20)], [10, 10], NOW)
    assert cache.lookup([b"old"], NOW)[0] is MISS  # already past its bound: never stored
    assert cache.lookup([b"a"], NOW + 1.9)[0] is not MISS
    assert cache.lookup([b"a"], NOW + 2.0)[0] is MISS


def test_a_reply_that_is_not_a_blob_list_stores_nothing() -> None:
    cache = NearCache(1 << 20, 60.0)
    cache.store([b"a"], Exception("ERR"), [0], NOW)
    cache.store([b"a", b"b"], [blob(NOW)], [0, 0], NOW)  # wrong length
    cache.store([b"a"], [b"short"], [10], NOW)  # too short for a header: nothing to bound it by
    assert cache.stats().entries == 0


def test_invalidation_drops_named_keys_and_a_flush_or_reset_drops_all() -> None:
    cache = NearCache(1 << 20, 60.0)
    cache.store([b"a", b"b", b"c"], [blob(NOW)] * 3, [0] * 3, NOW)
    cache.invalidate([b"a", b"unknown"])
    assert cache.lookup([b"a", b"b"], NOW) == [MISS, blob(NOW)]
    assert cache.stats().invalidations == 1
    cache.invalidate(None)  # FLUSHDB
    assert cache.stats().entries == 0
    cache.store([b"a"], [blob(NOW)], [0], NOW)
    cache.reset()
    assert cache.lookup([b"a"], NOW) == [MISS]


@settings(max_examples=200, deadline=None)
@given(
    budget=st.integers(min_value=ENTRY_OVERHEAD, max_value=4 * ENTRY_OVERHEAD + 200),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["store", "lookup", "invalidate"]),
            st.integers(0, 7),
            st.integers(0, 120),
        ),
        max_size=60,
    ),
)
def test_byte_bound_and_lru_order_match_a_reference(budget: int, ops: list[tuple[str, int, int]]) -> None:
    cache = NearCache(budget, 60.0)
    reference: dict[bytes, bytes] = {}  # insertion order = recency, oldest first

    def size(key: bytes, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    for op, k, n in ops:
        key = b"k%d" % k
        if op == "store":
            value = blob(NOW, b"x" * n)
            cache.store([key], [value], [0], NOW)
            reference.pop(key, None)  # a newer value replaces it, or (too large to keep) just drops it
            if size(key, value) <= budget:
                reference[key] = value
                while sum(size(a, b) for a, b in reference.items()) > budget:
                    del reference[next(iter(reference))]
        elif op == "lookup":
            got = cache.lookup([key], NOW)[0]
            if key in reference:
                assert got == reference[key]
                reference[key] = reference.pop(key)  # now the most recent
            else:
                assert got is MISS
        else:
            cache.invalidate([key])
            reference.pop(key, None)
        stats = cache.stats()
        assert stats.entries == len(reference)
        assert stats.bytes == sum(size(a, b) for a, b in reference.items()) <= budget


def test_a_value_too_large_to_keep_leaves_no_older_value_under_its_key() -> None:
    cache = NearCache(ENTRY_OVERHEAD + 100, 60.0)
    cache.store([b"a"], [blob(NOW)], [0], NOW)
    cache.store([b"a"], [blob(NOW, b"x" * 200)], [0], NOW)  # newer, and larger than the whole cache
    assert cache.lookup([b"a"], NOW) == [MISS]
