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
  is retried too (delivery is at least once), but written once: every request carries a key, this
  shipper's random sender id and the next sequence number, the same in all its retries and its own for
  each part of a split request, and the server answers a key it applied before without writing again
  (see ``LogBatchKey`` in ``tracking.proto``). The server relies on requests being sent one at a time.
* A send the server refuses (INVALID_ARGUMENT, NOT_FOUND...) is retried run by run so that one bad run
  does not sink the others; what is still refused is dropped and counted, its error kept in
  :attr:`MetricShipper.last_error`.
* Neither thread ever dies of one batch: data that cannot be built into a request (a value the checks at
  the call let through) costs its run's share of that batch, and an unexpected error while sending costs
  that batch; both are counted as dropped, settled (so flush returns) and kept in ``last_error``.
* A shipper serves the process that made it. Its threads do not survive ``fork``, so in a forked child
  (a ``multiprocessing`` pool started with ``fork``) nothing would ever be sent: there every call that
  adds or flushes raises RuntimeError saying so (before, the child's data was kept in a buffer no thread
  read, and lost without a word), and :meth:`MetricShipper.close` returns at once.
* :meth:`MetricShipper.flush` waits until everything added before it was sent or dropped;
  :meth:`MetricShipper.close` takes at most ``timeout`` seconds in all: calls are cut to the time left,
  nothing is sent once it is spent, and every point not yet sent or dropped then is counted as dropped
  (one still on the wire may yet arrive). A thread still busy in a call is left to finish alone (it
  counts nothing more) and runs the ``when_stopped`` callbacks, e.g. closing the channel, when it ends.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping

import grpc

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import AetherError, DeadlineExceeded, Internal, InvalidArgument
from clients.sdk.tracking_requests import (
    FIELD_BYTES,
    KEY_BYTES,
    MAX_REQUEST_BYTES,
    POINT_BYTES,
    Entry,
    Outgoing,
    build_outgoing,
    entry_size,
    fitted,
    halves,
)

_log = logging.getLogger("aether.tracking")

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


#: Every shipper of this process, so that a forked child can mark them (see _mark_forked).
_shippers: weakref.WeakSet[MetricShipper] = weakref.WeakSet()


def _mark_forked() -> None:
    """In a forked child: every inherited shipper is left without its threads (and maybe with a lock a
    thread of the parent held at the fork), so it refuses to take data it could never send."""
    for shipper in list(_shippers):
        shipper.forked = True


os.register_at_fork(after_in_child=_mark_forked)


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
        self._pending: list[Entry] = []
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
        # The idempotency key of each request: sequence numbers in sending order, used by the sender
        # thread only (so no lock).
        self.sender_id = uuid.uuid4().hex
        self._sequence = 0
        # Built requests wait here for the sender thread: one waiting, one on the wire (see _loop).
        self._outbox: queue.Queue[Outgoing | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="aether-tracking-shipper", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="aether-tracking-sender", daemon=True)
        self._pid = os.getpid()
        self.forked = False  # set in a process forked from this one (_mark_forked)
        _shippers.add(self)
        self._thread.start()
        self._sender.start()

    # Called by the training loop ------------------------------------------------------------------------

    def add_points(self, run_id: str, step: int, timestamp_us: int, metrics: Mapping[str, float]) -> bool:
        """Buffers the points of one step; False (and counted as dropped) when the buffer is full."""
        count = len(metrics)
        self.refuse_forked()
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
                Entry(run_id, count, step, timestamp_us, metrics, size=count * POINT_BYTES + FIELD_BYTES)
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
        self.refuse_forked()
        with self._lock:
            if self._stopping:
                raise RuntimeError("the tracking client is closed")
            entry = Entry(run_id, params=params, tags=tags, end=end, start=start)
            entry.size = entry_size(entry)
            self._pending.append(entry)
            self._added += 1

    def refuse_forked(self) -> None:
        """RuntimeError in a process forked from the one that made this shipper (checked before its lock,
        which a thread of the parent may have held at the fork: taking it would hang the child)."""
        if self.forked:
            raise RuntimeError(
                f"this tracking client was created in process {self._pid}, and process {os.getpid()} is a "
                "fork of it: the client's background threads do not survive a fork, so nothing logged "
                "here would ever be sent; create a TrackingClient in this process"
            )

    # Flushing ------------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until everything added so far was sent or dropped; False on timeout."""
        self.refuse_forked()
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
        call, and :meth:`when_stopped` callbacks run when it ends. In a forked child, False at once:
        the threads are the parent's, and what the buffer holds is the parent's to send."""
        if self.forked:
            return False
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

    def _take(self) -> list[Entry] | None:
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
                parts: list[tuple[Outgoing, Exception | None]]
                try:
                    if self._gave_up():  # nothing will be sent: do not spend time building
                        points = sum(entry.points for entry in entries if entry.metrics is not None)
                        settles = sum(entry.settles for entry in entries)
                        parts = [(Outgoing(None, {}, settles, points), None)]
                    else:
                        parts = fitted(entries, self.max_request_bytes - KEY_BYTES)  # keyed when sent
                except Exception as unexpected:  # a bug: lose this batch, not every later one
                    points = sum(entry.points for entry in entries if entry.metrics is not None)
                    parts = [(Outgoing(None, {}, len(entries), points), unexpected)]
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

    def _deliver(self, outgoing: Outgoing) -> tuple[int, int]:
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
        """Sends a request not sent before, under a key of its own that its retries repeat."""
        self._sequence += 1
        request.key.sender_id, request.key.sequence = self.sender_id, self._sequence
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
