"""Acknowledging prediction-log entries once no unreported window counts them.

An entry is acknowledged once every window that counts it (holds its rows, or counts them dropped) has
its report stored or was dropped; an entry no window counts (skipped, malformed, of a disabled monitor)
at once. Acknowledged as soon as applied, the rows of the window open when the control plane stopped
were lost: in no report, not counted dropped. Pending, those entries are read again after a restart (the
consumer's pending entries come first, :mod:`.stream`) and build that window again. This is at least
once: an entry whose rows straddle a reported count window and the open one, or whose rows were late for
a time window already reported, counts again after a restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from control_plane.monitoring.entry_batch import DecodedEntry
from control_plane.monitoring.scoring import Key


class HeldEntries:
    """The applied entries some window still counts, not acknowledged. ``counts(key, entry)``: whether a
    window of ``key`` not yet reported (the open one, or one queued) counts the entry; ``ack`` acknowledges
    entries in the stream's consumer group."""

    def __init__(
        self, counts: Callable[[Key, bytes], bool], ack: Callable[[list[bytes]], Awaitable[object]]
    ) -> None:
        self._counts = counts
        self._ack = ack
        self._held: dict[bytes, Key] = {}

    def hold(self, batch: list[DecodedEntry]) -> list[bytes]:
        """Keeps the entries of ``batch`` that a window counts pending; returns the others, to acknowledge
        now."""
        free: list[bytes] = []
        for decoded in batch:
            logged = decoded.logged
            key = None if logged is None else (logged.deployment, logged.model, logged.version)
            if key is not None and self._counts(key, decoded.entry_id):
                self._held[decoded.entry_id] = key
            else:
                free.append(decoded.entry_id)
        return free

    async def release(self, key: Key, entries: Iterable[bytes]) -> None:
        """Acknowledges the ``entries`` of a window of ``key`` just handled that no other window counts."""
        done = [e for e in entries if e in self._held and not self._counts(key, e)]
        await self._ack(done)
        for entry_id in done:  # after the ack: one that failed leaves them for ack_released
            del self._held[entry_id]

    async def ack_released(self) -> None:
        """Acknowledges held entries no window counts any more (their acknowledgement failed before)."""
        done = [e for e, key in self._held.items() if not self._counts(key, e)]
        await self._ack(done)
        for entry_id in done:
            del self._held[entry_id]
