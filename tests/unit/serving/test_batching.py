"""The dynamic batcher: the step scheduler on plain data (rules, and a hypothesis run against a brute-force
reference of the policy, withdrawals of callers that gave up included), and the asyncio driver with a plain
Python runner."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import DeadlineExceeded, ResourceExhausted
from data_plane.batching import BatchPolicy, BatchScheduler, DynamicBatcher, QueuedRequest
from data_plane.inline_gate import InlineGate

POLICY = BatchPolicy(max_batch_size=4, max_queue_delay_s=0.001, max_queue_size=8)


def _req(
    name: str, at: float, rows: int = 1, group: str = "g", deadline: float | None = None
) -> QueuedRequest[str]:
    return QueuedRequest(name, rows, group, at, deadline)


def test_a_request_at_an_idle_queue_runs_at_once() -> None:
    scheduler: BatchScheduler[str] = BatchScheduler(POLICY)
    scheduler.offer(_req("a", 0.0))
    step = scheduler.step(0.0)
    assert [r.payload for r in step.batch] == ["a"] and step.wake_at is None


def test_requests_wait_for_the_company_that_idle_arrivals_have_found_or_the_delay() -> None:
    scheduler: BatchScheduler[str] = BatchScheduler(POLICY)  # 4 rows, 1 ms
    scheduler.offer(_req("a", 0.0))
    assert [r.payload for r in scheduler.step(0.0).batch] == ["a"]  # a version's first request: at once
    scheduler.offer(_req("b", 0.0001))
    scheduler.offer(_req("c", 0.0002))
    assert not scheduler.step(0.0003).batch  # busy
    scheduler.batch_done()
    assert [r.payload for r in scheduler.step(0.0004).batch] == ["b", "c"]  # no company found yet: at once
    scheduler.batch_done()
    # The next idle arrival probes: it waits for a second row, which comes in time ...
    scheduler.offer(_req("d", 0.002))
    waiting = scheduler.step(0.002)
    assert not waiting.batch and waiting.wake_at == pytest.approx(0.003)
    scheduler.offer(_req("e", 0.0025))
    assert [r.payload for r in scheduler.step(0.0025).batch] == ["d", "e"]
    scheduler.batch_done()
    assert scheduler.company().target == 2
    # ... so the next one probes for a third, and runs out of time with two: company stays at two.
    scheduler.offer(_req("f", 0.004))
    scheduler.offer(_req("g", 0.0041))
    assert not scheduler.step(0.0045).batch
    assert [r.payload for r in scheduler.step(0.005).batch] == ["f", "g"]  # the delay ran out
    assert scheduler.company().target == 2
    # Behind a running batch a request waits, once the runner is free, for two rows or the delay.
    scheduler.offer(_req("h", 0.0051))
    scheduler.batch_done()
    waiting = scheduler.step(0.0052)
    assert not waiting.batch and waiting.wake_at == pytest.approx(0.0061)
    scheduler.offer(_req("i", 0.0053))
    assert [r.payload for r in scheduler.step(0.0053).batch] == ["h", "i"]


def test_a_request_behind_others_whose_deadline_comes_first_does_not_wait_for_company() -> None:
    """It waited for the company idle arrivals had found and expired in the queue (DEADLINE_EXCEEDED)
    although the runner was free."""
    scheduler: BatchScheduler[str] = BatchScheduler(POLICY)  # 4 rows, 1 ms
    scheduler.offer(_req("a", 0.0))
    scheduler.step(0.0)  # a version's first request: at once
    scheduler.batch_done()
    scheduler.offer(_req("b", 0.001))  # a probe, and its company comes: the estimate is two rows
    scheduler.offer(_req("c", 0.0012))
    assert [r.payload for r in scheduler.step(0.0012).batch] == ["b", "c"]
    assert scheduler.company().target == 2
    scheduler.offer(_req("hurried", 0.0013, deadline=0.0018))  # behind the running batch
    scheduler.batch_done()
    assert [r.payload for r in scheduler.step(0.0014).batch] == ["hurried"]
    assert scheduler.company().target == 2  # a wait cut short is not a wait that found no company


def test_a_full_batch_goes_before_the_delay_and_groups_never_mix() -> None:
    scheduler: BatchScheduler[str] = BatchScheduler(POLICY)
    scheduler.offer(_req("busy", 0.0))
    scheduler.step(0.0)
    for name, group in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "x"), ("e", "x")]:
        scheduler.offer(_req(name, 0.0, group=group))
    scheduler.batch_done()
    step = scheduler.step(0.0)  # four "x" rows are queued: no need to wait
    assert [r.payload for r in step.batch] == ["a", "c", "d", "e"]
    scheduler.batch_done()
    assert [r.payload for r in scheduler.step(1.0).batch] == ["b"]


def test_a_full_queue_sheds_and_expired_requests_are_dropped() -> None:
    scheduler: BatchScheduler[str] = BatchScheduler(BatchPolicy(max_batch_size=4, max_queue_size=2))
    scheduler.offer(_req("a", 0.0, deadline=0.5))
    scheduler.offer(_req("b", 0.0))
    with pytest.raises(ResourceExhausted, match="queue is full"):
        scheduler.offer(_req("c", 0.0))
    step = scheduler.step(1.0)
    assert [r.payload for r in step.expired] == ["a"] and [r.payload for r in step.batch] == ["b"]


def test_background_batches_have_their_own_queue_and_in_flight_slot() -> None:
    """A background (shadow) batch in flight held the version's only slot, so answered requests waited for
    the shadow's batch to finish: 21-25 ms became 83-128 ms."""
    scheduler: BatchScheduler[str] = BatchScheduler(POLICY)  # one batch in flight of each kind
    scheduler.offer(QueuedRequest("shadow", 1, "g", 0.0, None, background=True))
    assert [r.payload for r in scheduler.step(0.0).batch] == ["shadow"]
    scheduler.offer(QueuedRequest("shadow2", 1, "g", 0.0001, None, background=True))
    served = _req("served", 0.0001)
    scheduler.offer(served)
    assert served.immediate  # nothing of its kind queued or running
    assert [r.payload for r in scheduler.step(0.0001).batch] == ["served"]  # not behind the shadow
    busy = scheduler.step(0.5)  # both kinds at their limit: "shadow2" waits for its own slot only
    assert not busy.batch and scheduler.depth == 1 and busy.wake_at is None
    scheduler.batch_done()  # the served batch ends: its slot does not let a background batch in
    assert not scheduler.step(0.5).batch
    scheduler.batch_done(background=True)
    assert [r.payload for r in scheduler.step(0.5).batch] == ["shadow2"]
    with pytest.raises(RuntimeError):
        scheduler.batch_done()  # no answered batch in flight: counted apart


@dataclass
class _Op:
    kind: str  # "offer", "step", "done", "withdraw"
    rows: int = 1
    group: int = 0
    advance: float = 0.0
    deadline_in: float | None = None
    pick: int = 0  # withdraw: which of the requests offered so far (modulo their number)
    background: bool = False  # offer: a background request; done: a background batch ends


_ops = st.lists(
    st.one_of(
        st.builds(_Op, st.just("offer"), st.integers(1, 6), st.integers(0, 1), st.floats(0, 0.002),
                  st.one_of(st.none(), st.floats(0, 0.003)), background=st.booleans()),
        st.builds(_Op, st.just("step"), advance=st.floats(0, 0.002)),
        st.builds(_Op, st.just("done"), background=st.booleans()),
        st.builds(_Op, st.just("withdraw"), advance=st.floats(0, 0.002), pick=st.integers(0, 59)),
    ),
    max_size=60,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_the_scheduler_matches_a_brute_force_reference(ops: list[_Op]) -> None:
    policy = BatchPolicy(
        max_batch_size=5,
        max_queue_delay_s=0.001,
        max_queue_size=6,
        max_in_flight=1,
        max_background_in_flight=2,
    )
    scheduler: BatchScheduler[int] = BatchScheduler(policy)
    # The reference: a plain list, rules applied literally to each kind's requests (answered ones first).
    queue: list[QueuedRequest[int]] = []
    in_flight = {False: 0, True: 0}  # by kind: background or not
    limits = {False: policy.max_in_flight, True: policy.max_background_in_flight}
    now = 0.0
    offered: list[QueuedRequest[int]] = []
    for index, op in enumerate(ops):
        now += op.advance
        if op.kind == "withdraw":
            if offered:
                request = offered[op.pick % len(offered)]
                assert scheduler.withdraw(request) == (request in queue)
                queue = [r for r in queue if r is not request]
        elif op.kind == "offer":
            deadline = None if op.deadline_in is None else now + op.deadline_in
            request = QueuedRequest(index, op.rows, op.group, now, deadline, background=op.background)
            if len(queue) >= policy.max_queue_size:
                with pytest.raises(ResourceExhausted):
                    scheduler.offer(request)
                continue
            idle = all(r.background != op.background for r in queue) and in_flight[op.background] == 0
            scheduler.offer(request)
            # What an idle arrival waits for is the lane's CompanyEstimate's (tested on its own): here only
            # that the scheduler asks it for idle arrivals alone, and keeps to its answer.
            assert request.waits_for is not None
            assert (request.waits_for > 0) == idle and request.waits_for <= policy.max_batch_size
            queue.append(request)
            offered.append(request)
        elif op.kind == "done":
            if in_flight[op.background]:
                scheduler.batch_done(op.background)
                in_flight[op.background] -= 1
        else:
            step = scheduler.step(now)
            expired = [r for r in queue if r.deadline is not None and r.deadline <= now]
            queue = [r for r in queue if r not in expired]
            assert sorted(r.payload for r in step.expired) == [
                r.payload for r in expired
            ]  # either queue first
            expected: list[QueuedRequest[int]] = []
            for kind in (False, True):
                lane = [r for r in queue if r.background == kind]
                if expected or not lane or in_flight[kind] >= limits[kind]:
                    continue
                head = lane[0]
                group_rows = sum(r.rows for r in lane if r.group == head.group)
                # 0: arrived behind others, and waits for the company idle arrivals have been finding.
                wanted = min(head.waits_for or scheduler.company(kind).target, policy.max_batch_size)
                due = head.enqueued_at + policy.max_queue_delay_s
                hurried = head.deadline is not None and head.deadline <= due  # would expire waiting
                if now >= due or group_rows >= wanted or hurried:
                    expected = [head]
                    rows = head.rows
                    for r in lane[1:]:
                        if rows >= policy.max_batch_size:
                            break
                        if r.group == head.group and rows + r.rows <= policy.max_batch_size:
                            expected.append(r)
                            rows += r.rows
            assert [r.payload for r in step.batch] == [r.payload for r in expected]
            if expected:
                in_flight[expected[0].background] += 1
                queue = [r for r in queue if r not in expected]
                assert len({r.group for r in step.batch}) == 1
                assert len(step.batch) == 1 or sum(r.rows for r in step.batch) <= policy.max_batch_size
        assert scheduler.depth == len(queue)


def _doubling_runner(calls: list[int]) -> object:
    def run(payloads: Sequence[int]) -> list[int | BaseException]:
        calls.append(len(payloads))
        time.sleep(0.002)  # a batch takes a while, so that later requests queue behind it
        return [ValueError(f"bad {p}") if p < 0 else p * 2 for p in payloads]

    return run


async def test_the_driver_batches_concurrent_requests_and_isolates_failures() -> None:
    calls: list[int] = []
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        BatchPolicy(max_batch_size=8, max_queue_delay_s=0.002),
        _doubling_runner(calls),  # type: ignore[arg-type]
    )
    values = [1, 2, -3, 4, 5, 6, 7, 8, 9, 10]
    results = await asyncio.gather(*(batcher.submit(v, 1, "g", None) for v in values), return_exceptions=True)
    assert [r if isinstance(r, int) else str(r) for r in results] == [
        2,
        4,
        "bad -3",
        8,
        10,
        12,
        14,
        16,
        18,
        20,
    ]
    assert sum(calls) == len(values) and len(calls) < len(values)  # batched, nothing run twice


async def test_the_driver_answers_deadline_exceeded_for_requests_that_expire_in_the_queue() -> None:
    calls: list[int] = []
    batcher: DynamicBatcher[int, int] = DynamicBatcher(BatchPolicy(max_batch_size=1), _doubling_runner(calls))  # type: ignore[arg-type]
    first = asyncio.ensure_future(batcher.submit(1, 1, "g", None))
    late = asyncio.ensure_future(batcher.submit(2, 1, "g", time.monotonic() + 0.0005))
    assert await first == 2
    with pytest.raises(DeadlineExceeded):
        await late
    assert calls == [1]  # the expired request never reached the runner


async def test_callers_that_give_up_free_their_queue_slots_at_once() -> None:
    release = threading.Event()
    ran: list[list[str]] = []

    def runner(payloads: Sequence[str]) -> list[str | BaseException]:
        release.wait(10)
        ran.append(list(payloads))
        return list(payloads)

    executor = ThreadPoolExecutor(1)
    batcher: DynamicBatcher[str, str] = DynamicBatcher(
        BatchPolicy(max_batch_size=8, max_queue_size=4), runner, executor
    )
    try:
        running = asyncio.ensure_future(batcher.submit("running", 1, "g", None))
        await asyncio.sleep(0.01)  # its batch now holds the only worker until released
        deadline = time.monotonic() + 60
        waiting = [asyncio.ensure_future(batcher.submit(f"w{i}", 1, "g", deadline)) for i in range(4)]
        await asyncio.sleep(0)
        assert batcher.queue_depth == 4
        for task in waiting:  # every waiting caller goes away (a client cancel, a gRPC deadline)
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert batcher.queue_depth == 0
        late = asyncio.ensure_future(batcher.submit("late", 1, "g", None))  # not shed: the queue is empty
        await asyncio.sleep(0)
        assert batcher.queue_depth == 1
        release.set()
        assert (await running, await late) == ("running", "late")
        assert ran == [["running"], ["late"]]  # the callers who left never reached the runner
    finally:
        release.set()
        executor.shutdown(wait=True)


async def test_a_running_background_batch_does_not_delay_answered_requests() -> None:
    """Served requests of a version waited behind its shadow copies' batch running in the shadow thread."""
    release = threading.Event()

    def runner(payloads: Sequence[str]) -> list[str | BaseException]:
        if "shadow" in payloads:
            release.wait(10)  # a slow shadow batch, until the served request has its answer
        return list(payloads)

    served, shadows = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    batcher: DynamicBatcher[str, str] = DynamicBatcher(
        BatchPolicy(max_batch_size=8), runner, served, background_executor=shadows
    )
    try:
        shadow = asyncio.ensure_future(batcher.submit("shadow", 1, "g", None, background=True))
        await asyncio.sleep(0.01)  # its batch now runs in the shadow thread
        assert await asyncio.wait_for(batcher.submit("served", 1, "g", None), 5) == "served"
        assert not shadow.done()
        release.set()
        assert await shadow == "shadow"
    finally:
        release.set()
        served.shutdown(wait=True)
        shadows.shutdown(wait=True)


def _recording_runner(sizes: list[int]) -> object:
    def run(payloads: Sequence[int]) -> list[int | BaseException]:
        sizes.append(len(payloads))
        return [p * 2 for p in payloads]

    return run


def _inline_batcher(sizes: list[int], delay_s: float) -> DynamicBatcher[int, int]:
    """Batches run on the loop, as a small model's do: a request expected to go alone runs in its caller's
    turn, so only waiting for company lets others join it."""
    return DynamicBatcher(
        BatchPolicy(max_batch_size=32, max_queue_delay_s=delay_s),
        _recording_runner(sizes),  # type: ignore[arg-type]
        inline=InlineGate(limit_s=1.0, estimate_s=0.0, max_rows=32),
    )


async def test_callers_arriving_turn_by_turn_batch_once_company_is_found() -> None:
    """As gRPC hands requests to the loop one turn at a time: without waiting for company every batch held
    one request (the serving benchmark's MLP at 32 callers)."""
    sizes: list[int] = []
    batcher = _inline_batcher(sizes, delay_s=0.05)

    async def caller(index: int) -> list[int]:
        answers = []
        for turn in range(40):
            for _ in range((index + turn) % 3):  # arrive in different loop turns
                await asyncio.sleep(0)
            answers.append(await batcher.submit(index * 100 + turn, 1, "g", None))
        return answers

    answers = await asyncio.gather(*(caller(i) for i in range(8)))
    assert answers == [[(i * 100 + t) * 2 for t in range(40)] for i in range(8)]
    assert sum(sizes) == 320 and len(sizes) <= 320 / 3  # batched: more than three requests a run


async def test_a_lone_caller_waits_for_company_only_on_rare_probes() -> None:
    sizes: list[int] = []
    batcher = _inline_batcher(sizes, delay_s=0.05)
    waited = 0
    for value in range(300):
        started = time.perf_counter()
        assert await batcher.submit(value, 1, "g", None) == value * 2
        waited += time.perf_counter() - started >= 0.025  # a probe waits out the 50 ms delay
    assert sizes == [1] * 300
    assert 1 <= waited <= 9  # probes at the 2nd, 5th, 10th, 19th, ... request
