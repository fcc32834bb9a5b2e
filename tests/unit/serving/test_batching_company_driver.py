"""Waiting for company (``data_plane.batch_company``) as the scheduler and the asyncio driver use it: what
a waiting head does when it leaves without a batch (its caller gives up, its deadline), requests of several
sizes, and deadlines shorter than the queue delay. The scheduler is driven with plain times; the driver
with plain Python runners, counting loop turns rather than timing them (but for the probes of a lone
caller in worker threads, told apart by waiting out a 200 ms delay)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from data_plane.batch_company import MAX_PROBE_INTERVAL
from data_plane.batching import BatchPolicy, BatchScheduler, DynamicBatcher, QueuedRequest
from data_plane.inline_gate import InlineGate

# Probes of a lone caller: 2, 4, 8, ... arrivals apart, then one in MAX_PROBE_INTERVAL.
_BACK_OFF_PROBES = MAX_PROBE_INTERVAL.bit_length() + 1


def _lone_caller(
    scheduler: BatchScheduler[int],
    sizes: Sequence[int],
    arrivals: int,
    deadline_in: float | None = None,
    gives_up_after: float | None = None,
) -> tuple[int, int]:
    """One caller whose next request comes after the last one's answer (1 ms later), cycling through
    ``sizes`` rows; a request that waits for company waits to its delay, unless its caller gives up first
    (``gives_up_after``: it is withdrawn then). Returns (requests that waited, requests that failed)."""
    delay = scheduler.policy.max_queue_delay_s
    now, waited, failed = 0.0, 0, 0
    for index in range(arrivals):
        deadline = None if deadline_in is None else now + deadline_in
        request = QueuedRequest(index, sizes[index % len(sizes)], "g", now, deadline)
        scheduler.offer(request)
        step = scheduler.step(now)
        if not step.batch:
            waited += 1
            assert step.wake_at is not None and step.wake_at <= now + delay  # never waits past its delay
            if gives_up_after is not None:
                now += gives_up_after
                assert scheduler.withdraw(request)
                failed += 1
            else:
                now = step.wake_at
                step = scheduler.step(now)
        if step.batch:
            assert [r.payload for r in step.batch] == [index]
            scheduler.batch_done()
        failed += len(step.expired)
        assert scheduler.depth == 0
        now += 0.001
    return waited, failed


def test_a_lone_caller_with_requests_of_several_sizes_waits_only_on_rare_probes() -> None:
    """A multi-row request that filled a probe's wait by itself counted as company found: the estimate
    climbed and its probes stopped backing off, so a lone caller alternating 1- and 4-row requests paid the
    queue delay on every fourth request (500 of 2,000)."""
    for sizes in ([1, 4], [1, 1, 8], [3, 1], [2]):
        scheduler: BatchScheduler[int] = BatchScheduler(
            BatchPolicy(max_batch_size=32, max_queue_delay_s=0.002)
        )
        waited, failed = _lone_caller(scheduler, sizes, arrivals=20_000)
        assert failed == 0
        assert waited <= _BACK_OFF_PROBES + 20_000 // MAX_PROBE_INTERVAL, sizes
        assert scheduler.company().target == 1, sizes


def test_a_request_whose_deadline_comes_within_the_queue_delay_does_not_wait_for_company() -> None:
    """A probe's wait ran past the request's deadline, and a probe that expired taught the estimate nothing,
    so every later arrival probed too: a lone caller whose calls have less time left than the queue delay
    had every request after its first answered DEADLINE_EXCEEDED."""
    scheduler: BatchScheduler[int] = BatchScheduler(BatchPolicy(max_batch_size=32, max_queue_delay_s=0.002))
    waited, failed = _lone_caller(scheduler, [1], arrivals=1_000, deadline_in=0.001)
    assert (waited, failed) == (0, 0)
    # The estimate is left as it was: a request with time to wait still probes in its turn.
    waited, failed = _lone_caller(scheduler, [1], arrivals=1_000)
    assert failed == 0 and 1 <= waited <= _BACK_OFF_PROBES


def test_probes_whose_callers_give_up_back_off_as_failed_ones() -> None:
    """A withdrawn probe left the estimate probing at the next arrival: callers who give up within the
    delay (a client's own timeout) had every request wait for company, each wait ended by their cancel."""
    scheduler: BatchScheduler[int] = BatchScheduler(BatchPolicy(max_batch_size=32, max_queue_delay_s=0.002))
    waited, failed = _lone_caller(scheduler, [1], arrivals=20_000, gives_up_after=0.001)
    assert waited == failed <= _BACK_OFF_PROBES + 20_000 // MAX_PROBE_INTERVAL
    assert scheduler.company().target == 1


def test_a_waiting_head_that_expires_counts_as_a_failed_probe() -> None:
    """The head's deadline passes while it waits (its timer fired late): it expires, nothing stays queued,
    and the next arrival does not probe at once."""
    scheduler: BatchScheduler[int] = BatchScheduler(BatchPolicy(max_batch_size=32, max_queue_delay_s=0.002))
    scheduler.offer(QueuedRequest(0, 1, "g", 0.0, None))
    assert scheduler.step(0.0).batch
    scheduler.batch_done()
    probe = QueuedRequest(1, 1, "g", 0.001, 0.0035)  # time enough to wait out the delay
    scheduler.offer(probe)
    assert probe.waits_for == 2
    late = scheduler.step(0.004)  # the loop was busy past both its due time and its deadline
    assert late.expired == [probe] and not late.batch and scheduler.depth == 0 and late.wake_at is None
    following = QueuedRequest(2, 1, "g", 0.005, None)
    scheduler.offer(following)
    assert following.waits_for == 1 and scheduler.step(0.005).batch


def _inline_batcher(sizes: list[int], delay_s: float) -> DynamicBatcher[int, int]:
    def run(payloads: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(payloads))
        return [p * 2 for p in payloads]

    return DynamicBatcher(
        BatchPolicy(max_batch_size=32, max_queue_delay_s=delay_s),
        run,
        inline=InlineGate(limit_s=1.0, estimate_s=0.0, max_rows=32),
    )


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_requests_behind_a_head_that_gives_up_are_looked_at_at_once() -> None:
    """A head waiting for company that is withdrawn left the request queued behind it (another shape) to wait
    for the head's timer, up to the whole queue delay, though nothing held it back any more."""
    sizes: list[int] = []
    batcher = _inline_batcher(sizes, delay_s=60.0)
    assert await batcher.submit(1, 1, "a", None) == 2  # a version's first request goes at once
    probe = asyncio.ensure_future(batcher.submit(2, 1, "a", None))  # the next probes: waits for a second row
    await _turns(3)
    assert not probe.done() and batcher.queue_depth == 1
    other_shape = asyncio.ensure_future(batcher.submit(3, 1, "b", None))
    await _turns(3)
    assert not other_shape.done() and batcher.queue_depth == 2
    probe.cancel()
    await _turns(5)
    assert other_shape.done() and other_shape.result() == 6
    assert sizes == [1, 1] and batcher.queue_depth == 0
    with pytest.raises(asyncio.CancelledError):
        await probe
    batcher.close()


async def test_the_driver_does_not_let_a_probe_wait_past_a_callers_deadline() -> None:
    """The driver asks the scheduler at arrival (``submit``): a call with less time left than the queue delay
    goes at once instead of waiting for company until its deadline."""
    sizes: list[int] = []
    batcher = _inline_batcher(sizes, delay_s=60.0)
    for value in range(6):
        deadline = time.monotonic() + 5.0
        assert await asyncio.wait_for(batcher.submit(value, 1, "g", deadline), 30) == value * 2
    assert sizes == [1] * 6


async def test_close_during_a_wait_answers_the_waiting_head() -> None:
    sizes: list[int] = []
    batcher = _inline_batcher(sizes, delay_s=60.0)
    assert await batcher.submit(1, 1, "g", None) == 2
    probe = asyncio.ensure_future(batcher.submit(2, 1, "g", None))
    await _turns(3)
    assert not probe.done()
    batcher.close()
    await _turns(1)
    with pytest.raises(Exception, match="unloaded"):
        await probe
    assert sizes == [1] and batcher.queue_depth == 0


def test_company_that_came_but_did_not_fit_the_batch_counts_as_company() -> None:
    """A probe's company that arrived but did not fit the batch (a multi-row request past its row limit)
    counted as a wait that ran out: the estimate fell to the head's own row and its probes backed off."""
    scheduler: BatchScheduler[str] = BatchScheduler(BatchPolicy(max_batch_size=4, max_queue_delay_s=0.001))
    scheduler.offer(QueuedRequest("first", 1, "g", 0.0, None))
    assert scheduler.step(0.0).batch
    scheduler.batch_done()
    scheduler.offer(QueuedRequest("probe", 1, "g", 0.01, None))
    scheduler.offer(QueuedRequest("company", 1, "g", 0.0101, None))
    assert [r.payload for r in scheduler.step(0.0101).batch] == ["probe", "company"]
    scheduler.batch_done()
    assert scheduler.company().target == 2
    scheduler.offer(QueuedRequest("next probe", 1, "g", 0.02, None))  # waits for a third row
    scheduler.offer(QueuedRequest("wide", 4, "g", 0.0201, None))  # 1 + 4 rows: more than a batch holds
    assert [r.payload for r in scheduler.step(0.0201).batch] == ["next probe"]
    assert scheduler.company().target == 3  # company came: the probe paid
    scheduler.batch_done()
    assert [r.payload for r in scheduler.step(0.0201).batch] == ["wide"]


async def test_a_policy_change_during_a_wait_applies_to_the_waiting_head() -> None:
    for changed in (BatchPolicy(max_batch_size=32, max_queue_delay_s=0.0), BatchPolicy(max_batch_size=1)):
        sizes: list[int] = []
        batcher = _inline_batcher(sizes, delay_s=60.0)
        assert await batcher.submit(1, 1, "g", None) == 2
        probe = asyncio.ensure_future(batcher.submit(2, 1, "g", None))
        await _turns(3)
        assert not probe.done()
        batcher.update_policy(changed)
        await _turns(3)
        assert probe.done() and probe.result() == 4 and sizes == [1, 1], changed
        batcher.close()


def test_with_one_row_a_batch_nobody_waits() -> None:
    scheduler: BatchScheduler[int] = BatchScheduler(BatchPolicy(max_batch_size=1, max_queue_delay_s=0.002))
    assert _lone_caller(scheduler, [1], arrivals=1_000) == (0, 0)


def test_the_background_lane_learns_apart_from_the_served_one() -> None:
    """Shadow copies that find company do not make served requests at an idle lane wait, nor the reverse."""
    scheduler: BatchScheduler[int] = BatchScheduler(BatchPolicy(max_batch_size=32, max_queue_delay_s=0.002))
    now = 0.0
    for index in range(40):  # shadow copies arrive in fours: their waits find company
        for extra in range(4):
            scheduler.offer(QueuedRequest(index * 4 + extra, 1, "g", now, None, background=True))
        step = scheduler.step(now)
        if not step.batch:  # a probe for a fifth: it waits out the delay
            assert step.wake_at is not None
            step = scheduler.step(step.wake_at)
        assert len(step.batch) == 4
        scheduler.batch_done(background=True)
        now += 0.01
    assert scheduler.company(background=True).target == 4 and scheduler.company().target == 1
    served = QueuedRequest(-1, 1, "g", now, None)
    scheduler.offer(served)
    assert served.waits_for == 1 and scheduler.step(now).batch


async def test_in_worker_threads_a_lone_caller_waits_only_on_rare_probes() -> None:
    executor = ThreadPoolExecutor(1)
    sizes: list[int] = []

    def run(payloads: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(payloads))
        return [p * 2 for p in payloads]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        BatchPolicy(max_batch_size=32, max_queue_delay_s=0.2), run, executor
    )
    try:
        waited = 0
        for value in range(120):
            started = time.perf_counter()
            assert await batcher.submit(value, 1, "g", None) == value * 2
            waited += time.perf_counter() - started >= 0.1  # a probe waits out the 200 ms delay
        assert sizes == [1] * 120
        assert 1 <= waited <= 7  # probes at the 2nd, 5th, 10th, 19th, 36th and 69th request
    finally:
        executor.shutdown(wait=True)


async def test_in_worker_threads_concurrent_callers_batch_and_all_get_answers() -> None:
    executor = ThreadPoolExecutor(1)
    sizes: list[int] = []

    def run(payloads: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(payloads))
        time.sleep(0.001)
        return [p * 2 for p in payloads]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        BatchPolicy(max_batch_size=32, max_queue_delay_s=0.05), run, executor
    )

    async def caller(index: int) -> list[int]:
        answers = []
        for turn in range(30):
            await _turns((index + turn) % 3)  # arrive in different loop turns
            answers.append(await batcher.submit(index * 100 + turn, 1, "g", None))
        return answers

    try:
        answers = await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(8))), 60)
        assert answers == [[(i * 100 + t) * 2 for t in range(30)] for i in range(8)]
        assert sum(sizes) == 240 and len(sizes) <= 240 / 3 and batcher.queue_depth == 0
    finally:
        executor.shutdown(wait=True)
