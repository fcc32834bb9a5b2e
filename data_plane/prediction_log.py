"""The prediction log: one entry per Predict request (and per mirrored shadow call) appended to a Redis
Stream, for the canary controller (outcome and latency of every request, per variant), drift monitoring
and joining labels that arrive later (features and outputs of a sample).

It never blocks or fails a request: :meth:`PredictionLog.record` only appends to a bounded in-memory
buffer (dropping, and counting, when full); a background task drains the buffer on a connection of its
own, a batch at a time with one Lua script call that runs ``XADD <stream> MAXLEN ~ <n> * ...`` per
entry (one round trip and one future per batch: the log costs the serving event loop a few µs per
request), and drops (and counts) a batch when Redis is down. Every recorded entry ends up counted once,
in ``written`` or in ``dropped``: what :meth:`PredictionLog.stop` could not flush in time is counted
dropped, and so is an entry recorded after it. A batch waits up to ``linger_s`` (5 ms)
for company unless it is full: at low rates each request would otherwise cost its own write, Lua call
and reply while the next request waits for the same two cores (measured: two Redis round trips per
Predict at one caller, one of them the log's). Readers (the canary controller's baking windows) are
seconds behind anyway.

Entry fields, on every entry: ``request_id``, ``deployment``, ``model``, ``version``, ``variant``,
``role`` (``served`` or ``shadow``), ``routing_key``, ``ts_us``, ``latency_ms`` (server-side, from the
request's arrival at the predictor to its answer), ``ok`` (``"1"``/``"0"``), ``error_code`` (the gRPC
status name: ``OK``, ``INVALID_ARGUMENT``, ``UNAVAILABLE``, ...) and ``sampled`` (``"1"``/``"0"``).
Only sampled entries (a configurable fraction of requests, and every mirrored request with its shadow's
answers) add ``entities`` (JSON list of join-key maps), ``features`` (raw row-major bytes) with
``features_dtype`` and ``features_shape`` ("rows,cols"), and per output ``output:<name>`` (raw bytes)
with ``output:<name>:dtype`` / ``output:<name>:shape``. A failed request's entry has no outputs, and
no features when it failed before they were assembled. The control plane's reader of these entries is
``control_plane/deployments/observations.py`` (each entry parsed in ``log_entries.py``): it counts every
entry as a request of its variant, and as an error only when ``error_code`` is a failure on the server's
side; a refusal as the caller's mistake (INVALID_ARGUMENT, NOT_FOUND, CANCELLED, ...) is counted apart
and compared between the canary and the primary. So the code must be the one the caller was answered
with.

Gap markers. A dropped entry (Redis refused the batch -- down, OOM under ``maxmemory`` with
``noeviction``, a timeout -- or the buffer was full) would otherwise be an unseen hole: a reader of the
stream cannot tell "no requests" from "requests not logged", and the canary controller would judge a
step on the entries that happened to get through. So the log remembers, per deployment, how many of its
entries it dropped and the ``ts_us`` of the first and last of them, and the next batch it manages to
write starts with one marker entry per such deployment: ``role`` = ``gap`` (no request's role, so
readers that look for ``served``/``shadow`` entries pass over it), ``deployment``, ``dropped`` (the
count), ``first_ts_us``, ``last_ts_us`` and ``ts_us`` (when the marker was made). Everything after a
marker in the stream was written without a further loss for that deployment until the next marker. A
batch whose write fails keeps its markers pending (merged with its own drops), so a gap is reported once
writes resume however long they were refused; while they are refused no marker can be written, which is
why the canary controller also wants recent entries before it advances (``canary.decide``). The entries
dropped by :meth:`PredictionLog.stop` get no marker: nothing is written after them.

An outage is logged once, not once per failed write (:class:`WriteOutage`): its first failed write as a
warning, the next ones at DEBUG with a warning every ``outage_remind_s`` (60 s) giving the running count,
and the first write after them at INFO, with how long it lasted and how many entries it cost. Logged per
write, a Redis down made two lines a second for as long as it was down, most of them "dropped 0
entries" from the retries of the gap markers alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from data_plane.redis_client import RedisClient
from data_plane.redis_connection import pack_command
from data_plane.redis_errors import RedisCommandError, RedisMisconfigured, RedisUnavailable
from data_plane.runtime.base import Array

_log = logging.getLogger("aether.data_plane.prediction_log")

SERVED = "served"
SHADOW = "shadow"
#: The ``role`` of a gap marker: entries of its deployment were dropped (see the module doc).
GAP = "gap"


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionRecord:
    request_id: str
    deployment: str
    model: str
    version: int
    variant: str
    role: str  # SERVED or SHADOW
    routing_key: str
    ts_us: int
    latency_ms: float = 0.0
    ok: bool = True
    error_code: str = "OK"
    # Sampled entries only (None otherwise): what the model saw and answered.
    entities: Sequence[Mapping[str, str]] | None = None
    features: Array | None = None
    outputs: Mapping[str, Array] | None = None

    @property
    def sampled(self) -> bool:
        return self.entities is not None or self.features is not None or self.outputs is not None

    def fields(self) -> list[bytes]:
        """The entry's RESP bulk strings: name, value, name, value, ... (every request pays for this, so it
        is built directly rather than through ``pack_command``)."""
        out = [
            _F_REQUEST_ID, _bulk(self.request_id.encode()),
            _F_DEPLOYMENT, _bulk(self.deployment.encode()),
            _F_MODEL, _bulk(self.model.encode()),
            _F_VERSION, _bulk(b"%d" % self.version),
            _F_VARIANT, _bulk(self.variant.encode()),
            _F_ROLE, _bulk(self.role.encode()),
            _F_ROUTING_KEY, _bulk(self.routing_key.encode()),
            _F_TS_US, _bulk(b"%d" % self.ts_us),
            _F_LATENCY_MS, _bulk(b"%.3f" % self.latency_ms),
            _F_OK, _ONE if self.ok else _ZERO,
            _F_ERROR_CODE, _bulk(self.error_code.encode()),
            _F_SAMPLED, _ONE if self.sampled else _ZERO,
        ]  # fmt: skip
        if self.entities is not None:
            out += [
                _bulk(b"entities"),
                _bulk(json.dumps([dict(e) for e in self.entities], separators=(",", ":")).encode()),
            ]
        if self.features is not None:
            out += [
                _bulk(b"features"), _bulk(self.features.tobytes()),
                _bulk(b"features_dtype"), _bulk(self.features.dtype.name.encode()),
                _bulk(b"features_shape"), _bulk(_shape(self.features)),
            ]  # fmt: skip
        for name, array in (self.outputs or {}).items():
            key = f"output:{name}".encode()
            out += [
                _bulk(key), _bulk(array.tobytes()),
                _bulk(key + b":dtype"), _bulk(array.dtype.name.encode()),
                _bulk(key + b":shape"), _bulk(_shape(array)),
            ]  # fmt: skip
        return out


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _shape(array: Array) -> bytes:
    return ",".join(str(d) for d in array.shape).encode()


#: Appends a batch of entries in one round trip: ARGV is the stream's MAXLEN, then per entry its number
#: of field arguments followed by those arguments.
_APPEND_SCRIPT = b"""
local i, appended = 2, 0
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 1, i + count))
  i = i + 1 + count
  appended = appended + 1
end
return appended
"""
_APPEND_SHA = hashlib.sha1(_APPEND_SCRIPT).hexdigest().encode()
_LOAD_APPEND_SCRIPT = pack_command(b"SCRIPT", b"LOAD", _APPEND_SCRIPT)
_F_REQUEST_ID, _F_DEPLOYMENT, _F_MODEL, _F_VERSION, _F_VARIANT, _F_ROLE, _F_ROUTING_KEY = (
    _bulk(name)
    for name in (b"request_id", b"deployment", b"model", b"version", b"variant", b"role", b"routing_key")
)
_F_TS_US, _F_LATENCY_MS, _F_OK, _F_ERROR_CODE, _F_SAMPLED = (
    _bulk(name) for name in (b"ts_us", b"latency_ms", b"ok", b"error_code", b"sampled")
)
_ONE, _ZERO = _bulk(b"1"), _bulk(b"0")


@dataclass(slots=True)
class Gap:
    """Entries of one deployment dropped since its last marker was written."""

    dropped: int
    first_ts_us: int
    last_ts_us: int

    def add(self, other: Gap) -> None:
        self.dropped += other.dropped
        self.first_ts_us = min(self.first_ts_us, other.first_ts_us)
        self.last_ts_us = max(self.last_ts_us, other.last_ts_us)

    def fields(self, deployment: str, ts_us: int) -> list[bytes]:
        """The marker entry's RESP bulk strings."""
        return [
            _F_ROLE, _bulk(GAP.encode()),
            _F_DEPLOYMENT, _bulk(deployment.encode()),
            _bulk(b"dropped"), _bulk(b"%d" % self.dropped),
            _bulk(b"first_ts_us"), _bulk(b"%d" % self.first_ts_us),
            _bulk(b"last_ts_us"), _bulk(b"%d" % self.last_ts_us),
            _F_TS_US, _bulk(b"%d" % ts_us),
        ]  # fmt: skip


class WriteOutage:
    """How the log reports a run of failed writes (see the module doc). An error that is not Redis's
    (a bug) is an ERROR with its traceback, said at once also in an outage that showed only Redis's."""

    def __init__(self, remind_every_s: float) -> None:
        self._remind_every_s = remind_every_s
        self.failures = 0  # failed writes in a row
        self._dropped_before = 0  # the log's dropped count when the outage began
        self._since = self._reminded = 0.0
        self._worst = logging.NOTSET  # the highest level logged in this outage

    def failed(self, error: Exception, batch: int, dropped: int) -> None:
        """A write of ``batch`` entries failed with ``error``; ``dropped``: the log's count, them included."""
        redis_side = isinstance(error, (RedisUnavailable, RedisCommandError, RedisMisconfigured))
        level = logging.WARNING if redis_side else logging.ERROR
        now = time.monotonic()
        self.failures += 1
        if self.failures == 1:
            self._since = self._reminded = now
            self._dropped_before = dropped - batch
        lost = dropped - self._dropped_before
        if self.failures == 1 or level > self._worst:
            self._worst = max(self._worst, level)
            _log.log(
                level,
                "prediction log cannot write to Redis (%s): dropping entries, each counted and marked in the"
                " stream once it takes writes again (%d dropped so far)",
                error, lost, exc_info=None if redis_side else error,
            )  # fmt: skip
        elif now - self._reminded >= self._remind_every_s:
            self._reminded = now
            _log.log(
                level,
                "prediction log still cannot write to Redis (%s): %d entries dropped over %.0f s, %d failed"
                " writes",
                error, lost, now - self._since, self.failures,
            )  # fmt: skip
        else:
            _log.debug("prediction log write of %d entries failed: %s", batch, error)

    def written(self, dropped: int) -> None:
        """A write went through; ``dropped``: the log's count."""
        if self.failures:
            _log.info(
                "prediction log writes to Redis again, after %d failed writes over %.0f s: %d entries"
                " dropped, marked in the stream",
                self.failures, time.monotonic() - self._since, dropped - self._dropped_before,
            )  # fmt: skip
            self.failures = 0
            self._worst = logging.NOTSET


class PredictionLog:
    def __init__(
        self,
        redis: RedisClient,
        stream: str,
        *,
        sample_rate: float,
        maxlen: int,
        buffer_size: int = 10_000,
        batch_size: int = 256,
        timeout_s: float = 1.0,
        linger_s: float = 0.005,
        on_drop: Callable[[int], None] | None = None,
        outage_remind_s: float = 60.0,
    ) -> None:
        self._redis = redis
        # The batch command's arguments before the entries, packed once (RESP, without the array header).
        # EVALSHA, not EVAL: a Redis user granted EVALSHA and SCRIPT LOAD only (what the control plane's
        # streaming needs of the same URL) was refused every write NOPERM; and the script is not sent
        # with every batch. A Redis that does not know it answers NOSCRIPT, without running it: loaded
        # then, and the batch sent again (see _send).
        head = pack_command(b"EVALSHA", _APPEND_SHA, b"1", stream.encode(), str(maxlen).encode())
        self._head = head[head.index(b"\r\n") + 2 :]
        self.sample_rate = sample_rate
        self._buffer: collections.deque[PredictionRecord] = collections.deque()
        self._buffer_size = buffer_size
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._on_drop = on_drop or (lambda count: None)
        self._linger_s = linger_s
        self._wake = asyncio.Event()  # something is buffered
        self._full = asyncio.Event()  # a whole batch is buffered, or the log is closing: no lingering
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self._closing = False
        self._closed = asyncio.Event()  # set by stop(): ends a back-off at once
        self._stopped = False
        self._in_flight = 0  # entries of the batch on its way to Redis
        self.dropped = 0
        #: Per deployment, entries dropped and not yet reported by a marker in the stream.
        self._gaps: dict[str, Gap] = {}
        self._outage = WriteOutage(outage_remind_s)

    def sampled(self) -> bool:
        """Whether this request's features and outputs go into its entry (``sample_rate`` of them)."""
        rate = self.sample_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)

    def record(self, record: PredictionRecord) -> None:
        """Queues one entry; never blocks, never raises."""
        if len(self._buffer) >= self._buffer_size or self._stopped:  # stopped: nothing would drain it
            self._drop([record])
            return
        self._buffer.append(record)
        self._wake.set()
        if len(self._buffer) >= self._batch_size:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")

    async def stop(self, flush_timeout_s: float = 1.0) -> None:
        """Flushes what is buffered (within the timeout), then stops. The drain task itself finishes the
        buffer, so a batch already on its way to Redis completes and is counted rather than cancelled
        mid-flight; only what is left at the timeout is cancelled, and counted dropped: the entries still
        buffered and those of a batch cut off on its way (which Redis may still have appended; the log
        cannot know, and counts them lost)."""
        if self._task is None:
            return
        self._closing = True
        self._closed.set()
        self._wake.set()
        self._full.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), flush_timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._stopped = True
        lost = len(self._buffer) + self._in_flight
        self._buffer.clear()
        self._in_flight = 0
        if lost:
            self._count_dropped(lost)
            _log.warning("prediction log dropped %d entries it could not write before stopping", lost)

    def _drop(self, records: Sequence[PredictionRecord]) -> None:
        """Counts ``records`` dropped and remembers them per deployment for the next gap marker."""
        for record in records:
            self._pend(record.deployment, Gap(1, record.ts_us, record.ts_us))
        if records:  # a batch of markers alone drops no entry
            self._count_dropped(len(records))

    def _pend(self, deployment: str, gap: Gap) -> None:
        """Adds ``gap`` to what the deployment's next marker reports."""
        pending = self._gaps.get(deployment)
        if pending is None:
            self._gaps[deployment] = gap
        else:
            pending.add(gap)

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        self._on_drop(count)

    @property
    def pending_gaps(self) -> dict[str, Gap]:
        """Per deployment, what was dropped and is not yet marked in the stream (a copy)."""
        return {name: Gap(g.dropped, g.first_ts_us, g.last_ts_us) for name, g in self._gaps.items()}

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._linger_s > 0 and not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._linger_s)
            if not self._closing:
                self._full.clear()
            # Markers go out on their own too, once a back-off has passed: a gap must reach the stream
            # when writes work again even if no request comes after it (not while closing: a Redis
            # that refuses them would keep the loop going until stop()'s timeout).
            while self._buffer or (self._gaps and not self._closing):
                await self._flush()
                # What is left (entries recorded while that batch was on its way, or beyond a batch)
                # lingers in turn, unless a whole batch is already waiting or the log is closing. The
                # wake is set for it: some of it may have been buffered before the wake was cleared.
                if self._buffer and len(self._buffer) < self._batch_size and not self._closing:
                    self._wake.set()
                    break
            if self._closing:
                return

    async def _flush(self) -> None:
        """Appends up to ``batch_size`` buffered entries with one script call (one round trip, one
        future: per-entry commands would cost the event loop a task and a timer per request)."""
        batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
        # The pending gaps' markers lead the batch, so that they come before every entry written after
        # the drops they report; drops while this batch is on its way start new gaps for the next one.
        gaps, self._gaps = self._gaps, {}
        marked_at = now_us()
        parts = [self._head]
        arguments = 5  # EVALSHA, the script's SHA1, the key count, the stream, MAXLEN
        for fields in [g.fields(d, marked_at) for d, g in gaps.items()] + [r.fields() for r in batch]:
            parts.append(_bulk(b"%d" % len(fields)))
            parts += fields
            arguments += 1 + len(fields)
        command = b"*%d\r\n%s" % (arguments, b"".join(parts))
        self._in_flight = len(batch)  # a cancellation (stop's timeout) leaves it for stop() to count
        try:
            await self._send(command)
        except Exception as error:  # whatever went wrong, the entries are dropped and counted, never raised
            # A timeout may come after Redis ran the script: those entries are in the stream and counted
            # dropped. Which it was cannot be known here; counting them lost keeps written + dropped equal
            # to what was recorded, and ``dropped`` an upper bound of what the stream is missing.
            self._in_flight = 0
            # The markers were not written (or, after a timeout, perhaps were: a gap reported twice
            # only makes a reader more careful), so they stay pending, with this batch's drops added.
            for deployment, gap in gaps.items():
                self._pend(deployment, gap)
            self._drop(batch)
            self._outage.failed(error, len(batch), self.dropped)
            if not self._closing:  # Redis is struggling: do not hammer it; the buffer bounds memory
                with contextlib.suppress(TimeoutError):  # a stop() ends the pause: it has little time
                    await asyncio.wait_for(self._closed.wait(), 0.5)
            return
        self._in_flight = 0
        self.written += len(batch)
        self._outage.written(self.dropped)

    async def _send(self, command: bytes) -> None:
        """Sends one batch's EVALSHA; on NOSCRIPT (Redis restarted, or its scripts were flushed: the script
        did not run) loads the script and sends the batch once more. The three calls share the one write
        timeout: each with a timeout of its own, a batch after a restart could take three times as long,
        and ``stop()``'s flush would wait on it that much longer."""
        deadline = time.monotonic() + self._timeout_s
        try:
            await self._redis.execute_packed(command, self._timeout_s)
        except RedisCommandError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            # A call left no time is refused RedisUnavailable without being sent (``execute_packed``).
            await self._redis.execute_packed(_LOAD_APPEND_SCRIPT, deadline - time.monotonic())
            await self._redis.execute_packed(command, deadline - time.monotonic())


def now_us() -> int:
    return time.time_ns() // 1000
