"""Per-variant observations for the canary controller, read from the data plane's prediction log.

The data plane appends one entry per request to a Redis Stream (``data_plane/prediction_log.py``): the
outcome and latency of every request, features and outputs only for a sample. The fields read here are
``deployment``, ``variant``, ``model``, ``version``, ``latency_ms``, ``ok`` (``"1"``/``"0"``) and
``error_code`` (the gRPC status name the request was answered with); entries of mirrored shadow calls
(``role="shadow"``) are skipped.

Every entry counts as a request of its variant, but only when it names the model version that variant
serves in the plan observed (``model`` and ``version``; :attr:`StepWindow.serves`; an entry naming
neither counts): a data plane still serving an older plan (its watch lags, or it loads a new version
before it swaps the plan in) logs another version's requests under the same variant name, and with
blue/green names (``green`` promoted over ``blue``, the next canary ``blue`` again) the old ``blue``'s
requests promoted the new one with none served by it. How an entry's outcome is classed (a failure on the
server's side, which is an error of the variant's, or a refusal as the caller's mistake, counted apart
and compared with the primary's) is in :mod:`.log_entries`, with the per-variant tallies and the data
plane's gap markers.

A canary step's window starts at the step's start time: stream ids begin with their append time in
milliseconds, so ``XRANGE`` from that millisecond reads exactly the step's entries; later reads go on from
the last id seen. Latencies go into a log-spaced histogram (about 4 % wide bins), so the p99 of a long
window costs fixed memory.

The data plane caps the stream (``XADD MAXLEN ~``), so entries of a step can be trimmed before they were
read: after a control-plane restart, which reads the step again from its start, or behind a backlog of
more than the cap. A window read on what was left would be missing its oldest part, failures included.
So after each batch the window asks the stream (``XINFO STREAM``: more entries added than it holds, and
its first entry past where the window reads from) whether entries it had yet to read were trimmed; if
so it restarts at the stream's first entry, with empty tallies, and says since when it observes
(:attr:`StepWindow.since_us`): the canary controller then counts the step's bake from there, so the step
is held again, on a window complete from its new start, before the canary advances or is promoted.
This needs Redis 7 (``entries-added``); an older Redis gives no such count, and no trim is detected.

Redis can also lose the whole stream (``FLUSHALL``, or a restart without persistence), entries not yet
read with it. A stream created anew holds every entry added to it, so it shows no trim; but it does not
follow on what the window saw of the old one: the entry the window read last is gone though nothing was
ever removed, or the stream's counters (``last-generated-id``, ``entries-added``,
``max-deleted-entry-id``, which only grow in one stream's life) are below those the window last saw, or
the stream is gone. The window then restarts the same way, at the new stream's first entry, or, while
it is still empty, from its start with :attr:`StepWindow.since_us` at the time the loss is seen (every
entry it will hold comes after); :attr:`StepWindow.restarted_by` says the log was lost.

The data plane also drops entries itself (Redis refused a batch, or its buffer was full), and marks each
such loss in the stream once it can write again: a gap marker (``role`` = ``gap``) with the deployment,
how many of its entries were dropped, and the first and last of their times. A marker of the window's
deployment restarts the window just after it, like a trim (:attr:`StepWindow.since_us` moves to the
marker's stream time, and :attr:`StepWindow.restarted_by` says why): what came before it has a hole of
unknown failures. The restart does not look at whether the dropped entries' times fall inside the step:
those are the data plane's clock, the step's start the control plane's, and a doubt costs only a longer
hold. While Redis refuses writes no marker can arrive; for that the window keeps the stream time of each
variant's newest entry (:attr:`StepObservations.canary_newest_us`), and the controller advances a canary
only on recent entries (``canary.decide``).

What the window read before a restart still happened, though: a trim or a gap means entries may have
been missed, not that those seen did not occur. So the window also keeps the step's tallies, of every
entry it observed since the step began, restarts or not (:meth:`StepWindow.observe_step`), and the
controller rolls the canary back on a breach in those as well (``canary.decide``'s ``whole_step``):
before, a canary that failed and then had a gap escaped the rollback with its failures.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import redis.asyncio
from redis.exceptions import ResponseError

from control_plane.deployments.canary import Observation
from control_plane.deployments.log_entries import Gap, VariantTally, logged_version, parse_entry, parse_gap

#: The data plane's default (``AETHER_PREDICTION_LOG_STREAM`` names another on both planes).
DEFAULT_STREAM = "aether:predictions"
#: Entries read per XRANGE call, and at most per window per tick (the rest is read on the next tick; until
#: the window has caught up, its canary may be rolled back but not advanced: ``canary.decide``).
READ_BATCH = 10_000
MAX_READ_PER_TICK = 200_000

# A stream trimmed again and again while one read restarts on it (appends outrunning the reader): the read
# stops, not caught up, and the next pass goes on.
_MAX_RESTARTS_PER_READ = 3

TRIMMED = "the prediction log was trimmed past entries of the step not yet read"
LOST = (
    "the prediction log was lost (Redis restarted without its data, or was flushed) with entries not yet read"
)


class StepObservations(NamedTuple):
    canary: Observation
    primary: Observation
    #: Every entry logged before this read was read (see :attr:`StepWindow.caught_up`).
    caught_up: bool
    #: Since when the observations run: the step's start, or later where the stream was trimmed past
    #: entries of the step that had not been read, or after a gap marker (see :attr:`StepWindow.since_us`).
    since_us: int
    #: Why the observations start after the step did (None when they do not).
    restarted_by: str | None = None
    #: Stream time (microseconds) of the canary's newest observed entry; None when none was observed.
    canary_newest_us: int | None = None
    #: What each variant did in every entry observed since the step began, those read before a restart
    #: included (see :meth:`StepWindow.observe_step`).
    canary_step: Observation = Observation()
    primary_step: Observation = Observation()
    #: Stream time of the canary's first entry observed in the step (restarts or not); None when none was.
    canary_first_us: int | None = None


def _text_id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stream_id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text_id(value).partition("-")
    return int(ms), int(seq or 0)


class _Restart(NamedTuple):
    """Where a window starts again after entries it had yet to read were lost (see the module doc)."""

    cursor: str
    exclusive: bool
    since_us: int
    #: Entries of the batch just read with ids below this were read before the loss (None: all were).
    first: tuple[int, int] | None
    reason: str


class _StreamMarks(NamedTuple):
    """The counters of one stream that only grow in its life, as the window last saw them."""

    last_generated: tuple[int, int]
    added: int | None  # None before Redis 7
    max_deleted: tuple[int, int] | None

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> _StreamMarks:
        added, deleted = info.get("entries-added"), info.get("max-deleted-entry-id")
        return cls(
            _stream_id(info.get("last-generated-id") or "0-0"),
            None if added is None else int(added),
            None if deleted is None else _stream_id(deleted),
        )

    def below(self, seen: _StreamMarks) -> bool:
        """Whether any counter is below its value in ``seen``: then this is not the stream seen then."""
        if self.last_generated < seen.last_generated:
            return True
        if self.added is not None and seen.added is not None and self.added < seen.added:
            return True
        return (
            self.max_deleted is not None
            and seen.max_deleted is not None
            and self.max_deleted < seen.max_deleted
        )


class StepWindow:
    """What the variants of one deployment did since one canary step began."""

    def __init__(
        self,
        deployment: str,
        started_at_us: int,
        *,
        max_read_per_tick: int = MAX_READ_PER_TICK,
        serves: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.deployment = deployment
        self.started_at_us = started_at_us
        #: The model version each variant named here serves in the plan observed: an entry of such a
        #: variant logged as served by another model version is not counted (see the module doc).
        self.serves = dict(serves or {})
        self._cursor = f"{started_at_us // 1000}-0"  # inclusive for the first read
        self._exclusive = False
        if max_read_per_tick < 1:  # a window that reads nothing never catches up: its canary would hold
            raise ValueError(f"max_read_per_tick must be at least 1, not {max_read_per_tick}")
        self._max_read = max_read_per_tick
        self.tallies: dict[str, VariantTally] = {}
        #: Every entry observed since the step began, kept across restarts (see the module doc).
        self.step_tallies: dict[str, VariantTally] = {}
        #: Whether the last :meth:`read` reached the end of the stream (False: it stopped at its
        #: per-tick cap with entries left, so the tallies cover only the start of the window).
        self.caught_up = False
        #: Where the tallies begin (microseconds): the step's start until entries of the window were
        #: trimmed from the stream before they were read; then the stream's first entry at that time; or
        #: the stream time of the last gap marker of the deployment read.
        self.since_us = started_at_us
        #: Why the window last restarted (None: it never did).
        self.restarted_by: str | None = None
        #: The stream's counters at the last check (None: no stream seen yet), to tell a stream created
        #: anew (see the module doc).
        self._marks: _StreamMarks | None = None

    def newest_us(self, variant: str) -> int | None:
        tally = self.tallies.get(variant)
        return tally.newest_us if tally is not None else None

    def first_us(self, variant: str) -> int | None:
        """Stream time of ``variant``'s first entry observed since the step began (restarts or not)."""
        tally = self.step_tallies.get(variant)
        return tally.oldest_us if tally is not None else None

    def observe(self, variant: str) -> Observation:
        """What ``variant`` did since the window's last restart (since :attr:`since_us`)."""
        tally = self.tallies.get(variant)
        return tally.observation() if tally is not None else Observation()

    def observe_step(self, variant: str) -> Observation:
        """What ``variant`` did in every entry observed since the step began, those read before a trim
        or a gap marker included: evidence of failures, never of a complete window."""
        tally = self.step_tallies.get(variant)
        return tally.observation() if tally is not None else Observation()

    async def read(self, client: redis.asyncio.Redis, stream: str) -> int:
        """Reads the stream's new entries into the tallies; returns how many were read."""
        read = restarts = 0
        self.caught_up = False
        while read < self._max_read and restarts <= _MAX_RESTARTS_PER_READ:
            start = f"({self._cursor}" if self._exclusive else self._cursor
            batch = min(READ_BATCH, self._max_read - read)
            raw: Any = await client.xrange(stream, min=start, max="+", count=batch)
            # Asked after the batch was read: a trim (or loss) that passed the cursor before (or while)
            # it was read shows in the stream now, and the batch would then not follow on the tallies.
            restart = await self._lost_unread(client, stream)
            if restart is not None:
                # What the batch holds before the first entry left was read all the same.
                for entry_id, fields in raw or []:
                    if restart.first is None or _stream_id(entry_id) < restart.first:
                        self._count(entry_id, fields, self.step_tallies)
                self._restart(restart)
                restarts += 1
                continue
            entries: list[tuple[bytes, dict[bytes, bytes]]] = raw or []
            for entry_id, fields in entries:
                gap = parse_gap(fields)
                if gap is not None:
                    if gap.deployment == self.deployment:
                        self._after_gap(entry_id, gap)
                    continue
                self._count(entry_id, fields, self.tallies, self.step_tallies)
            read += len(entries)
            if entries:
                self._cursor = entries[-1][0].decode()
                self._exclusive = True
            if len(entries) < batch:
                self.caught_up = True
                break
        return read

    def _count(self, entry_id: bytes, fields: Mapping[bytes, bytes], *into: dict[str, VariantTally]) -> None:
        parsed = parse_entry(fields)
        if parsed is None or parsed.deployment != self.deployment or not self._serves(parsed.variant, fields):
            return
        for tallies in into:
            tally = tallies.setdefault(parsed.variant, VariantTally())
            tally.add(parsed.failed, parsed.latency_ms, parsed.caller_code)
            tally.newest_us = _stream_id(entry_id)[0] * 1000
            if tally.oldest_us is None:
                tally.oldest_us = tally.newest_us

    def _serves(self, variant: str, fields: Mapping[bytes, bytes]) -> bool:
        """Whether an entry of ``variant`` was served by the model version the variant serves in the plan
        observed (an entry that does not say, or of a variant not named in :attr:`serves`, counts)."""
        planned = self.serves.get(variant)
        if planned is None:
            return True
        model, version = logged_version(fields)
        return (not model or model == planned[0]) and (version is None or version == planned[1])

    async def _lost_unread(self, client: redis.asyncio.Redis, stream: str) -> _Restart | None:
        """Where the window starts again when entries it had yet to read may have been lost: trimmed
        away (entries were removed from the stream, more were added than it holds, and its first entry
        lies past the window's next position), or with the whole stream (see the module doc). None
        otherwise, or when the stream cannot tell (a trim on Redis before 7, which does not count the
        entries added)."""
        seen, self._marks = self._marks, None
        try:
            info: Any = await client.xinfo_stream(stream)
        except ResponseError:  # no such stream: nothing logged yet, or the stream seen before was lost
            return None if seen is None else self._lost_whole(None)
        marks = self._marks = _StreamMarks.of(info)
        first, added = info.get("first-entry"), marks.added
        # The window read an entry at its cursor (exclusive): the same stream still generated it.
        recreated = (seen is not None and marks.below(seen)) or (
            self._exclusive and marks.last_generated < _stream_id(self._cursor)
        )
        if not first:
            return self._lost_whole(info) if recreated else None
        first_id: bytes = first[0]
        # Past the cursor: for a window that read up to it, the entry it read last is gone, and so may be
        # the ones after it (the stream cannot say whether they were ever there); restarting on such a
        # doubt costs only a longer hold.
        past = _stream_id(first_id) > _stream_id(self._cursor)
        removed = added is not None and added > int(info.get("length", 0))
        # An entry read at the cursor gone from a stream that never removed one: not the stream it was in.
        recreated = recreated or (past and self._exclusive and added is not None and not removed)
        if not recreated and not (past and removed):
            return None
        since_us = _stream_id(first_id)[0] * 1000
        return _Restart(
            first_id.decode(), False, since_us, _stream_id(first_id), LOST if recreated else TRIMMED
        )

    def _lost_whole(self, info: Mapping[str, Any] | None) -> _Restart:
        """The restart after the stream was lost, while the new one (``info``; None: none yet) holds no
        entry: from its start, every entry it will hold being added after the loss, which happened by
        now."""
        start = "0-0" if info is None else _text_id(info.get("last-generated-id") or "0-0")
        return _Restart(start, True, time.time_ns() // 1000, None, LOST)

    def _restart(self, restart: _Restart) -> None:
        """Starts the window again where ``restart`` says: what it read before no longer joins up with
        what is left, and a window with a gap must not let the canary advance (what it read stays in the
        step's tallies)."""
        self._cursor, self._exclusive = restart.cursor, restart.exclusive
        self.tallies = {}
        self.since_us = max(self.since_us, restart.since_us)
        self.restarted_by = restart.reason

    def _after_gap(self, marker_id: bytes, gap: Gap) -> None:
        """Starts the window again just after a gap marker of its deployment: the entries read before it
        miss the dropped ones, which may have been the canary's failures (what it read stays in the
        step's tallies). (The read goes on from the marker, so the cursor needs no change.)"""
        self.tallies = {}
        self.since_us = max(self.since_us, _stream_id(marker_id)[0] * 1000)
        self.restarted_by = gap.describe()


class PredictionLogObserver:
    """Keeps one :class:`StepWindow` per running canary step, reading the stream incrementally."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        stream: str = DEFAULT_STREAM,
        *,
        max_read_per_tick: int = MAX_READ_PER_TICK,
    ) -> None:
        self._client = client
        self._stream = stream
        self._max_read = max_read_per_tick
        self._windows: dict[str, StepWindow] = {}

    async def observe(
        self,
        deployment: str,
        step_started_at_us: int,
        canary: str,
        primary: str,
        *,
        serves: Mapping[str, tuple[str, int]] | None = None,
    ) -> StepObservations:
        """What the canary and the primary did since the step began at ``step_started_at_us``;
        ``serves``: the (model, version) each variant serves in the plan (see :attr:`StepWindow.serves`)."""
        window = self._windows.get(deployment)
        wanted = dict(serves or {})
        if window is None or window.started_at_us != step_started_at_us or window.serves != wanted:
            window = self._windows[deployment] = StepWindow(
                deployment, step_started_at_us, max_read_per_tick=self._max_read, serves=wanted
            )
        await window.read(self._client, self._stream)
        return StepObservations(
            window.observe(canary),
            window.observe(primary),
            window.caught_up,
            window.since_us,
            window.restarted_by,
            window.newest_us(canary),
            window.observe_step(canary),
            window.observe_step(primary),
            window.first_us(canary),
        )

    def forget_except(self, deployments: set[str]) -> None:
        """Drops the windows of deployments whose canary is no longer running."""
        for name in [n for n in self._windows if n not in deployments]:
            del self._windows[name]

    async def close(self) -> None:
        await self._client.aclose()
