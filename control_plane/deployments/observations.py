"""Per-variant observations for the canary controller, read from the data plane's prediction log.

The data plane appends one entry per request to a Redis Stream (``data_plane/prediction_log.py``): the
outcome and latency of every request, features and outputs only for a sample. The fields read here are
``deployment``, ``variant``, ``latency_ms``, ``ok`` (``"1"``/``"0"``) and ``error_code`` (the gRPC status
name the request was answered with); entries of mirrored shadow calls (``role="shadow"``) are skipped.

Every entry counts as a request of its variant, and each failure falls in one of two classes. A failure
on the server's side is an error of the variant's (the canary's error rate is errors / requests):
UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS, RESOURCE_EXHAUSTED, FAILED_PRECONDITION (the version does not
fit its stored data or its serving config), DEADLINE_EXCEEDED (the server dropped the request at its
deadline), and a failed entry with no or an unknown code. A failure whose ``error_code`` is one of
:data:`CALLER_ERROR_CODES` (INVALID_ARGUMENT, NOT_FOUND -- e.g. an entity with no stored features --,
OUT_OF_RANGE, ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED, and CANCELLED: the caller went away) is
a refusal as the caller's mistake: no error by itself, but counted per variant all the same
(``caller_errors``, with the codes seen). It used to be dropped, on the reasoning that every variant
answers a caller's mistake alike; a new version refuses requests its primary answers, though, with these
very codes: it reads a request-time feature the callers do not send yet ("row 0 has no request-time
feature 'hour'": INVALID_ARGUMENT), a feature view version registered but not yet filled (NOT_FOUND), or
features that do not match its input width (INVALID_ARGUMENT). Such a canary showed 0 % errors and was
promoted, and then every request failed. So the controller compares the two variants' refusal rates in
the same window (``canary.decide``): a caller's real mistakes reach both alike and cancel out, a
version's own refusals do not. Without ``ok``, an empty or ``OK`` ``error_code`` means success.

RESOURCE_EXHAUSTED stays a server error though a caller sending too many rows gets it too: the data plane
answers it both for the variant's own overload (its model's queue is full: load shedding) and for a
request over a limit (too many rows or features, an answer too large for one message), and the log
carries only the status name, not which. Counted with the compared class, a canary shedding load while
its primary shed some too would not be rolled back. A caller who sends too many rows gets it from every
variant, so it can roll back a healthy canary when such requests exceed ``max_error_rate`` of its
traffic; raise the policy's rate, or fix the caller, where that happens.

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

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import redis.asyncio
from redis.exceptions import ResponseError

from control_plane.deployments.canary import Observation

#: The data plane's default (``AETHER_PREDICTION_LOG_STREAM`` names another on both planes).
DEFAULT_STREAM = "aether:predictions"
#: Entries read per XRANGE call, and at most per window per tick (the rest is read on the next tick; until
#: the window has caught up, its canary may be rolled back but not advanced: ``canary.decide``).
READ_BATCH = 10_000
MAX_READ_PER_TICK = 200_000

#: gRPC status names of requests refused as the caller's mistake (or that the caller gave up on): never the
#: variant's errors by themselves, but counted per variant as ``caller_errors`` and compared between the
#: canary and the primary (see the module doc: a new version can refuse with these what its primary
#: answers). Not RESOURCE_EXHAUSTED: the log cannot tell a full queue (the variant's fault) from too many
#: rows. Not FAILED_PRECONDITION: on the data plane's request path it says the served version does not fit
#: its data or config (a stored value its integer input cannot hold, feature defaults of the wrong length),
#: which is the version's fault, and a canary failing so must be rolled back.
CALLER_ERROR_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "OUT_OF_RANGE",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "CANCELLED",
    }
)

# A stream trimmed again and again while one read restarts on it (appends outrunning the reader): the read
# stops, not caught up, and the next pass goes on.
_MAX_RESTARTS_PER_READ = 3

#: The ``role`` of the data plane's gap markers (``data_plane.prediction_log.GAP``).
GAP_ROLE = "gap"
TRIMMED = "the prediction log was trimmed past entries of the step not yet read"
LOST = (
    "the prediction log was lost (Redis restarted without its data, or was flushed) with entries not yet read"
)

_EDGES = np.geomspace(0.01, 120_000.0, 420)  # ms: from 10 µs to two minutes


@dataclass
class VariantTally:
    requests: int = 0
    errors: int = 0
    #: Requests refused as the caller's mistake (a code of :data:`CALLER_ERROR_CODES`), per code.
    caller_codes: dict[str, int] = field(default_factory=dict)
    latency_counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(_EDGES) + 1, np.int64))
    #: Stream time (microseconds, from the entry id) of the newest entry counted; None before the first.
    newest_us: int | None = None

    def add(self, failed: bool, latency_ms: float, caller_code: str = "") -> None:
        """Counts one request; ``failed``: it failed on the server's side (see :func:`server_failed`);
        ``caller_code``: the code it was refused with as the caller's mistake ("" when it was not; see
        :func:`caller_refusal`)."""
        self.requests += 1
        if failed:
            self.errors += 1
        elif caller_code:
            self.caller_codes[caller_code] = self.caller_codes.get(caller_code, 0) + 1
        if math.isfinite(latency_ms):
            self.latency_counts[int(np.searchsorted(_EDGES, latency_ms))] += 1

    def p99_ms(self) -> float | None:
        total = int(self.latency_counts.sum())
        if total == 0:
            return None
        index = int(np.searchsorted(np.cumsum(self.latency_counts), math.ceil(0.99 * total)))
        return float(_EDGES[min(index, len(_EDGES) - 1)])  # the bin's upper edge: never optimistic

    @property
    def caller_errors(self) -> int:
        return sum(self.caller_codes.values())

    def observation(self) -> Observation:
        codes = tuple(sorted(self.caller_codes, key=lambda code: (-self.caller_codes[code], code)))
        return Observation(self.requests, self.errors, self.p99_ms(), self.caller_errors, codes)


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    # Replacing what is not UTF-8 rather than raising: an entry the reader raised on would stop its window
    # at that entry for good (the cursor moves only past entries read), and a mangled name matches no
    # deployment or variant, so the entry is skipped or counted as what it says it is.
    value = fields.get(name)
    return value.decode(errors="replace") if value is not None else ""


class ParsedEntry(NamedTuple):
    deployment: str
    variant: str
    failed: bool  # on the server's side: an error of the variant's (see server_failed)
    latency_ms: float
    #: The code of a refusal as the caller's mistake ("": none; see caller_refusal).
    caller_code: str = ""


def server_failed(ok: str, error_code: str) -> bool:
    """Whether an entry with these ``ok`` and ``error_code`` fields is a failure on the server's side: it
    failed (``ok`` is not ``"1"``; without ``ok``, ``error_code`` is neither empty nor ``OK``) and its code
    is not one of :data:`CALLER_ERROR_CODES`."""
    code = error_code.strip().upper()
    if ok:
        if ok in ("1", "true"):
            return False
    elif code in ("", "OK"):
        return False
    return code not in CALLER_ERROR_CODES


def caller_refusal(ok: str, error_code: str) -> str:
    """The code of an entry refused as the caller's mistake: it failed and its code is one of
    :data:`CALLER_ERROR_CODES`; "" for any other entry (answered, or failed on the server's side)."""
    code = error_code.strip().upper()
    if ok in ("1", "true") or code not in CALLER_ERROR_CODES:
        return ""
    return code


def parse_entry(fields: Mapping[bytes, bytes]) -> ParsedEntry | None:
    """(deployment, variant, failed, latency_ms, caller_code) of one prediction-log entry; None for a
    shadow's entry, a gap marker (see :func:`parse_gap`) or one without a deployment."""
    if _text(fields, b"role") in ("shadow", GAP_ROLE) or _text(fields, b"shadow") in ("1", "true"):
        return None
    deployment = _text(fields, b"deployment")
    if not deployment:
        return None
    ok, error_code = _text(fields, b"ok"), _text(fields, b"error_code")
    failed = server_failed(ok, error_code)
    try:
        latency = float(_text(fields, b"latency_ms") or "nan")
    except ValueError:
        latency = math.nan
    return ParsedEntry(deployment, _text(fields, b"variant"), failed, latency, caller_refusal(ok, error_code))


class Gap(NamedTuple):
    deployment: str
    dropped: int  # 0 when the marker does not say (still a gap)
    first_ts_us: int | None
    last_ts_us: int | None

    def describe(self) -> str:
        span = ""
        if self.first_ts_us is not None and self.last_ts_us is not None:
            span = f" between {_clock(self.first_ts_us)} and {_clock(self.last_ts_us)}"
        count = f"{self.dropped} requests" if self.dropped else "requests"
        return f"the data plane could not log {count} of the deployment{span}"


def _int(fields: Mapping[bytes, bytes], name: bytes) -> int | None:
    try:
        return int(_text(fields, name))
    except ValueError:
        return None


def parse_gap(fields: Mapping[bytes, bytes]) -> Gap | None:
    """The data plane's gap marker in one entry (``role`` = ``gap``), or None for any other entry. A
    marker whose numbers do not parse is still a gap: entries were lost, whatever their count."""
    if _text(fields, b"role") != GAP_ROLE:
        return None
    first, last = _int(fields, b"first_ts_us"), _int(fields, b"last_ts_us")
    return Gap(_text(fields, b"deployment"), max(_int(fields, b"dropped") or 0, 0), first, last)


def _clock(ts_us: int) -> str:
    try:
        return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"ts_us {ts_us}"


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
        self, deployment: str, started_at_us: int, *, max_read_per_tick: int = MAX_READ_PER_TICK
    ) -> None:
        self.deployment = deployment
        self.started_at_us = started_at_us
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
        if parsed is None or parsed.deployment != self.deployment:
            return
        for tallies in into:
            tally = tallies.setdefault(parsed.variant, VariantTally())
            tally.add(parsed.failed, parsed.latency_ms, parsed.caller_code)
            tally.newest_us = _stream_id(entry_id)[0] * 1000

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
        self, deployment: str, step_started_at_us: int, canary: str, primary: str
    ) -> StepObservations:
        """What the canary and the primary did since the step began at ``step_started_at_us``."""
        window = self._windows.get(deployment)
        if window is None or window.started_at_us != step_started_at_us:
            window = self._windows[deployment] = StepWindow(
                deployment, step_started_at_us, max_read_per_tick=self._max_read
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
        )

    def forget_except(self, deployments: set[str]) -> None:
        """Drops the windows of deployments whose canary is no longer running."""
        for name in [n for n in self._windows if n not in deployments]:
            del self._windows[name]

    async def close(self) -> None:
        await self._client.aclose()
