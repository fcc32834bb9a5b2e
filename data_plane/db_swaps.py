"""Seeing a SWAPDB, the one change of the read database that Redis's client tracking does not announce.

Redis tracks the keys a connection read by name, one namespace across databases, and sends an invalidation
when such a key is written, deleted, expired or evicted, and an invalidation of no keys on FLUSHDB,
FLUSHALL and the flush a replica makes before loading its primary's data. SWAPDB touches no key: it swaps
two databases' tables under every connection (``dbSwapDatabases`` in Redis's ``db.c``), and tracking
clients hear nothing. A near cache would then serve the swapped-out values until its max age, and SWAPDB
is how a whole dataset is often replaced at once (loaded into a spare database, then swapped in).

What is visible: Redis counts the calls of each command (``INFO commandstats``, ``cmdstat_swapdb``). Each
tracking connection asks for the counts with its handshake and then with every heartbeat (and
:meth:`RedisClient.sync` asks too); a count that moved since that connection last asked means a swap may
have replaced what it read, and the cache is cleared. Asked on each connection, in its stream: a reply a
connection read before the swap reached Redis comes before that connection's next counts, so what it
stored from the old database is cleared when they arrive. ``CONFIG RESETSTAT`` resets the count: any
change counts, so a reset after swaps clears the cache too, and only as many swaps as there had been,
made between the reset and the next check, would go unseen.
"""

from __future__ import annotations

import re

from data_plane.redis_connection import pack_command

COMMANDSTATS = pack_command(b"INFO", b"commandstats")
_SWAPDB_CALLS = re.compile(rb"(?:^|\n)cmdstat_swapdb:calls=(\d+)")


def swap_count(info: object) -> int | None:
    """The SWAPDB calls an ``INFO commandstats`` reply counts (since Redis started or the last CONFIG
    RESETSTAT), or None for anything else (an error reply included)."""
    if not isinstance(info, bytes):
        return None
    swaps = _SWAPDB_CALLS.search(info)
    return int(swaps.group(1)) if swaps else 0
