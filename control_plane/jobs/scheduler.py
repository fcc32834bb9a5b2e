"""The GPU scheduler: one pure step. Plain data in (the queue in order, the free devices, the running
jobs, the time), plain data out (which jobs start on which devices, which are rejected). No I/O, no
clock, no state between calls: the supervisor calls :func:`schedule` on every tick with what the
database says, and the property tests and the benchmark call it with what they simulate.

Rules:

* Queue order is the caller's: the supervisor sorts by priority (higher first), then submission time,
  then job id, so within one priority the queue is FIFO. A job that failed an attempt keeps its
  submission time, so a retry goes back to its old place, not to the tail.
* All or nothing: a job starts only when all the GPUs it asks for are free, and it gets exactly that many.
  Devices are handed out in the order ``free`` lists them.
* Never overcommits: a device handed out in one call is removed from the free list of that call; the
  caller removes running jobs' devices from ``free``.
* A job asking for more GPUs than the pool has can never start: it is rejected (the service refuses such a
  job at submission; this covers a pool that shrank across a restart).

Policies:

* ``STRICT`` (default): jobs start in queue order; when the head does not fit, nothing behind it starts
  (not even a CPU job). Predictable and starvation-free, but devices stay idle while a large job waits.
* ``BACKFILL`` (EASY backfilling): when the head does not fit, it gets a reservation: the time ``T`` by
  which enough devices are certain to be free, computed from the running jobs' end bounds (start +
  timeout + kill grace: timeouts are enforced, so these are hard upper bounds). A later job may start
  now only if it fits in the free devices and either its own end bound is ``<= T`` or it uses only
  devices that are surplus at ``T`` (``free + freed_by_T - head_request``). So the head starts no later
  than its reservation, whatever jobs start behind it. The trade-off: a job without a timeout can only use
  surplus devices; when a running job has no timeout the head's reservation is unbounded and only CPU
  jobs backfill; jobs that end earlier than their bounds can let the head start earlier than ``T`` in
  strict mode than it does with backfill (the guarantee is the reservation, not the strict-mode start
  time); only the head is protected (the second job in line can be passed repeatedly). At most
  ``backfill_depth`` jobs behind the head are examined per call, which bounds the cost of a step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice


class Policy(StrEnum):
    STRICT = "strict"
    BACKFILL = "backfill"


@dataclass(frozen=True, slots=True)
class QueuedJob:
    job_id: str
    gpus: int
    #: Upper bound of one attempt's run time in microseconds (timeout + kill grace); None = unbounded.
    max_runtime_us: int | None = None


@dataclass(frozen=True, slots=True)
class RunningJob:
    job_id: str
    devices: tuple[str, ...]
    #: Time (µs) by which the job is certain to have released its devices; None = unknown.
    ends_by_us: int | None = None


@dataclass(frozen=True, slots=True)
class Start:
    job_id: str
    devices: tuple[str, ...]
    #: True when the job started ahead of a blocked head (BACKFILL only).
    backfilled: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    job_id: str
    reason: str


Decision = Start | Reject


@dataclass(frozen=True, slots=True)
class Reservation:
    """When the blocked head is certain to fit (``at_us``; None = no bound) and how many devices will
    be left over for others at that time (``surplus``)."""

    at_us: int | None
    surplus: int


def reservation(head_gpus: int, free: int, running: Iterable[RunningJob]) -> Reservation:
    """The head's reservation given ``free`` devices now and the running jobs' end bounds."""
    available = free
    if available >= head_gpus:
        return Reservation(None, available - head_gpus)
    for job in sorted(
        (job for job in running if job.ends_by_us is not None), key=lambda job: job.ends_by_us or 0
    ):
        available += len(job.devices)
        if available >= head_gpus:
            return Reservation(job.ends_by_us, available - head_gpus)
    return Reservation(None, 0)


def schedule(
    queue: Iterable[QueuedJob],
    free: Sequence[str],
    pool_size: int,
    *,
    policy: Policy = Policy.STRICT,
    running: Sequence[RunningJob] = (),
    now_us: int = 0,
    backfill_depth: int = 64,
) -> list[Decision]:
    """The decisions of one step (module doc). ``queue`` is read lazily: in strict mode only up to the
    first job that does not fit, so a step costs O(started jobs), not O(queue)."""
    available = list(free)
    decisions: list[Decision] = []
    started: list[RunningJob] = []  # jobs started in this step, for the head's reservation
    jobs = iter(queue)
    for job in jobs:
        if job.gpus > pool_size:
            decisions.append(Reject(job.job_id, _too_big(job.gpus, pool_size)))
            continue
        if job.gpus <= len(available):
            devices = tuple(available[: job.gpus])
            del available[: job.gpus]
            decisions.append(Start(job.job_id, devices))
            if policy is Policy.BACKFILL and devices:
                started.append(RunningJob(job.job_id, devices, _ends_by(job, now_us)))
            continue
        if policy is Policy.BACKFILL:
            plan = reservation(job.gpus, len(available), [*running, *started])
            _backfill(jobs, plan, available, pool_size, decisions, now_us, backfill_depth)
        break
    return decisions


def _backfill(
    behind: Iterable[QueuedJob],
    plan: Reservation,
    available: list[str],
    pool_size: int,
    decisions: list[Decision],
    now_us: int,
    depth: int,
) -> None:
    surplus = plan.surplus
    for job in islice(behind, depth):
        if job.gpus > pool_size:
            decisions.append(Reject(job.job_id, _too_big(job.gpus, pool_size)))
            continue
        if job.gpus > len(available):
            continue
        ends_by = _ends_by(job, now_us)
        ends_in_time = plan.at_us is not None and ends_by is not None and ends_by <= plan.at_us
        if not ends_in_time:
            if job.gpus > surplus:
                continue
            surplus -= job.gpus
        decisions.append(Start(job.job_id, tuple(available[: job.gpus]), backfilled=True))
        del available[: job.gpus]


def _ends_by(job: QueuedJob, now_us: int) -> int | None:
    return None if job.max_runtime_us is None else now_us + job.max_runtime_us


def _too_big(gpus: int, pool_size: int) -> str:
    return f"requests {gpus} GPUs but the pool has {pool_size}"
