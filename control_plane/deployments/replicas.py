"""A local replica manager: runs N ``python -m data_plane`` processes on this machine (the autoscaler's
single-machine executor; on a cluster the same decision drives a Deployment's replica count instead).

A replica is listed in :meth:`ReplicaManager.ready_addresses` (what a client-side or external load
balancer sends traffic to) only once its gRPC health says SERVING, so it has loaded the plans and models
it serves. Scaling down removes a replica from that list first and then sends SIGTERM, on which the data
plane stops accepting, drains in-flight requests and exits; it is killed only if it overruns the stop
timeout, with its whole process group (each replica runs in a session of its own), so the workers of a
--workers replica end with it. A scale-down stops first the replicas the autoscaler found stalled (their
event loop does not run, so they are killed at once), then those whose latest health probe went
unanswered, then the newest: the newest alone left a hung replica listed and stopped a healthy one.
Each replica gets its own state folder (persisted plans, its stderr and stdout logs) and, unless told
otherwise, a Prometheus endpoint of its own (``Replica.metrics_address``), which the autoscaler
(:mod:`control_plane.deployments.autoscale_loop`) scrapes.

A listed replica whose process exits (a crash, the OOM killer) sets :attr:`ReplicaManager.exited`, on
which the autoscaler replaces it at once. Before each autoscaler decision
(:meth:`ReplicaManager.replace_failed`) a replica whose process exited is unlisted and replaced (if that
was not done yet), and so is one that is hung: its process is alive but
its gRPC health gave no answer (deadline passed, no connection) to ``hung_after_misses`` probes in a row,
one per pass (a stopped process, a deadlock, a wedged event loop). A replica run with ``--workers N`` is
probed on each worker's own port (its line ``aether data plane workers on ...``), and is hung once any
one worker missed that many in a row: a probe through the shared port reached whichever worker the
kernel picked, so a hung worker's misses were cut short by its healthy siblings' answers and it could
stay in the rotation, its connections hanging, for ever. A hung replica was counted as
capacity and kept in the endpoints file, and so in every client's rotation, for ever: a health watch
that just stalls does not take it out. It cannot drain, so it is SIGKILLed at once after it is unlisted,
and counted in ``hung``, not in ``killed`` (which counts drains cut short). One slow answer under load
is a miss, not a verdict, and any answer, NOT_SERVING included, clears the misses. With it go the workers
of a --workers replica whose latest probe went unanswered, or whose metrics endpoint the autoscaler found
stalled (by the pids its line ``aether data plane worker pids ...`` names); its other workers drain on
their lifeline's SIGTERM, and its number stays taken until its whole process group is gone
(:mod:`.replica_groups`).

A new replica's folder is seeded with the newest readable snapshots any replica folder holds
(:mod:`control_plane.deployments.replica_folders`).

A new replica takes the lowest number no replica process holds: that of one that failed to start, was
stopped (a scale-down), exited or was killed as hung, once its process has exited. So it reuses that
replica's folder, snapshots and logs (appended to): a long-running fleet scaling up and down keeps as many
folders as it ever ran replicas at once, instead of one more per scale-up, each scanned by every
seeding. A number alone therefore does not tell two replicas apart over time: ``Replica.serial`` does."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Callable, Collection

from clients.lifeline import tied
from control_plane.deployments.process_start import process_start
from control_plane.deployments.replica import (
    USAGE_ERROR_STATUS,
    Replica,
    ReplicaRefused,
    ReplicaSettings,
    ReplicaStartFailed,
)
from control_plane.deployments.replica_folders import REGISTRY_FILE, prepare_folder
from control_plane.deployments.replica_groups import kill_member, reap_group
from control_plane.deployments.replica_health import answers, wait_serving
from control_plane.deployments.replica_output import (
    METRICS_LINE,
    READY_LINE,
    SERVING_LINE,
    ReplicaExited,
    copy_out,
    line_after,
    stderr_said,
    workers_then_serving,
)
from control_plane.process_secrets import withheld

_log = logging.getLogger("aether.control_plane.replicas")


class ReplicaManager:
    def __init__(self, settings: ReplicaSettings, on_change: Callable[[], None] | None = None) -> None:
        self._settings = settings
        self._replicas: list[Replica] = []
        # Every replica whose process exists but is not in the ready list (starting, or stopping): a
        # start cancelled by a stop of the fleet must not leave its process behind, so close() stops
        # these too.
        self._unlisted: dict[int, Replica] = {}
        # The numbers whose replica process may still exist (starting, listed, stopping): the others,
        # the lowest first, are the next starts'.
        self._taken: set[int] = set()
        self._starts = 0  # the next replica's serial
        # Per replica number: the wait for the rest of a killed --workers replica's process group (its
        # workers draining, or hung), which keeps the number and folder taken until the group is gone.
        self._reaping: dict[int, asyncio.Task[None]] = {}
        # True until the first starts have run: only a usage error there may stop the fleet. Later, this
        # command line has served, or failed for another reason, so a bad flag cannot be why: the data
        # plane also exits 2 on a --model-config file caught mid-write, and that stopped the whole fleet,
        # healthy replicas included.
        self._first_starts = True
        self._lock = asyncio.Lock()
        # Called after every change of the ready list: a leaving replica is unlisted before it drains.
        self._on_change = on_change
        #: Set when a listed replica's process ends on its own (a stop unlists a replica first), so that the
        #: autoscaler replaces it at once (:meth:`replace_failed`, which clears it) instead of at its next
        #: decision, up to a whole interval later.
        self.exited = asyncio.Event()
        self.killed = 0  # replicas SIGKILLed for overrunning stop_timeout_s (their drain was cut short)
        self.hung = 0  # replicas SIGKILLed and replaced for not answering their health (never drained)

    def ready_addresses(self) -> list[str]:
        return [r.address for r in self._replicas]

    @property
    def replicas(self) -> tuple[Replica, ...]:
        return tuple(self._replicas)

    @property
    def count(self) -> int:
        return len(self._replicas)

    async def scale_to(
        self,
        replicas: int,
        *,
        leaving_first: Collection[int] = (),
        stalled_endpoints: Collection[str] = (),
    ) -> None:
        """Starts replicas (in parallel, each listed once SERVING) or stops some (unlisted first, then
        drained in parallel): those whose serial is in ``leaving_first`` (the autoscaler's stalled ones:
        their event loop does not run, so they cannot drain and are killed at once, counted in ``hung``),
        then those that missed their latest health probes, then the newest. ``stalled_endpoints``: the
        metrics endpoints the autoscaler found stalled, whose --workers workers are killed with their data
        plane (:meth:`Replica.hung_workers`)."""
        async with self._lock:
            missing = replicas - len(self._replicas)
            if missing > 0:
                # Cancelled here (the fleet stopping), the starts already finished are listed and are
                # stopped by close(); the ones still starting stop their own process.
                first, self._first_starts = self._first_starts, False
                started = await asyncio.gather(
                    *(self._start_and_list() for _ in range(missing)), return_exceptions=True
                )
                refused = _refusal(started) if first else None
                for result in started:
                    if refused is not None and result is refused:
                        continue  # raised below, to stop the fleet: said once, by whoever stops it
                    if isinstance(result, ReplicaStartFailed) and result.status == USAGE_ERROR_STATUS:
                        _log.error(
                            "a data-plane replica failed to start: %s\n(exit status %d is a usage or settings"
                            " error, but not in the fleet's first start: a passing one, such as a"
                            " --model-config file caught mid-write; retried)",
                            result,
                            USAGE_ERROR_STATUS,
                        )
                    elif isinstance(result, BaseException):
                        _log.error("a data-plane replica failed to start: %s", result)
                if refused is not None:
                    raise ReplicaRefused.of(refused)
            keep = max(replicas, 0)
            if len(self._replicas) > keep:
                # All out of the ready list before any is told to drain, and drained together: one after
                # another, a stop of N replicas took N drains (a supervisor's stop timeout cut the last ones
                # short), and the lock was held as long.
                leaving = _leaving(self._replicas, len(self._replicas) - keep, leaving_first)
                self._replicas = [r for r in self._replicas if all(r is not gone for gone in leaving)]
                self._changed()
                stalled = [r for r in leaving if r.serial in leaving_first]
                if stalled:
                    _log.warning(
                        "stopping stalled data-plane replicas first, killed at once: %s",
                        ", ".join(str(r.number) for r in stalled),
                    )
                self.hung += len(stalled)
                await asyncio.gather(
                    *(
                        self._stop(r, kill=r.serial in leaving_first, stalled_endpoints=stalled_endpoints)
                        for r in leaving
                    )
                )

    async def replace_failed(self, *, probe: bool = True) -> int:
        """Unlists the replicas whose process ended on its own (a crash, the OOM killer) or that are hung,
        kills the hung ones, and starts as many new ones; the number replaced. The autoscaler calls it
        before each decision, so a fleet heals within an interval (a hung replica within
        ``hung_after_misses`` of them) instead of counting a dead replica as capacity, and as soon as
        :attr:`exited` is set, with ``probe`` False: an exit is no reason to count a probe more (a replica
        is hung after that many *passes* without an answer)."""
        settings = self._settings
        # Every probe at once, outside the lock: one hung replica must not delay the others' probes, and
        # a probe takes up to its whole deadline.
        probed = [
            (r, a)
            for r in (self._replicas if probe else ())
            if r.process.returncode is None
            for a in r.health_addresses
        ]
        answered = await asyncio.gather(*(answers(a, settings.health_timeout_s) for _, a in probed))
        async with self._lock:
            self.exited.clear()  # every exit so far is handled here; a later one sets it again
            for (replica, address), answer in zip(probed, answered, strict=True):
                replica.misses[address] = 0 if answer else replica.misses.get(address, 0) + 1
            exited = [r for r in self._replicas if r.process.returncode is not None]
            hung = [
                r
                for r in self._replicas
                if r.process.returncode is None and r.missed_probes >= settings.hung_after_misses
            ]
            if not exited and not hung:
                return 0
            for replica in exited:
                log = settings.home / f"replica-{replica.number}" / "stderr.log"
                said = await asyncio.to_thread(stderr_said, log, replica.stderr_from)
                _log.error(
                    "data-plane replica %d exited with status %s; replacing it%s",
                    replica.number,
                    replica.process.returncode,
                    said,
                )
            for replica in hung:
                _log.error(
                    "data-plane replica %d at %s gave no health answer to %d probes in a row (%g s each, "
                    "at %s); killing and replacing it",
                    replica.number,
                    replica.address,
                    replica.missed_probes,
                    settings.health_timeout_s,
                    ", ".join(a for a, n in replica.misses.items() if n >= settings.hung_after_misses),
                )
            for replica in (*exited, *hung):
                self._replicas.remove(replica)
            self._changed()  # out of the endpoints file before it is killed
            for replica in hung:
                self.hung += 1
                await self._stop(replica, kill=True)
            for replica in exited:  # its stdout copy ends, and its number is free again
                await self._stop(replica)
            wanted = len(self._replicas) + len(exited) + len(hung)
        await self.scale_to(wanted)
        return len(exited) + len(hung)

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # a failed listener must not leave a replica half started or stopped
                _log.exception("replica list listener failed")

    async def close(self, *, stalled: Collection[int] = (), stalled_endpoints: Collection[str] = ()) -> None:
        """Stops every replica: the listed ones, and any whose start or stop was interrupted; returns once
        the workers of a killed replica have gone too. Those whose serial is in ``stalled`` are killed at
        once, with their workers whose metrics endpoint is in ``stalled_endpoints`` (see :meth:`scale_to`);
        the others drain."""
        await self.scale_to(0, leaving_first=stalled, stalled_endpoints=stalled_endpoints)
        async with self._lock:
            await asyncio.gather(*self._reaping.values())
            await asyncio.gather(*(self._stop(replica) for replica in list(self._unlisted.values())))

    async def _start_and_list(self) -> Replica:
        """Starts a replica and lists it as soon as it serves: listed only once its siblings of the same
        scale-up had started too, a serving replica waited unlisted for the slowest (up to the start
        timeout), and one that crashed meanwhile was listed dead, its exit unnoticed (:meth:`_notice_exit`
        saw it exit while not listed). Nothing is awaited between its start and its listing, so its exit
        watch, which has not run yet, finds it listed."""
        replica = await self._start()
        self._unlisted.pop(replica.number, None)
        # In the order of the starts, whichever served first: the newest listed last, as a scale-down and
        # the endpoints file have it.
        bisect.insort(self._replicas, replica, key=lambda listed: listed.serial)
        self._changed()
        return replica

    async def _start(self) -> Replica:
        settings = self._settings
        number = next(n for n in itertools.count() if n not in self._taken)
        self._taken.add(number)
        serial = self._starts
        self._starts += 1
        folder = settings.home / f"replica-{number}"
        try:
            await asyncio.to_thread(prepare_folder, settings.home, folder)
            stderr = await asyncio.to_thread(open, folder / "stderr.log", "ab")
            logged_from = os.fstat(stderr.fileno()).st_size  # where this start's stderr begins
        except BaseException:
            self._taken.discard(number)  # no process was started
            raise
        # Tied to this process: a fleet that dies (SIGKILL, the OOM killer) takes its replicas along
        # instead of leaving them serving, unlisted, forever; a new fleet starts replicas of its own.
        command, pass_fds = tied([
            settings.python, "-m", "data_plane", "--listen", f"{settings.host}:0",
            "--control-plane", settings.control_plane_addr,
            "--snapshot-path", str(folder / REGISTRY_FILE),
            *(("--metrics-listen", f"{settings.host}:0") if settings.metrics else ()),
            *settings.extra_args,
        ])  # fmt: skip
        with stderr:  # the child keeps its own copy of the descriptor
            # The Redis URL in the environment, not on the command line that any user of the host reads
            # (ps): it may hold a password. The replica's auth is configured by the control plane's token
            # variables, which the control plane took out of its own environment (process_secrets).
            # A process group of its own (start_new_session), holding its --workers workers too: the kill
            # of a replica that overran its stop timeout reaches them all (killing the parent alone left the
            # workers in their overrunning drain, on their ports, long after the fleet had exited). So the
            # terminal's Ctrl-C reaches the fleet alone, which unlists each replica before it drains it.
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=stderr, pass_fds=pass_fds,
                env={**os.environ, **withheld(), "AETHER_REDIS_URL": settings.redis_url},
                start_new_session=True,
            )  # fmt: skip
        # Read now, while the process is ours and unreaped: its pid cannot have been handed out again.
        replica = Replica(
            number, process, serial, stderr_from=logged_from, process_start=process_start(process.pid)
        )
        self._unlisted[number] = replica
        waiting_for = f"its line '{READY_LINE}HOST:PORT' on stdout"
        try:
            async with asyncio.timeout(settings.start_timeout_s):
                replica.address = await line_after(process, READY_LINE)
                if settings.metrics:
                    waiting_for = f"its line '{METRICS_LINE}HOST:PORT' on stdout"
                    replica.metrics_address = await line_after(process, METRICS_LINE)
                waiting_for = f"its line '{SERVING_LINE}' on stdout"
                replica.worker_addresses, replica.worker_pids = await workers_then_serving(process)
                waiting_for = f"SERVING from its health service at {replica.address}"
                await _serving_unless_exited(process, replica.address)
        except BaseException as exc:
            await self._stop(replica)  # which gives its number, folder and log to the next start
            if isinstance(exc, TimeoutError):  # str(TimeoutError()) is empty: say what never came
                raise TimeoutError(
                    f"data-plane replica {number} did not start within {settings.start_timeout_s:g} s: "
                    f"waited for {waiting_for} (its log: {folder / 'stderr.log'})"
                ) from None
            if isinstance(exc, ReplicaExited):  # say why it exited: the end of what it wrote to stderr
                said = await asyncio.to_thread(stderr_said, folder / "stderr.log", logged_from)
                raise ReplicaStartFailed(number, exc.status, said) from None
            raise
        assert process.stdout is not None
        replica.drain = asyncio.create_task(copy_out(process.stdout, folder / "stdout.log"))
        replica.exit_watch = asyncio.create_task(self._notice_exit(replica))
        _log.info("data-plane replica %d serving on %s", number, replica.address)
        return replica

    async def _notice_exit(self, replica: Replica) -> None:
        """Sets :attr:`exited` once the replica's process ends while it is listed: on its own, since a stop
        unlists the replica before it signals it."""
        await replica.process.wait()
        if any(listed is replica for listed in self._replicas):
            self.exited.set()

    async def _stop(
        self, replica: Replica, *, kill: bool = False, stalled_endpoints: Collection[str] = ()
    ) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout_s`` (to its process group: its workers too); SIGKILL
        at once with ``kill`` (a hung replica would not drain, only hold the lock for the whole timeout): to
        its process and to those of its workers (--workers N) known hung, whose latest health probe went
        unanswered or whose metrics endpoint is in ``stalled_endpoints``, so that its healthy workers drain
        on their lifeline's SIGTERM (a stalled worker that had answered its probe was left to that SIGTERM,
        which its loop never acts on, and lived on until its lifeline's grace); nothing to signal for one that
        exited already. The replica stays in ``_unlisted`` until its process has exited, so a stop that is
        itself cancelled is finished by close(); only then is its number free for the next start, or, for
        a killed --workers replica, once the rest of its process group is gone (:meth:`_reap`)."""
        self._unlisted[replica.number] = replica
        process = replica.process
        if kill:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            # A hung worker never drains: left to its lifeline, it held its ports and memory until its grace
            # was over, and wrote into the folder its replica's successor was given meanwhile.
            for pid in replica.hung_workers(stalled_endpoints):
                kill_member(pid, process.pid)
            await process.wait()
        elif process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._settings.stop_timeout_s)
            except TimeoutError:
                _log.error("data-plane replica %d did not drain in time; killing it", replica.number)
                self.killed += 1  # what the fleet's last line reports: a kill is not a drain
                # The whole group: the workers of a --workers replica overran the drain too.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if replica.drain is not None:  # at its end already, unless a child of the replica holds the pipe
            replica.drain.cancel()
        if replica.exit_watch is not None:
            replica.exit_watch.cancel()
        if kill and replica.worker_pids and replica.number not in self._reaping:
            # In the background: the replacement of a hung replica need not wait for its workers' drain.
            self._reaping[replica.number] = asyncio.create_task(self._reap(replica))
            return
        self._release(replica)

    async def _reap(self, replica: Replica) -> None:
        """Waits for the rest of a killed --workers replica's process group (its healthy workers drain on
        their lifeline's SIGTERM) for at most ``stop_timeout_s``, then kills what is left; only then are
        its number and folder free."""
        try:
            left = await reap_group(replica.process.pid, self._settings.stop_timeout_s)
            if left:
                _log.error(
                    "workers of data-plane replica %d did not stop within %g s; killed: pids %s",
                    replica.number, self._settings.stop_timeout_s, ", ".join(map(str, left)),
                )  # fmt: skip
        finally:
            self._reaping.pop(replica.number, None)
            self._release(replica)

    def _release(self, replica: Replica) -> None:
        """The replica is gone: its number (and folder) free for the next start."""
        self._unlisted.pop(replica.number, None)
        self._taken.discard(replica.number)
        _log.info("data-plane replica %d stopped with status %s", replica.number, replica.process.returncode)


async def _serving_unless_exited(process: asyncio.subprocess.Process, address: str) -> None:
    """Returns once the replica's health is SERVING; :class:`ReplicaExited` as soon as its process ends
    first. A replica that died after its serving line (the OOM killer, a crashing model runtime) was
    probed until the start timeout, then reported as never having served in time, its exit status and
    stderr unsaid."""
    serving = asyncio.ensure_future(wait_serving(address))
    exited = asyncio.ensure_future(process.wait())
    try:  # cancelled here (the start timeout, a stop of the fleet), both waits end with it
        done, _ = await asyncio.wait((serving, exited), return_when=asyncio.FIRST_COMPLETED)
    finally:
        serving.cancel()
        exited.cancel()
    if serving in done:
        serving.result()  # SERVING (an exit at the same moment is its exit watch's, once it is listed)
        return
    raise ReplicaExited(exited.result())


def _leaving(listed: list[Replica], count: int, first: Collection[int]) -> list[Replica]:
    """The ``count`` replicas a scale-down stops: those whose serial is in ``first``, then those whose
    health missed a probe (the latest pass's), then the newest. Stopping the newest alone kept a hung
    replica listed, its clients' calls hanging, and took a working one away."""
    order = sorted(
        range(len(listed)),
        key=lambda i: (listed[i].serial not in first, listed[i].missed_probes == 0, -i),
    )
    return [listed[i] for i in order[:count]]


def _refusal(started: list[Replica | BaseException]) -> ReplicaStartFailed | None:
    """The usage error that stops the fleet, of its first starts: one, when no replica of them served."""
    if any(isinstance(result, Replica) for result in started):
        return None
    return next(
        (
            result
            for result in started
            if isinstance(result, ReplicaStartFailed) and result.status == USAGE_ERROR_STATUS
        ),
        None,
    )
