"""Dynamic batching for one model version.

Two layers, so that the policy is testable without a server, a clock or a model:

* :class:`BatchScheduler` — the policy as a step function over plain data. ``offer`` enqueues (or sheds
  with RESOURCE_EXHAUSTED when the bounded queue is full); ``step(now)`` says which requests expired,
  which batch to run now (if any) and when to look again. Times are plain floats on a monotonic clock.
* :class:`DynamicBatcher` — a thin asyncio driver: it feeds the scheduler ``time.monotonic()``, runs each
  batch in a worker thread (the runtimes release the GIL) and resolves each caller's future.

Policy:

* A request that arrives at an idle queue (nothing queued, no batch running) waits for company only as
  long as company has been coming: it is dispatched once its batch holds the rows that
  :class:`~data_plane.batch_company.CompanyEstimate` expects (1 — at once, no added delay — until waits
  have shown that others arrive within the queue delay; that module says how it learns), or when the queue
  delay runs out; one with less time to its deadline than the delay goes at once, and so does one that
  holds those rows by itself. A dispatch runs on the next turn of the event loop, so requests that
  arrived in the same turn join it without anyone waiting — unless the version's batches run on the loop
  (below): then a request expected to go alone runs right away in its caller's turn, as a batch of one.
* While a batch runs, requests queue. When the runner frees up, the queue is dispatched when it holds
  the rows that idle arrivals have been finding (the estimate's ``target``: 1, at once, until they find
  company) or its oldest request has waited ``max_queue_delay``, whichever comes first — or at once when
  its deadline comes before that.
* The driver's timers are the event loop's, and uvloop's are whole milliseconds, rounded: a delay under
  0.5 ms fires on the next loop turn, so it never lets company arrive (under load gRPC hands requests to
  the loop one turn at a time). Hence the default ``max_queue_delay`` of 2 ms; the estimate keeps it
  from costing a lone caller anything but a rare probe.
* A batch takes requests in arrival order with the same group (the shape of their non-batch dimensions,
  so they concatenate), up to ``max_batch_size`` rows; a request larger than that runs alone.
* Background requests (shadow copies) wait in a queue of their own and count against their own in-flight
  limit (``max_background_in_flight``): a background batch running never holds the slot that the answered
  requests' next batch waits for, nor does an answered batch hold back a background one. Both queues share
  the bound ``max_queue_size``.
* Requests whose deadline has passed are dropped before inference (DEADLINE_EXCEEDED). A caller that gives
  up while it waits (cancelled: the client went away, or gRPC ended the call at its deadline) leaves the
  queue at once (``withdraw``), so the bounded queue and its depth count only callers still waiting.

Where a batch runs: in a worker thread, so that the event loop keeps serving while the model computes —
unless the version's batches are known to be short: then on the event loop itself, one batch per loop
turn (:mod:`data_plane.inline_gate` says when and why).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from clients.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from data_plane.batch_company import CompanyEstimate
from data_plane.inline_gate import InlineGate

_log = logging.getLogger("aether.data_plane.batching")

P = TypeVar("P")  # what a request carries (the scheduler never looks inside)
R = TypeVar("R")  # what a request gets back


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int = 32  # rows
    max_queue_delay_s: float = 0.002
    max_queue_size: int = 1024  # requests waiting; beyond this new requests are shed
    max_in_flight: int = 1  # batches of answered requests running at once
    max_background_in_flight: int = 1  # background batches (shadow copies) running at once, counted apart
    # Batches expected to run shorter than this run on the event loop (0 = always in a worker thread).
    inline_below_s: float = 0.0

    def __post_init__(self) -> None:
        limits = (self.max_batch_size, self.max_queue_size, self.max_in_flight, self.max_background_in_flight)
        if min(limits) < 1:
            raise ValueError(f"batch policy limits must be at least 1: {self}")
        if self.max_queue_delay_s < 0 or self.inline_below_s < 0:
            raise ValueError(f"max_queue_delay_s and inline_below_s must not be negative: {self}")


@dataclass(slots=True, eq=False)
class QueuedRequest(Generic[P]):
    payload: P
    rows: int
    group: Hashable
    enqueued_at: float
    deadline: float | None  # monotonic seconds; None = no deadline
    # Arrived at an idle queue: leaves once its batch holds this many rows, or at the queue delay. 0: it
    # arrived behind others (busy rules). None until offered: ``offer`` asks the lane's CompanyEstimate.
    waits_for: int | None = None
    background: bool = False  # a shadow copy: its own queue and in-flight limit (see the module docstring)

    @property
    def immediate(self) -> bool:
        """Arrived at an idle queue and waits for no company: dispatched at once."""
        return bool(self.waits_for) and self.rows >= (self.waits_for or 0)


@dataclass(slots=True)
class Step(Generic[P]):
    batch: list[QueuedRequest[P]] = field(default_factory=list)  # run now (empty: nothing to run)
    expired: list[QueuedRequest[P]] = field(default_factory=list)  # answer DEADLINE_EXCEEDED
    wake_at: float | None = None  # call step again at this time (None: only on the next event)


class _Lane(Generic[P]):
    """One kind of request's queue and its batches in flight (answered or background)."""

    __slots__ = ("company", "in_flight", "queue")

    def __init__(self) -> None:
        self.queue: collections.deque[QueuedRequest[P]] = collections.deque()
        self.in_flight = 0
        self.company = CompanyEstimate()  # what a request arriving here idle waits for


class BatchScheduler(Generic[P]):
    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._served: _Lane[P] = _Lane()
        self._background: _Lane[P] = _Lane()
        self._with_deadline = 0  # queued requests that carry a deadline (skip the scan when zero)

    @property
    def depth(self) -> int:
        return len(self._served.queue) + len(self._background.queue)

    @property
    def in_flight(self) -> int:
        return self._served.in_flight + self._background.in_flight

    def arrival(self, background: bool = False, time_left: float | None = None) -> int:
        """For a request arriving now with ``time_left`` to its deadline (None: none): the rows its batch
        waits for (see ``QueuedRequest.waits_for``), 0 when its lane is busy. Asked once per arrival
        (``offer`` asks when the request does not say): an idle arrival counts towards the next probe."""
        lane = self._background if background else self._served
        if lane.queue or lane.in_flight:
            return 0
        delay = self.policy.max_queue_delay_s
        if delay <= 0 or (time_left is not None and time_left <= delay):
            return 1  # no time to wait in (a wait must not outlast the caller): nothing to learn
        return lane.company.rows_to_wait_for(self.policy.max_batch_size)

    def offer(self, request: QueuedRequest[P]) -> None:
        if self.depth >= self.policy.max_queue_size:
            raise ResourceExhausted(
                f"the model's queue is full ({self.policy.max_queue_size} requests waiting); retry later"
            )
        lane = self._background if request.background else self._served
        if request.waits_for is None:
            time_left = None if request.deadline is None else request.deadline - request.enqueued_at
            request.waits_for = self.arrival(request.background, time_left)
        lane.queue.append(request)
        if request.deadline is not None:
            self._with_deadline += 1

    def step(self, now: float) -> Step[P]:
        out: Step[P] = Step()
        if self._with_deadline:
            self._drop_expired(now, out.expired)
        policy = self.policy
        due = self._dispatch(self._served, policy.max_in_flight, now, out)
        if not out.batch and self._background.queue:  # background requests are rare: one check when none
            later = self._dispatch(self._background, policy.max_background_in_flight, now, out)
            due = later if due is None else due if later is None else min(due, later)
        deadline = self._earliest_deadline()
        if out.batch or due is None:  # after a launch the driver steps again at once
            out.wake_at = deadline
        else:
            out.wake_at = due if deadline is None else min(due, deadline)
        return out

    def _dispatch(self, lane: _Lane[P], limit: int, now: float, out: Step[P]) -> float | None:
        """Puts ``lane``'s batch in ``out`` when one is due and the lane has a free slot; else returns when
        its head will be due (None: the lane is empty or at its limit, so only an event changes that)."""
        queue = lane.queue
        if not queue or lane.in_flight >= limit:
            return None
        head = queue[0]
        due = head.enqueued_at + self.policy.max_queue_delay_s
        # A head that arrived behind others waits, once a slot is free, for the company that idle
        # arrivals have been finding (1 while none has: it goes at once).
        wanted = min(head.waits_for or lane.company.target, self.policy.max_batch_size)
        alone = head.rows >= wanted  # it fills its wait by itself: nothing learnt about company
        # The rows of its shape that came, whether or not they all fit in the batch.
        came = 0 if alone else sum(r.rows for r in queue if r.group == head.group)
        # A head whose deadline comes before its delay runs out goes now: waiting for company would let
        # it expire in the queue (an idle arrival with so little time never waits: ``arrival``).
        hurried = head.deadline is not None and head.deadline <= due
        if not (alone or hurried or now >= due or came >= wanted):
            return due
        out.batch = self._take_batch(lane)
        lane.in_flight += 1
        if not alone and (came >= wanted or not hurried):  # a hurried head's wait was cut, not run out
            lane.company.formed(wanted, came)
        return None

    def company(self, background: bool = False) -> CompanyEstimate:
        """The lane's estimate of company (read it, do not change it: the scheduler keeps it)."""
        return self._background.company if background else self._served.company

    def batch_done(self, background: bool = False) -> None:
        lane = self._background if background else self._served
        if lane.in_flight <= 0:
            raise RuntimeError("batch_done called with no batch in flight")
        lane.in_flight -= 1

    def withdraw(self, request: QueuedRequest[P]) -> bool:
        """Removes a request whose caller gave up while it waited, so that its slot is free at once; False
        when it had already left the queue (taken into a batch, expired or drained)."""
        lane = self._background if request.background else self._served
        try:
            lane.queue.remove(request)  # by identity: QueuedRequest does not define equality
        except ValueError:
            return False
        if request.deadline is not None:
            self._with_deadline -= 1
        lane.company.abandoned(request.waits_for or 0, request.rows)  # when it was a head waiting
        return True

    def drain(self) -> list[QueuedRequest[P]]:
        """Everything still queued, removed (used when the model is unloaded)."""
        drained = [*self._served.queue, *self._background.queue]
        self._served.queue.clear()
        self._background.queue.clear()
        self._with_deadline = 0
        return drained

    def _drop_expired(self, now: float, expired: list[QueuedRequest[P]]) -> None:
        for lane in (self._served, self._background):
            keep: collections.deque[QueuedRequest[P]] = collections.deque()
            dropped = len(expired)
            for request in lane.queue:
                if request.deadline is not None and request.deadline <= now:
                    expired.append(request)
                    self._with_deadline -= 1
                    lane.company.abandoned(request.waits_for or 0, request.rows)
                else:
                    keep.append(request)
            if len(expired) > dropped:
                lane.queue = keep

    def _earliest_deadline(self) -> float | None:
        if not self._with_deadline:
            return None
        return min(
            r.deadline
            for lane in (self._served, self._background)
            for r in lane.queue
            if r.deadline is not None
        )

    def _take_batch(self, lane: _Lane[P]) -> list[QueuedRequest[P]]:
        queue = lane.queue
        head = queue.popleft()
        batch = [head]
        rows = head.rows
        limit = self.policy.max_batch_size
        if rows < limit and queue:
            rest: collections.deque[QueuedRequest[P]] = collections.deque()
            while queue:
                request = queue.popleft()
                if request.group == head.group and rows + request.rows <= limit:
                    batch.append(request)
                    rows += request.rows
                    if rows == limit:
                        break
                else:
                    rest.append(request)
            rest.extend(queue)
            lane.queue = rest
        self._with_deadline -= sum(1 for r in batch if r.deadline is not None)
        return batch


BatchRunner = Callable[[Sequence[P]], list[R | BaseException]]
"""Runs one batch (in a worker thread): the payloads in, one result or exception per payload out."""


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def batch_started(self, size: int, rows: int, queue_depth: int) -> None:
        pass


@dataclass(slots=True, eq=False)
class _Waiter(Generic[P, R]):
    payload: P
    future: asyncio.Future[R]


@dataclass(frozen=True, slots=True)
class _Outcome(Generic[R]):
    results: Sequence[R | BaseException]
    seconds: float  # how long the runner took


class DynamicBatcher(Generic[P, R]):
    """``background_executor`` runs the batches of background requests (``submit(background=True)``:
    shadow copies), so that they never take a thread that the answered requests' batches wait for."""

    def __init__(
        self,
        policy: BatchPolicy,
        runner: BatchRunner[P, R],
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        inline: InlineGate | None = None,
        name: str = "batcher",
        background_executor: Executor | None = None,
    ) -> None:
        self.name = name  # for logs, e.g. "model mlp v1"
        self._scheduler: BatchScheduler[_Waiter[P, R]] = BatchScheduler(policy)
        self._runner = runner
        self._executor = executor
        self._background_executor = background_executor or executor
        self._observer = observer or BatchObserver()
        self._step_scheduled = False
        self._stepping = False
        self.inline = inline or InlineGate(0.0, None, 0)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return self._scheduler.depth

    @property
    def wait_rows(self) -> int:
        """Rows a request arriving at this idle batcher waits for now (1: none; see batch_company)."""
        return self._scheduler.company().target

    @property
    def policy(self) -> BatchPolicy:
        return self._scheduler.policy

    def update_policy(self, policy: BatchPolicy) -> None:
        """Batches formed from now on follow ``policy`` (a serving config change); a running batch is left
        alone. The queue is looked at again at once: under a smaller batch size or a shorter delay, what
        waits may be due now."""
        self._scheduler.policy = policy
        if not self._closed and self._scheduler.depth:
            self._schedule_step(asyncio.get_running_loop())

    async def submit(
        self, payload: P, rows: int, group: Hashable, deadline: float | None, *, background: bool = False
    ) -> R:
        """Queue one request and wait for its result. ``deadline`` is on the ``time.monotonic()`` clock. A
        ``background`` request waits in the background queue and batches only with other background
        requests; those batches run on the background executor and count against their own in-flight
        limit, so they never delay the answered requests' batches."""
        if self._closed:
            raise Unavailable("the model version is being unloaded")
        scheduler = self._scheduler
        now = time.monotonic()
        waits_for = scheduler.arrival(background, None if deadline is None else deadline - now)
        alone = waits_for and rows >= waits_for and not scheduler.depth and not scheduler.in_flight
        if alone and self.inline.admits(rows):
            return self._run_alone(payload, rows, deadline)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        request = QueuedRequest(_Waiter(payload, future), rows, group, now, deadline, waits_for, background)
        scheduler.offer(request)
        self._schedule_step(loop)
        try:
            return await future
        except asyncio.CancelledError:
            # The caller is gone (it cancelled, or gRPC did at its deadline). Its entry leaves the queue now,
            # not when a batch forms: behind a long batch, dead entries would fill the queue and shed live
            # requests (and inflate the queue depth the autoscaler reads). Those behind a head that waited
            # for company are looked at now, not at its timer.
            if scheduler.withdraw(request) and scheduler.depth and not self._closed:
                self._schedule_step(loop)
            raise

    def _run(self, payloads: list[P]) -> _Outcome[R]:
        """Runs one batch and times it (on the loop or in a worker thread)."""
        started = time.perf_counter()
        try:
            results: Sequence[R | BaseException] = self._runner(payloads)
        except Exception as exc:  # the runner's own failure fails the whole batch, not the server
            results = [exc] * len(payloads)
        return _Outcome(results, time.perf_counter() - started)

    def _run_alone(self, payload: P, rows: int, deadline: float | None) -> R:
        """An idle batcher whose batches run on the loop: the request runs at once, in its caller's turn,
        as a batch of one (no queue entry, no future, no extra loop turn)."""
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded("the deadline passed before the request reached its model")
        self._observer.batch_started(1, rows, 0)
        outcome = self._run([payload])
        self._ran_inline(outcome.seconds)
        result = outcome.results[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _ran_inline(self, seconds: float) -> None:
        if self.inline.ran(seconds):
            _log.warning(
                "%s: %d batches in a row ran %.2f ms or longer on the event loop; its batches now run "
                "in worker threads",
                self.name, self.inline.strikes, self.inline.limit_s * 1000,
            )  # fmt: skip

    def close(self) -> None:
        """Fail everything still queued with UNAVAILABLE; a running batch still answers its callers."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for request in self._scheduler.drain():
            if not request.payload.future.done():
                request.payload.future.set_exception(Unavailable("the model version was unloaded"))

    def _step(self, not_before: float = 0.0) -> None:
        self._step_scheduled = False
        self._stepping = True
        loop = asyncio.get_running_loop()
        try:
            while True:
                # A timer that fires is taken as the promise that its time has come: loop timers round to
                # whole milliseconds and may fire a fraction early, which must not re-arm them in a spin.
                now = max(time.monotonic(), not_before)
                step = self._scheduler.step(now)
                for request in step.expired:
                    if not request.payload.future.done():
                        request.payload.future.set_exception(
                            DeadlineExceeded("the deadline passed while the request waited for its batch")
                        )
                if not step.batch:
                    break
                background = step.batch[0].background  # a batch is of one kind (one queue)
                if self._launch(loop, [r for r in step.batch if not r.payload.future.done()], background):
                    # It ran on the loop: let the loop serve I/O before the next batch.
                    self._schedule_step(loop)
                    break
        finally:
            self._stepping = False
        self._arm_timer(loop, step.wake_at)

    def _schedule_step(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._step_scheduled:
            self._step_scheduled = True
            loop.call_soon(self._step)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, wake_at: float | None) -> None:
        # A timer already due no later than asked is kept: firing early costs one step that finds nothing
        # to do, while re-arming on every step (each request's deadline moves the earliest one) would
        # cost a timer per request.
        if wake_at is None or self._closed or (self._timer_at is not None and self._timer_at <= wake_at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wake_at
        self._timer = loop.call_later(max(0.0, wake_at - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_at or 0.0
        self._timer = None
        self._timer_at = None
        self._step(due)

    def _launch(
        self, loop: asyncio.AbstractEventLoop, batch: list[QueuedRequest[_Waiter[P, R]]], background: bool
    ) -> bool:
        """Starts a batch; True when it ran to the end on the loop (inline), False when it went to a
        worker thread (or was empty)."""
        if not batch:  # every caller gave up (cancelled) before the batch formed
            self._scheduler.batch_done(background)
            return False
        rows = sum(r.rows for r in batch)
        self._observer.batch_started(len(batch), rows, self._scheduler.depth)
        waiters = [r.payload for r in batch]
        payloads = [w.payload for w in waiters]
        if self.inline.admits(rows):
            outcome = self._run(payloads)
            self._ran_inline(outcome.seconds)
            self._deliver(waiters, outcome, background)
            return True
        executor = self._background_executor if background else self._executor
        done = loop.run_in_executor(executor, self._run, payloads)
        done.add_done_callback(lambda f: self._delivered(waiters, f, background))
        return False

    def _delivered(
        self, waiters: list[_Waiter[P, R]], done: asyncio.Future[_Outcome[R]], background: bool
    ) -> None:
        if done.cancelled():  # the executor shut down under the batch
            error = Unavailable("the model version was unloaded while its batch waited for a thread")
            self._deliver(waiters, _Outcome([error] * len(waiters), 0.0), background)
        else:
            self._deliver(waiters, done.result(), background)

    def _deliver(self, waiters: list[_Waiter[P, R]], outcome: _Outcome[R], background: bool) -> None:
        self._scheduler.batch_done(background)
        for waiter, result in zip(waiters, outcome.results, strict=True):
            if waiter.future.done():
                continue
            if isinstance(result, BaseException):
                waiter.future.set_exception(result)
            else:
                waiter.future.set_result(result)
        if not self._stepping:
            self._schedule_step(asyncio.get_running_loop())
