"""Several data-plane processes on one port (``python -m data_plane --workers N``).

Each worker is a full data plane started with ``--reuse-port`` on the same HOST:PORT; the kernel
(SO_REUSEPORT) spreads incoming connections across them. The port is checked and held here first
(:func:`data_plane.ports.hold`: a socket bound without SO_REUSEPORT, which fails on a port anyone
listens on; it also resolves a port of 0), kept bound (never listening, so it receives no connections)
until the workers listen beside it. Once they do, a server that started listening on the port meanwhile
with SO_REUSEPORT (the kernel would split the clients with it) stops the start, as one there before
does (:func:`data_plane.ports.sharing_listeners`). Each worker's metrics endpoint, if any,
gets a port of its own (port 0), since Prometheus scrapes processes, not ports (a worker's counters are
its own). Once every worker is ready this process prints what a single data plane prints: the listening
line and, with metrics, ``aether data plane metrics on HOST:PORT,HOST:PORT,...`` naming every worker's
endpoint, which the replica manager passes on to the autoscaler (it scrapes each of them). Each worker
also listens on a port of its own besides the shared one, named after that in
``aether data plane workers on HOST:PORT,...``: a health probe through the shared port reaches the
worker the kernel picks, so only a probe of each worker's own port tells that one of them hung. Their pids
follow, in the same order, in ``aether data plane worker pids PID,...``: the replica manager kills a hung
worker at once (SIGKILL) when it kills its data plane, the healthy workers draining meanwhile.

Each worker is tied to this process (:mod:`clients.lifeline`): when this process dies, however it dies,
each worker is told to stop (SIGTERM, so it drains) and is killed once its drain delay + grace +
:data:`WORKER_STOP_MARGIN_S` have passed. A worker whose event loop is hung never drains: with the
lifeline's default 30 s, one outlived its killed data plane by that long, on its ports, holding its
memory and writing into the replica's folder a replacement was already using.

A worker that ends on its own (a crash, the OOM killer) is not restarted here: this process then stops
the other workers (SIGTERM, so they drain) and exits 1, and whoever runs it replaces the data plane
whole (the fleet's replica manager does, as for any replica that exits). A worker restarted in place
would get a metrics endpoint nobody scrapes (the line naming them is printed once), and meanwhile the
data plane would be listed, healthy-looking, with less capacity than its --workers says.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from types import FrameType

from clients.errors import FailedPrecondition
from clients.lifeline import tied
from data_plane.feature_pins import open_shared_pins
from data_plane.ports import hold, sharing_listeners
from data_plane.settings import DataPlaneSettings

_READY = re.compile(r"aether data plane listening on (\S+)")
_METRICS = re.compile(r"aether data plane metrics on (\S+)")
#: A worker's line after its listening one: the port of its own (data_plane.server.start_server).
WORKER_LINE = "aether data plane worker on "
_WORKER = re.compile(re.escape(WORKER_LINE) + r"(\S+)")
#: This process's line naming every worker's own port, after the metrics line.
WORKERS_LINE = "aether data plane workers on "
#: Then its line naming every worker's pid, in the same order.
WORKER_PIDS_LINE = "aether data plane worker pids "
#: Printed once a data plane's overall health first turns SERVING; by this process once every worker's was.
SERVING_LINE = "aether data plane serving"


#: Beyond a worker's drain delay + grace, what its lifeline waits before a SIGKILL once this process is gone:
#: the rest of its stop (closing its servers and clients, unloading its models).
WORKER_STOP_MARGIN_S = 3.0


def worker_grace_s(settings: DataPlaneSettings) -> float:
    """How long a worker whose parent has died gets to drain before its lifeline kills it."""
    return max(settings.drain_delay_s, 0.0) + max(settings.drain_grace_s, 0.0) + WORKER_STOP_MARGIN_S


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (both ``--flag V`` and ``--flag=V`` spellings)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


class _ServingCount:
    """Prints :data:`SERVING_LINE` once every worker has printed its own (a health probe through the
    shared port reaches one worker, so the replica manager waits for this line to list the data plane)."""

    def __init__(self, workers: int) -> None:
        self._left = workers
        self._lock = threading.Lock()

    def worker_serving(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                print(SERVING_LINE, flush=True)


def _forward_output(process: subprocess.Popen[str], serving: _ServingCount) -> None:
    """Copies what a started worker prints to this process's stdout, until the worker's end; its serving
    line is counted instead."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip() == SERVING_LINE:
            serving.worker_serving()
            continue
        sys.stdout.write(line)
        sys.stdout.flush()


def _wait_then_set(process: subprocess.Popen[str], ended: threading.Event) -> None:
    process.wait()
    ended.set()


def run_workers(settings: DataPlaneSettings, workers: int, argv: list[str]) -> int:
    # Bound, never listening, until the workers listen: no automatic bind takes the port (the kernel's pick
    # for port 0) meanwhile, and the workers bind beside it (data_plane.ports.hold). It keeps no server
    # that sets SO_REUSEPORT off: sharing_listeners finds one once the workers listen.
    reserved = hold(settings.listen)
    port = int(reserved.getsockname()[1])
    host = settings.listen.rsplit(":", 1)[0]
    base = _without(_without(_without(argv, "--workers"), "--listen"), "--metrics-listen")
    if settings.metrics_listen:
        base += ["--metrics-listen", f"{settings.metrics_listen.rsplit(':', 1)[0]}:0"]
    base = _without(base, "--feature-pins-fd")
    # One file for every worker to agree on feature pins through (data_plane.feature_pins): one data plane,
    # one pinned set, whichever worker a connection reaches. Nameless, it goes with the last worker.
    pins = open_shared_pins()
    command = [
        sys.executable, "-m", "data_plane", *base, "--listen", f"{host}:{port}", "--reuse-port",
        "--feature-pins-fd", str(pins),
    ]  # fmt: skip
    # Tied to this process: killed (the replica manager's SIGKILL after its stop timeout or of a hung
    # replica, the OOM killer), it would otherwise leave its workers serving on the port with nobody to stop
    # them. Killed after their own drain, not the lifeline's default 30 s: a hung worker (one that cannot
    # drain) held its ports, memory and the replica's folder that long after its data plane was gone.
    command, pass_fds = tied(command, grace_s=worker_grace_s(settings))
    try:
        processes = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True, pass_fds=(*pass_fds, pins))
            for _ in range(workers)
        ]
    finally:
        os.close(pins)  # the workers hold it
    stopping = threading.Event()
    ended = threading.Event()  # some worker's process has ended

    def signal_all(signum: int) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        signal_all(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        metrics: list[str] = []
        own: list[str] = []
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not _READY.search(line):
                forward(signal.SIGTERM, None)
                print(f"a data-plane worker failed to start: {line.strip() or 'no output'}", file=sys.stderr)
                return 1
            line = process.stdout.readline()  # its own port comes right after
            if (found_own := _WORKER.search(line)) is None:
                forward(signal.SIGTERM, None)
                said = line.strip() or "no output"
                print(f"a data-plane worker did not report its own port: {said}", file=sys.stderr)
                return 1
            own.append(found_own[1])
            if settings.metrics_listen:  # a worker prints its metrics line right after the listening one
                line = process.stdout.readline()
                found = _METRICS.search(line)
                if found is None:
                    forward(signal.SIGTERM, None)
                    said = line.strip() or "no output"
                    print(f"a data-plane worker did not report its metrics endpoint: {said}", file=sys.stderr)
                    return 1
                metrics.append(found[1])
        if sharing := sharing_listeners(port, [process.pid for process in processes]):
            # A server (SO_REUSEPORT) that started listening on the port after it was checked, while the
            # workers started: the kernel would split the clients with it. Refused, as one there before.
            raise FailedPrecondition(
                f"cannot listen on {host}:{port}: another process listens there too, with SO_REUSEPORT, "
                f"and would take part of the connections: {', '.join(sharing)}"
            )
        reserved.close()
        print(f"aether data plane listening on {host}:{port}", flush=True)
        if metrics:
            print(f"aether data plane metrics on {','.join(metrics)}", flush=True)
        # After the metrics line, which a reader may wait for right after the listening one.
        print(f"{WORKERS_LINE}{','.join(own)}", flush=True)
        # Their pids, in the same order: a replica manager that finds one worker hung kills that one at once.
        print(f"{WORKER_PIDS_LINE}{','.join(str(p.pid) for p in processes)}", flush=True)
        serving = _ServingCount(workers)
        for process in processes:  # unread, a worker's pipe fills up (64 KiB) and its next print blocks
            threading.Thread(target=_forward_output, args=(process, serving), daemon=True).start()
            threading.Thread(target=_wait_then_set, args=(process, ended), daemon=True).start()
        ended.wait()  # a signal handler still runs meanwhile (the wait is interrupted and resumed)
        crashed = not stopping.is_set()  # set before any worker is signalled, so no worker of ours ended
        if crashed:
            gone = ", ".join(
                f"pid {p.pid} with status {p.returncode}" for p in processes if p.poll() is not None
            )
            print(
                f"a data-plane worker ended on its own ({gone}); stopping the others, so that this data "
                "plane is replaced whole",
                file=sys.stderr,
                flush=True,
            )
            signal_all(signal.SIGTERM)
        for process in processes:
            process.wait()
    finally:
        reserved.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
    # 1 even when the worker exited 0: it was not told to, and its capacity is gone.
    return 1 if crashed else 0
