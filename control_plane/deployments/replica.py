"""One data-plane replica of the local replica manager (:mod:`control_plane.deployments.replicas`): the
settings its processes are started with, what the manager knows of a running one, and the errors a start
can end with."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from clients.errors import FailedPrecondition

#: The data plane's exit status for a usage or configuration error (a flag it does not know, a bad
#: setting, but also a --model-config file it could not read or parse at that moment, such as one being
#: rewritten). A bad flag fails the fleet's very first start, so only there does it stop the fleet
#: (:class:`ReplicaRefused`); once this command line has served, such an exit is passing, and retried.
USAGE_ERROR_STATUS = 2


@dataclass(frozen=True)
class ReplicaSettings:
    control_plane_addr: str
    redis_url: str
    home: Path  # each replica gets home/replica-<n>/
    host: str = "127.0.0.1"
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 30.0
    python: str = sys.executable
    metrics: bool = True  # give each replica a /metrics endpoint (on a free port)
    # Each pass of replace_failed probes every listed replica's health with this deadline; one that gave
    # no answer to this many probes in a row is hung. One slow answer under load must not kill a replica.
    health_timeout_s: float = 2.0
    hung_after_misses: int = 3
    extra_args: tuple[str, ...] = field(default=())


@dataclass
class Replica:
    number: int  # names its folder, replica-<number>; a later replica reuses it once this one has exited
    process: asyncio.subprocess.Process
    # Which start of its manager it is (0, 1, ...), never reused: what tells this replica from an earlier
    # one with the same number (the autoscaler keys its per-replica samples by it).
    serial: int
    address: str = ""
    # HOST:PORT of its /metrics; empty without one. A replica run with --workers N has one endpoint per
    # worker process, listed comma-separated (see metrics_addresses).
    metrics_address: str = ""
    # Copies the replica's stdout to stdout.log once it has started: a pipe nobody reads fills up (64 KiB)
    # and the replica's next print blocks it.
    drain: asyncio.Task[None] | None = None
    # HOST:PORT of each worker's own port for a replica run with --workers N; empty otherwise.
    worker_addresses: tuple[str, ...] = ()
    # Each of those workers' pid, in the same order (what kills a hung one at once).
    worker_pids: tuple[int, ...] = ()
    # Per probed address: health probes in a row that got no answer (see replace_failed).
    misses: dict[str, int] = field(default_factory=dict)
    # Where this start's lines begin in its folder's stderr.log (earlier starts' lines are older news).
    stderr_from: int = 0
    # Waits for its process's end, to tell the manager at once when it ends while listed (a crash).
    exit_watch: asyncio.Task[None] | None = None
    # Its process's start (control_plane.deployments.process_start), read at launch: the endpoints file
    # names it with its pid, so that `fleet status` cannot take a later process with the pid for it.
    process_start: str = ""

    @property
    def health_addresses(self) -> tuple[str, ...]:
        """What each pass probes: every worker on its own port, else the replica's one address."""
        return self.worker_addresses or (self.address,)

    @property
    def missed_probes(self) -> int:
        """The most probes in a row that one of its addresses left unanswered."""
        return max(self.misses.values(), default=0)

    def hung_workers(self, stalled_endpoints: Collection[str] = ()) -> list[int]:
        """The pids of its workers (--workers N) known to be hung: those whose latest health probe went
        unanswered, and those whose metrics endpoint is among ``stalled_endpoints`` (the autoscaler found
        their event loop stalled, which it may have done after answering its latest probe). A worker's
        metrics endpoint, own address and pid are listed in the same order (:mod:`data_plane.workers`)."""
        metrics = metrics_addresses(self.metrics_address)
        return [
            pid
            for index, (address, pid) in enumerate(zip(self.worker_addresses, self.worker_pids, strict=False))
            if self.misses.get(address) or (index < len(metrics) and metrics[index] in stalled_endpoints)
        ]


class ReplicaStartFailed(RuntimeError):
    """A replica exited before serving; the error quotes the end of what it wrote to stderr in that start
    and names its log."""

    def __init__(self, number: int, status: int, said: str) -> None:
        super().__init__(f"data-plane replica {number} exited with status {status} before serving{said}")
        self.number, self.status, self.said = number, status, said


class ReplicaRefused(FailedPrecondition):
    """The fleet's first start of its command line exited with :data:`USAGE_ERROR_STATUS` before any
    replica served: a restart would only repeat it (the fleet restarted such a replica for ever, saying
    neither why nor where its log was), so the fleet stops with this error instead."""

    @classmethod
    def of(cls, failed: ReplicaStartFailed) -> ReplicaRefused:
        return cls(
            f"data-plane replica {failed.number} exited with status {failed.status} before serving: a usage"
            " or settings error, which every restart would repeat, so the fleet stops (check the flags"
            f" given to the replicas after --){failed.said}"
        )


def metrics_addresses(metrics_address: str) -> list[str]:
    """The endpoints a replica's ``metrics_address`` names: one, or one per worker of a --workers replica."""
    return [a for a in metrics_address.split(",") if a]
