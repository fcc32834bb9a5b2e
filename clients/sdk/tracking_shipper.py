"""The background shipper of the tracking SDK: metric points, parameters, tags and run ends are appended
to an in-memory buffer by the training loop, grouped into ``LogBatch`` requests by one background thread
and sent by another, one call at a time and in order (building the next request overlaps the current call).

Policy (what a training loop can rely on):

* Logging never waits on the network. ``add_*`` takes a lock for a list append; the thread sends a batch
  when ``batch_points`` points are waiting or ``interval_s`` passed since the last send, whichever comes
  first, merging every run's data into one call. At most two built requests wait beside the buffer.
* The buffer is bounded (``max_buffered_points``). When it is full (the server is slow or down), new
  points are dropped and counted (:attr:`MetricShipper.dropped_points`); a warning is logged once per
  episode. Parameters, tags and run ends are never dropped for space.
* A request holds at most ``max_request_bytes`` (2 MiB, half of gRPC's default 4 MiB receive limit):
  entries are taken up to an estimate of that, and a built request found larger is split (by entries,
  one entry by its keys) and sent in parts, in order. A request refused as larger than the receiver's
  limit (RESOURCE_EXHAUSTED "larger than max": a server or proxy with a lower limit) is not resent as
  it is but split in halves until the parts pass; a single key too large for the receiver is dropped.
* A failed send that may succeed later (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED) is
  retried with exponential backoff (``retry_initial_s`` doubling up to ``retry_max_s``) for as long as the
  client is open; meanwhile logging goes on into the buffer. A call cut off after the server committed
  may be retried, so delivery is at least once.
* A send the server refuses (INVALID_ARGUMENT, NOT_FOUND...) is retried run by run so that one bad run
  does not sink the others; what is still refused is dropped and counted, its error kept in
  :attr:`MetricShipper.last_error`.
* Neither thread ever dies of one batch: data that cannot be built into a request (a value the checks at
  the call let through) costs its run's share of that batch, and an unexpected error while sending costs
  that batch; both are counted as dropped, settled (so flush returns) and kept in ``last_error``.
* :meth:`MetricShipper.flush` waits until everything added before it was sent or dropped;
  :meth:`MetricShipper.close` takes at most ``timeout`` seconds in all: calls are cut to the time left,
  nothing is sent once it is spent, and every point not yet sent or dropped then is counted as dropped
  (one still on the wire may yet arrive). A thread still busy in a call is left to finish alone (it
  counts nothing more) and runs the ``when_stopped`` callbacks, e.g. closing the channel, when it ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import AetherError, DeadlineExceeded, Internal, InvalidArgument

_log = logging.getLogger("aether.tracking")

#: Default bound on a request's size: well under gRPC's default 4 MiB receive limit (the control plane's),
#: so that no request depends on a raised limit, and a few such requests in flight cost little memory.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
#: Upper bound on a metric point's share of a request: a double, a step and a timestamp (varints).
_POINT_BYTES = 28
#: Upper bound on the framing of one key/value pair, a run's batch or start.
_FIELD_BYTES = 16

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(slots=True)
class _Entry:
    """One call of the training loop: points of one step, or parameters/tags, or a run end."""

    run_id: str
    points: int = 0
    step: int = 0
    timestamp_us: int = 0
    metrics: Mapping[str, float] | None = None
    params: Mapping[str, str] | None = None
    tags: Mapping[str, str] | None = None
    end: pb.RunEnd | None = None
    start: pb.RunStart | None = None
    size: int = 0  # estimated bytes in a request (the builder checks the real size)
    settles: int = 1  # 0 for the pieces of a split entry but its last: the call settles with that one


def _text_bytes(values: Mapping[str, str] | None) -> int:
    """Estimated size of a map's keys and values in a request (a byte a character: the builder checks the
    real size, and splits a request that non-ASCII text made too large)."""
    if not values:
        return 0
    return sum(len(key) + len(value) + _FIELD_BYTES for key, value in values.items())


def _entry_size(entry: _Entry) -> int:
    size = _FIELD_BYTES + _text_bytes(entry.params) + _text_bytes(entry.tags)
    if entry.start is not None:
        start = entry.start
        size += len(start.name) + len(start.experiment_id) + _FIELD_BYTES * 2
        size += _text_bytes(start.params) + _text_bytes(start.tags)
    return size


def _split_entry(entry: _Entry) -> list[_Entry] | None:
    """One entry as two or more that log the same thing in order (its maps halved; a start without its
    parameters and tags, which follow it); None when it holds a single key and cannot be split."""
    head = _Entry(entry.run_id, settles=0)
    tail = _Entry(entry.run_id, settles=entry.settles)
    if entry.start is not None and (entry.start.params or entry.start.tags):
        bare = pb.RunStart()
        bare.CopyFrom(entry.start)
        bare.ClearField("params")
        bare.ClearField("tags")
        head.start = bare
        tail.params, tail.tags = dict(entry.start.params), dict(entry.start.tags)
        tail.params.update(entry.params or {})  # a start's own entry carries no other params or tags
        tail.end = entry.end
    elif entry.params and entry.tags:
        head.params, tail.tags, tail.end = entry.params, entry.tags, entry.end
    elif entry.metrics is not None and len(entry.metrics) > 1:
        keys = list(entry.metrics)
        half = len(keys) // 2
        head.metrics = {key: entry.metrics[key] for key in keys[:half]}
        tail.metrics = {key: entry.metrics[key] for key in keys[half:]}
        head.step = tail.step = entry.step
        head.timestamp_us = tail.timestamp_us = entry.timestamp_us
        head.points, tail.points = half, len(keys) - half
    else:
        values = entry.params or entry.tags
        if values is None or len(values) < 2:
            return None
        items = list(values.items())
        first, second = dict(items[: len(items) // 2]), dict(items[len(items) // 2 :])
        if entry.params:
            head.params, tail.params = first, second
        else:
            head.tags, tail.tags = first, second
        tail.end = entry.end
    for piece in (head, tail):
        piece.size = piece.points * _POINT_BYTES + _entry_size(piece)
    return [head, tail]


def halves(entries: list[_Entry]) -> tuple[list[_Entry], list[_Entry]] | None:
    """Entries in two parts that, sent in order, log the same; None when there is one unsplittable entry."""
    if len(entries) > 1:
        middle = len(entries) // 2
        return entries[:middle], entries[middle:]
    pieces = _split_entry(entries[0]) if entries else None
    if pieces is None:
        return None
    return pieces[:1], pieces[1:]


@dataclass
class _RunAccumulator:
    steps: list[_Entry] = field(default_factory=list)  # entries with metrics, in logging order
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    end: pb.RunEnd | None = None
    start: pb.RunStart | None = None

    def message(self, run_id: str) -> pb.RunBatch:
        batch = pb.RunBatch(
            run_id=run_id,
            metrics=series_of(self.steps) if self.steps else (),
            params=self.params,
            tags=self.tags,
        )
        if self.end is not None:
            batch.end.CopyFrom(self.end)
        if self.start is not None:
            batch.start.CopyFrom(self.start)
        return batch


def series_of(steps: list[_Entry]) -> list[pb.MetricSeries]:
    """The points of one run's ``log_metrics`` calls as one series per key (keys in first-logged order,
    points in logging order)."""
    metrics = [entry.metrics for entry in steps if entry.metrics is not None]
    first = metrics[0].keys()
    if all(logged.keys() == first for logged in metrics):
        # The usual shape, the same metrics at every step: one comprehension per column instead of three
        # appends per point (this loop is most of the SDK's CPU time).
        step_column = [entry.step for entry in steps]
        time_column = [entry.timestamp_us for entry in steps]
        return [
            pb.MetricSeries(
                key=key,
                values=[logged[key] for logged in metrics],
                steps=step_column,
                timestamps_us=time_column,
            )
            for key in first
        ]
    series: dict[str, tuple[list[float], list[int], list[int]]] = {}
    for entry, logged in zip(steps, metrics, strict=True):
        for key, value in logged.items():
            arrays = series.get(key)
            if arrays is None:
                arrays = series[key] = ([], [], [])
            arrays[0].append(value)
            arrays[1].append(entry.step)
            arrays[2].append(entry.timestamp_us)
    return [
        pb.MetricSeries(key=key, values=values, steps=steps, timestamps_us=times)
        for key, (values, steps, times) in series.items()
    ]


def build_request(entries: list[_Entry]) -> tuple[pb.LogBatchRequest, dict[str, int]]:
    """Entries (in logging order) grouped per run and metric into parallel arrays; also the points per
    run, for counting what a refused run loses."""
    runs: dict[str, _RunAccumulator] = {}
    points: dict[str, int] = {}
    for entry in entries:
        run = runs.get(entry.run_id)
        if run is None:
            run = runs[entry.run_id] = _RunAccumulator()
            points[entry.run_id] = 0
        if entry.metrics is not None:
            points[entry.run_id] += entry.points
            run.steps.append(entry)
        if entry.params:
            run.params.update(entry.params)
        if entry.tags:
            run.tags.update(entry.tags)
        if entry.end is not None:
            run.end = entry.end
        if entry.start is not None:
            run.start = entry.start
    return pb.LogBatchRequest(runs=[run.message(run_id) for run_id, run in runs.items()]), points


@dataclass(frozen=True)
class _Outgoing:
    request: pb.LogBatchRequest | None  # None when nothing of the entries could be built
    points: dict[str, int]  # per run, for counting what a refused run loses
    entries: int  # calls of the training loop this settles
    unbuildable: int = 0  # points of runs whose data could not be built into a request (dropped)
    built: list[_Entry] = field(default_factory=list)  # the entries in ``request``, to split it again


def build_outgoing(entries: list[_Entry]) -> tuple[_Outgoing, Exception | None]:
    """The request for ``entries``; when building fails (a value the SDK's checks at the call let
    through), the runs that cannot be built are left out, their points counted as unbuildable, and the
    first error returned: one bad value costs its run's share of the batch, not the shipper."""
    settles = sum(entry.settles for entry in entries)
    try:
        request, points = build_request(entries)
        return _Outgoing(request, points, settles, built=entries), None
    except Exception as error:
        first: Exception = error
    by_run: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_run.setdefault(entry.run_id, []).append(entry)
    good: list[_Entry] = []
    unbuildable = 0
    for run_entries in by_run.values():
        try:
            build_request(run_entries)
        except Exception:
            unbuildable += sum(entry.points for entry in run_entries if entry.metrics is not None)
        else:
            good.extend(run_entries)
    if not good:
        return _Outgoing(None, {}, settles, unbuildable), first
    request, points = build_request(good)
    return _Outgoing(request, points, settles, unbuildable, good), first


def fitted(entries: list[_Entry], max_bytes: int) -> list[tuple[_Outgoing, Exception | None]]:
    """The requests for ``entries``, in order, each at most ``max_bytes`` where splitting allows (see
    :func:`halves`); a part that cannot be split is returned as it is."""
    outgoing, error = build_outgoing(entries)
    if outgoing.request is None or outgoing.request.ByteSize() <= max_bytes:
        return [(outgoing, error)]
    parts = halves(outgoing.built)
    if parts is None:
        return [(outgoing, error)]
    # The unbuildable runs were left out of ``built``: count them (and settle the calls) with the last part.
    head, tail = fitted(parts[0], max_bytes), fitted(parts[1], max_bytes)
    last, last_error = tail[-1]
    settles = outgoing.entries - sum(part.entries for part, _ in (*head, *tail))
    tail[-1] = (
        _Outgoing(
            last.request, last.points, last.entries + settles, last.unbuildable + outgoing.unbuildable,
            last.built,
        ),
        last_error or error,
    )  # fmt: skip
    return [*head, *tail]


class _GaveUp(DeadlineExceeded):
    """A batch not sent because close's deadline passed (the error that made it wait is kept instead)."""


def too_large(error: AetherError) -> bool:
    """Whether a call failed because its message is larger than the sender's or receiver's limit
    (gRPC's RESOURCE_EXHAUSTED "Received/Sent message larger than max")."""
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in error.message


class MetricShipper:
    def __init__(
        self,
        send: Callable[[pb.LogBatchRequest, float | None], object],
        *,
        batch_points: int = 50_000,
        interval_s: float = 0.5,
        max_buffered_points: int = 2_000_000,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._send = send
        self.batch_points = batch_points
        self.interval_s = interval_s
        self.max_buffered_points = max_buffered_points
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.max_request_bytes = max_request_bytes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: list[_Entry] = []
        self._pending_points = 0
        self._added = 0  # entries ever added
        self._settled = 0  # entries sent or dropped, in order
        self._flush_wanted = False
        self._give_up_at: float | None = None  # set by close: stop retrying after this monotonic time
        self._stopping = False
        self._warned_full = False
        self._accepted_points = 0  # points that entered the buffer
        self._settled_points = 0  # of those, shipped or dropped
        self._abandoned = False  # close gave up on the threads and counted what they held as dropped
        self._sender_done = False
        self._on_stopped: list[Callable[[], object]] = []
        self.shipped_points = 0
        self.dropped_points = 0
        self.last_error: AetherError | None = None
        # Built requests wait here for the sender thread: one waiting, one on the wire (see _loop).
        self._outbox: queue.Queue[_Outgoing | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="aether-tracking-shipper", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="aether-tracking-sender", daemon=True)
        self._thread.start()
        self._sender.start()

    # Called by the training loop ------------------------------------------------------------------------

    def add_points(self, run_id: str, step: int, timestamp_us: int, metrics: Mapping[str, float]) -> bool:
        """Buffers the points of one step; False (and counted as dropped) when the buffer is full."""
        count = len(metrics)
        with self._lock:
            if self._stopping:
                raise RuntimeError("the tracking client is closed")
            if self._pending_points + count > self.max_buffered_points:
                self.dropped_points += count
                if not self._warned_full:
                    self._warned_full = True
                    _log.warning(
                        "tracking buffer full (%d points): dropping new points until the server catches up",
                        self.max_buffered_points,
                    )
                return False
            self._pending.append(
                _Entry(run_id, count, step, timestamp_us, metrics, size=count * _POINT_BYTES + _FIELD_BYTES)
            )
            self._pending_points += count
            self._accepted_points += count
            self._added += 1
            if self._pending_points >= self.batch_points:
                self._changed.notify_all()
            return True

    def add(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        end: pb.RunEnd | None = None,
        start: pb.RunStart | None = None,
    ) -> None:
        """Buffers a run's start, parameters, tags or end (never dropped for space)."""
        with self._lock:
            if self._stopping:
                raise RuntimeError("the tracking client is closed")
            entry = _Entry(run_id, params=params, tags=tags, end=end, start=start)
            entry.size = _entry_size(entry)
            self._pending.append(entry)
            self._added += 1

    # Flushing ------------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until everything added so far was sent or dropped; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._added
            self._flush_wanted = True
            self._changed.notify_all()
            while self._settled < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def close(self, timeout: float = 30.0) -> bool:
        """Flushes, then stops the threads, all within ``timeout`` seconds (retries included); what is not
        sent by then is dropped and counted. True when both threads ended; else one is still inside a
        call, and :meth:`when_stopped` callbacks run when it ends."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._stopping:
                return not self._sender.is_alive()
            self._give_up_at = deadline
            self._changed.notify_all()  # a retry pause ends early when it would outlast the deadline
        self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
        for thread in (self._thread, self._sender):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stopped = not (self._thread.is_alive() or self._sender.is_alive())
        with self._lock:
            if not stopped:
                # What the threads still hold will not be sent in time: count it now, so the warning
                # below and dropped_points are complete (the threads count nothing more).
                self._abandoned = True
                self.dropped_points += self._accepted_points - self._settled_points
                self._settled = self._added
                self._changed.notify_all()
        if self.dropped_points:
            _log.warning(
                "tracking: %d metric point(s) were dropped (last error: %s)",
                self.dropped_points,
                self.last_error.message if self.last_error else "buffer full",
            )
        return stopped

    def when_stopped(self, callback: Callable[[], object]) -> None:
        """Calls ``callback`` once the sender thread has ended (at once if it has)."""
        with self._lock:
            if not self._sender_done:
                self._on_stopped.append(callback)
                return
        callback()

    def _gave_up(self) -> bool:
        with self._lock:
            return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    # The background thread -----------------------------------------------------------------------------

    def _take(self) -> list[_Entry] | None:
        """Waits for a batch to be due; takes up to ``batch_points`` points' worth of entries. None when
        stopping with nothing left."""
        with self._lock:
            due = time.monotonic() + self.interval_s
            while True:
                if self._pending and (
                    self._flush_wanted or self._stopping or self._pending_points >= self.batch_points
                ):
                    break
                if self._stopping:
                    return None
                remaining = due - time.monotonic()
                if remaining <= 0 and self._pending:
                    break
                self._changed.wait(remaining if remaining > 0 else self.interval_s)
            # Up to batch_points points and max_request_bytes (estimated; starts, parameters and tags count
            # there only), at least one entry: the builder splits what is still too large.
            taken = points = size = 0
            while taken < len(self._pending) and points < self.batch_points:
                entry = self._pending[taken]
                if taken and size + entry.size > self.max_request_bytes:
                    break
                points += entry.points
                size += entry.size
                taken += 1
            entries = self._pending[:taken]
            del self._pending[:taken]
            self._pending_points -= points
            if not self._pending:
                self._flush_wanted = False
                self._warned_full = False
            return entries

    def _settle(self, entries: int, shipped: int, dropped: int) -> None:
        with self._lock:
            if self._abandoned:  # close counted these as dropped already
                return
            self._settled_points += shipped + dropped
            self._settled += entries
            self.shipped_points += shipped
            self.dropped_points += dropped
            self._changed.notify_all()

    def _loop(self) -> None:
        """Takes and builds requests. Building (most of the SDK's CPU time) overlaps with sending the
        previous request and the server writing it; the sender sends one request at a time, in order, so
        a run's points still arrive after its start and its end after its points."""
        try:
            while (entries := self._take()) is not None:
                parts: list[tuple[_Outgoing, Exception | None]]
                try:
                    if self._gave_up():  # nothing will be sent: do not spend time building
                        points = sum(entry.points for entry in entries if entry.metrics is not None)
                        settles = sum(entry.settles for entry in entries)
                        parts = [(_Outgoing(None, {}, settles, points), None)]
                    else:
                        parts = fitted(entries, self.max_request_bytes)
                except Exception as unexpected:  # a bug: lose this batch, not every later one
                    points = sum(entry.points for entry in entries if entry.metrics is not None)
                    parts = [(_Outgoing(None, {}, len(entries), points), unexpected)]
                for outgoing, error in parts:
                    if error is not None:
                        reason = f"cannot encode logged data: {type(error).__name__}: {error}"
                        self._refused(InvalidArgument(reason))
                    # Settled by the sender, in order, even with nothing to send: flush() counts on it.
                    self._outbox.put(outgoing)
        finally:
            self._outbox.put(None)

    def _send_loop(self) -> None:
        try:
            self._send_all()
        finally:
            with self._lock:
                self._sender_done = True
                callbacks, self._on_stopped = self._on_stopped, []
            for callback in callbacks:
                callback()

    def _send_all(self) -> None:
        while (outgoing := self._outbox.get()) is not None:
            shipped, dropped = 0, outgoing.unbuildable
            try:
                if outgoing.request is not None:
                    shipped, lost = self._deliver(outgoing)
                    dropped += lost
            except Exception as error:  # a bug: count the batch as dropped and keep sending the next ones
                _log.exception("tracking: unexpected error while sending a batch")
                shipped, dropped = 0, outgoing.unbuildable + sum(outgoing.points.values())
                self.last_error = Internal(f"sending a batch failed: {type(error).__name__}: {error}")
            self._settle(outgoing.entries, shipped, dropped)

    def _deliver(self, outgoing: _Outgoing) -> tuple[int, int]:
        """Sends with retries; returns (points shipped, points dropped)."""
        request, points = outgoing.request, outgoing.points
        assert request is not None
        error = self._send_with_retries(request)
        if error is None:
            return sum(points.values()), 0
        if too_large(error):
            parts = halves(outgoing.built)
            if parts is None:  # one key the receiver will never take
                self._refused(error)
                return 0, sum(points.values())
            shipped = dropped = 0
            for part in parts:  # in order; each half built before, so building cannot fail now
                half, _ = build_outgoing(part)
                sent, lost = self._deliver(half) if half.request is not None else (0, half.unbuildable)
                shipped, dropped = shipped + sent, dropped + lost
            return shipped, dropped
        if len(request.runs) == 1 or error.code in _RETRYABLE:  # gave up retrying: the server is away
            self._refused(error)
            return 0, sum(points.values())
        shipped = dropped = 0
        for run in request.runs:  # isolate the run the server refuses
            single = pb.LogBatchRequest(runs=[run])
            run_error = self._send_with_retries(single)
            if run_error is None:
                shipped += points[run.run_id]
            else:
                self._refused(run_error)
                dropped += points[run.run_id]
        return shipped, dropped

    def _refused(self, error: AetherError) -> None:
        if isinstance(error, _GaveUp):  # keep the error that made the batch wait; close warns once
            self.last_error = self.last_error or error
            return
        self.last_error = error
        _log.warning("tracking: the server refused logged data: %s: %s", error.code.name, error.message)

    def _send_with_retries(self, request: pb.LogBatchRequest) -> AetherError | None:
        delay = self.retry_initial_s
        while True:
            with self._lock:
                give_up_at = self._give_up_at
            timeout = None  # the client's own call timeout
            if give_up_at is not None:  # closing: no call may outlast close's deadline
                timeout = give_up_at - time.monotonic()
                if timeout <= 0:
                    return _GaveUp("the tracking client closed before this batch could be sent")
            try:
                self._send(request, timeout)
                return None
            except AetherError as error:
                if error.code not in _RETRYABLE or too_large(error):  # the same bytes would fail again
                    return error
                self.last_error = error
                if not self._pause(delay):
                    return error
                delay = min(delay * 2, self.retry_max_s)

    def _pause(self, delay: float) -> bool:
        """Waits ``delay`` seconds before a retry; False (at once) when close's deadline comes first."""
        until = time.monotonic() + delay
        with self._lock:
            while True:
                if self._give_up_at is not None and until > self._give_up_at:
                    return False
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return True
                self._changed.wait(remaining)
