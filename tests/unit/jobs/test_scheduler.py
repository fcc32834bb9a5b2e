"""The scheduler against a simulated cluster: random submit / finish / crash / cancel / time-advance
sequences, with brute-force references for what each step must decide."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.jobs.scheduler import (
    Policy,
    QueuedJob,
    Reject,
    RunningJob,
    Start,
    reservation,
    schedule,
)


@dataclass
class SimJob:
    job_id: str
    seq: int  # submission order: a retried job keeps it, so it returns to its old place
    gpus: int
    timeout: int | None
    duration: int  # <= timeout when there is one: timeouts are enforced


@dataclass
class Held:
    job: SimJob
    devices: tuple[str, ...]
    started: int

    @property
    def ends_by(self) -> int | None:
        return None if self.job.timeout is None else self.started + self.job.timeout

    @property
    def actual_end(self) -> int:
        return self.started + self.job.duration


@dataclass
class Cluster:
    pool: tuple[str, ...]
    policy: Policy
    now: int = 0
    queue: list[SimJob] = field(default_factory=list)
    running: dict[str, Held] = field(default_factory=dict)
    #: The blocked head and the time it was promised (BACKFILL).
    promise: tuple[str, int] | None = None
    starts: list[str] = field(default_factory=list)

    def free(self) -> list[str]:
        busy = {d for held in self.running.values() for d in held.devices}
        return [d for d in self.pool if d not in busy]

    def running_jobs(self) -> list[RunningJob]:
        return [RunningJob(h.job.job_id, h.devices, h.ends_by) for h in self.running.values()]

    def step(self) -> None:
        self.queue.sort(key=lambda job: job.seq)
        free_before = self.free()
        decisions = schedule(
            [QueuedJob(j.job_id, j.gpus, j.timeout) for j in self.queue],
            free_before,
            len(self.pool),
            policy=self.policy,
            running=self.running_jobs(),
            now_us=self.now,
        )
        check_decisions(self, decisions, free_before)
        by_id = {job.job_id: job for job in self.queue}
        for decision in decisions:
            job = by_id[decision.job_id]
            self.queue.remove(job)
            if isinstance(decision, Start):
                self.running[job.job_id] = Held(job, decision.devices, self.now)
                self.starts.append(job.job_id)
        check_holdings(self)
        if self.policy is Policy.BACKFILL:
            check_head_promise(self)


def expected_prefix(queue: list[SimJob], free: int, pool: int) -> tuple[list[str], list[str], int]:
    """Brute force of strict FIFO: (rejected, started in order, devices left)."""
    rejected, started = [], []
    for job in queue:
        if job.gpus > pool:
            rejected.append(job.job_id)
        elif job.gpus <= free:
            started.append(job.job_id)
            free -= job.gpus
        else:
            break
    return rejected, started, free


def reference_shadow(head_gpus: int, free: int, running: list[Held]) -> int | None:
    """Brute force: the earliest candidate time at which the devices free by then cover the head."""
    times = sorted({h.ends_by for h in running if h.ends_by is not None})
    for moment in times:
        if (
            free + sum(len(h.devices) for h in running if h.ends_by is not None and h.ends_by <= moment)
            >= head_gpus
        ):
            return moment
    return None


def check_decisions(cluster: Cluster, decisions: list[Start | Reject], free: list[str]) -> None:
    pool = len(cluster.pool)
    by_id = {job.job_id: job for job in cluster.queue}
    taken: set[str] = set()
    for decision in decisions:
        job = by_id[decision.job_id]
        if isinstance(decision, Reject):
            assert job.gpus > pool
            continue
        assert len(decision.devices) == job.gpus, "all or nothing: exactly the requested count"
        assert set(decision.devices) <= set(free), "only free devices"
        assert not taken & set(decision.devices), "a device handed out twice in one step"
        taken |= set(decision.devices)
    starts = [d.job_id for d in decisions if isinstance(d, Start) and not d.backfilled]
    rejected, prefix, left = expected_prefix(cluster.queue, len(free), pool)
    assert starts == prefix, "starts follow queue order and stop at the first job that does not fit"
    if cluster.policy is Policy.STRICT:
        assert all(not d.backfilled for d in decisions if isinstance(d, Start))
        assert {d.job_id for d in decisions if isinstance(d, Reject)} <= set(rejected) | {
            j.job_id for j in cluster.queue if j.gpus > pool
        }
        return
    backfilled = [d for d in decisions if isinstance(d, Start) and d.backfilled]
    if not backfilled:
        return
    # A backfill happens only behind a blocked head, and never moves the head's reservation later.
    waiting = [j for j in cluster.queue if j.job_id not in prefix and j.gpus <= pool]
    head = waiting[0]
    assert head.gpus > left
    prefix_held = [Held(by_id[j], (), cluster.now) for j in prefix]
    started_devices = {d.job_id: d.devices for d in decisions if isinstance(d, Start)}
    before_running = [*cluster.running.values()] + [
        Held(h.job, started_devices[h.job.job_id], cluster.now) for h in prefix_held
    ]
    before = reference_shadow(head.gpus, left, before_running)
    after_running = before_running + [Held(by_id[d.job_id], d.devices, cluster.now) for d in backfilled]
    after_free = left - sum(len(d.devices) for d in backfilled)
    after = reference_shadow(head.gpus, after_free, after_running)
    if before is None:
        assert all(not d.devices for d in backfilled), "no reservation: only CPU jobs may pass the head"
    else:
        assert after is not None and after <= before, "a backfill delayed the head's reservation"


def check_holdings(cluster: Cluster) -> None:
    held = [d for h in cluster.running.values() for d in h.devices]
    assert len(held) == len(set(held)), "a device is held by two jobs"
    assert set(held) <= set(cluster.pool)
    assert all(h.job.gpus <= len(cluster.pool) for h in cluster.running.values())


def check_head_promise(cluster: Cluster) -> None:
    """The head starts no later than the reservation it got when it first blocked."""
    waiting = [j for j in sorted(cluster.queue, key=lambda j: j.seq) if j.gpus <= len(cluster.pool)]
    if not waiting:
        cluster.promise = None
        return
    head = waiting[0]
    if cluster.promise is not None and cluster.promise[0] == head.job_id:
        assert cluster.now < cluster.promise[1], f"head {head.job_id} still waits past its reservation"
        return
    at = reference_shadow(head.gpus, len(cluster.free()), list(cluster.running.values()))
    cluster.promise = None if at is None else (head.job_id, at)


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.integers(0, 9),
            st.one_of(st.none(), st.integers(1, 12)),
            st.integers(1, 12),
        ),
        st.tuples(st.just("advance"), st.integers(1, 8), st.none(), st.none()),
        st.tuples(st.just("finish"), st.integers(0, 50), st.none(), st.none()),
        st.tuples(st.just("crash"), st.integers(0, 50), st.none(), st.none()),
        st.tuples(st.just("cancel"), st.integers(0, 50), st.none(), st.none()),
    ),
    min_size=20,
    max_size=80,
)


def simulate(pool_size: int, policy: Policy, ops: list[tuple[str, int, int | None, int | None]]) -> Cluster:
    cluster = Cluster(tuple(f"gpu{i}" for i in range(pool_size)), policy)
    seq = 0
    for kind, number, timeout, duration in ops:
        if kind == "submit":
            assert duration is not None
            seq += 1
            length = duration if timeout is None else min(duration, timeout)
            cluster.queue.append(SimJob(f"j{seq}", seq, number, timeout, length))
        elif kind == "advance":
            cluster.now += number
            for job_id in [k for k, h in cluster.running.items() if h.actual_end <= cluster.now]:
                del cluster.running[job_id]
        elif kind in ("finish", "crash") and cluster.running:
            job_id = sorted(cluster.running)[number % len(cluster.running)]
            held = cluster.running.pop(job_id)
            if kind == "crash":  # retried: back to the queue, at its old place
                cluster.queue.append(held.job)
                # Ahead of the promised head, it is the new head: the old promise no longer holds.
                cluster.promise = None
        elif kind == "cancel":
            candidates = sorted(cluster.running) + [j.job_id for j in cluster.queue]
            if candidates:
                victim = candidates[number % len(candidates)]
                cluster.running.pop(victim, None)
                cluster.queue = [j for j in cluster.queue if j.job_id != victim]
        cluster.step()
    return cluster


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), operations)
def test_strict_fifo_never_overcommits_and_starts_in_queue_order(
    pool_size: int, ops: list[tuple[str, int, int | None, int | None]]
) -> None:
    simulate(pool_size, Policy.STRICT, ops)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), operations)
def test_backfill_never_overcommits_and_never_delays_the_head(
    pool_size: int, ops: list[tuple[str, int, int | None, int | None]]
) -> None:
    simulate(pool_size, Policy.BACKFILL, ops)


def test_strict_head_blocks_the_queue_and_backfill_uses_idle_devices() -> None:
    queue = [QueuedJob("big", 4), QueuedJob("small", 1, max_runtime_us=5)]
    running = [RunningJob("r", ("0", "1"), ends_by_us=10)]
    assert schedule(queue, ["2", "3"], 4, running=running) == []
    decisions = schedule(queue, ["2", "3"], 4, policy=Policy.BACKFILL, running=running, now_us=0)
    assert decisions == [Start("small", ("2",), backfilled=True)]
    # A job that would outlive the head's reservation and needs devices the head will use must wait.
    late = [QueuedJob("big", 4), QueuedJob("long", 1, max_runtime_us=50)]
    assert schedule(late, ["2", "3"], 4, policy=Policy.BACKFILL, running=running, now_us=0) == []


def test_a_job_larger_than_the_pool_is_rejected_instead_of_blocking_forever() -> None:
    decisions = schedule([QueuedJob("huge", 9), QueuedJob("ok", 1)], ["0", "1"], 2)
    assert decisions == [Reject("huge", "requests 9 GPUs but the pool has 2"), Start("ok", ("0",))]


def test_reservation_counts_devices_freed_in_end_order() -> None:
    running = [RunningJob("a", ("0",), 30), RunningJob("b", ("1", "2"), 10), RunningJob("c", ("3",), None)]
    assert reservation(3, 1, running).at_us == 10
    assert reservation(4, 1, running) == reservation(4, 1, running[:2])
    assert reservation(4, 1, running).at_us == 30
    assert reservation(5, 1, running).at_us is None


@st.composite
def busy_clusters(draw: st.DrawFn) -> Cluster:
    """A cluster in the middle of its life: some devices held by jobs ending at various times, a queue."""
    pool_size = draw(st.integers(1, 8))
    cluster = Cluster(
        tuple(f"gpu{i}" for i in range(pool_size)), Policy.BACKFILL, now=draw(st.integers(0, 5))
    )
    devices = list(cluster.pool)
    for index in range(draw(st.integers(0, pool_size))):
        take = draw(st.integers(1, 3))
        if take > len(devices):
            break
        timeout = draw(st.one_of(st.none(), st.integers(1, 15)))
        job = SimJob(f"r{index}", -1, take, timeout, 1)
        cluster.running[job.job_id] = Held(job, tuple(devices[:take]), 0)
        del devices[:take]
    for index in range(draw(st.integers(1, 8))):
        timeout = draw(st.one_of(st.none(), st.integers(1, 15)))
        cluster.queue.append(SimJob(f"q{index}", index, draw(st.integers(0, pool_size)), timeout, 1))
    return cluster


@settings(max_examples=1000, deadline=None)
@given(busy_clusters())
def test_one_backfill_step_never_moves_the_head_reservation_later(cluster: Cluster) -> None:
    cluster.step()  # check_decisions compares the reservation before and after against the reference
