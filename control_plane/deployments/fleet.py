"""An autoscaled fleet of local data-plane replicas, as one long-running process (``aetherctl fleet run``).

It runs the :class:`~control_plane.deployments.replicas.ReplicaManager` under the
:class:`~control_plane.deployments.autoscale_loop.AutoscaleLoop` and publishes the ready replicas in an
endpoints file, ``$AETHER_HOME/fleet/endpoints.json`` (format: :class:`clients.sdk.fleet.FleetEndpoints`),
rewritten after every change of the list: a new replica appears once it is SERVING, a leaving one
disappears before it is told to drain. Clients read it with :func:`clients.sdk.fleet.fleet_target` and
balance over the replicas themselves (round robin), so no proxy sits on the latency path.

The file is replaced atomically (temporary file, fsync, rename), so a reader sees the old list or the
new one, never half of one. On stop the loop stops deciding, every replica is unlisted and all are drained
together (a stop takes one drain, not one per replica), and the file is left with an empty list, so nobody
is sent to replicas that no longer exist. Before that, the replicas' ``/metrics`` are scraped once more: a
replica (or --workers worker) whose event loop is stalled is killed at once and counted apart
(``FleetStopped.stalled``), since it would never act on the drain's SIGTERM (the stop waited for its whole
stop timeout, and ``fleet run`` said it was killed for not draining in time).

One fleet per home: a fleet holds an exclusive lock (flock) on ``$AETHER_HOME/fleet/fleet.lock`` for
its whole life, drain included, and a second one on the same home is refused before it writes anything
(it would overwrite the first one's endpoints file, empty it on its stop while the first still serves,
and start its replicas in the first one's folders). The kernel drops the lock when its holder dies, by
any means, so a fleet killed with SIGKILL leaves no stale lock behind.

When the fleet's first start of its command line exits with status 2 before any replica served (a usage
or settings error: a data-plane flag after ``--`` it does not know), the fleet stops: its replicas are
drained and :func:`run_fleet` raises the replica's
:class:`~control_plane.deployments.replica.ReplicaRefused`, which quotes the end of its stderr and names
its log, so ``fleet run`` exits 1 with that one error instead of restarting it for ever. Any other exit,
and any exit once the first starts are over (status 2 included: the data plane also exits 2 on a
--model-config file caught mid-write, and that stopped the whole fleet, healthy replicas included), is
retried at the next interval, its error logged the same way."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import math
import os
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.env_values import ConfigurationError, env_float, env_int
from clients.errors import FailedPrecondition
from clients.files import private_folder
from clients.sdk.fleet import FleetEndpoints, FleetReplica
from control_plane.deployments.autoscale_loop import (
    DEFAULT_STALLED_AFTER_S,
    HEARTBEAT_PERIOD_S,
    AutoscaleLoop,
    ScaleEvent,
    policy_values_from_env,
)
from control_plane.deployments.autoscaler import AutoscalerPolicy
from control_plane.deployments.process_start import process_start
from control_plane.deployments.replica import Replica, ReplicaSettings
from control_plane.deployments.replicas import ReplicaManager
from control_plane.settings import DEFAULT_LISTEN_ADDR, DEFAULT_REDIS_URL

_log = logging.getLogger("aether.control_plane.fleet")

#: Told of every published list, with the decision that caused it (None at start-up, on stop, and when a
#: crashed or hung replica is replaced).
OnChange = Callable[[FleetEndpoints, ScaleEvent | None], None]


def fleet_folder(home: Path) -> Path:
    return home / "fleet"


def endpoints_path(home: Path) -> Path:
    return fleet_folder(home) / "endpoints.json"


def lock_path(home: Path) -> Path:
    return fleet_folder(home) / "fleet.lock"


@contextlib.contextmanager
def hold_home(home: Path) -> Iterator[None]:
    """Holds the fleet lock of ``home`` until the block ends; FailedPrecondition naming the holder's pid
    when another fleet holds it."""
    path = lock_path(home)
    private_folder(path.parent)  # AETHER_HOME too, when this creates it
    # Not inheritable (Python's default): a replica holding a copy would keep the home locked after
    # its fleet is gone.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
            who = f"a fleet (pid {holder})" if holder.isdigit() else "a fleet"
            raise FailedPrecondition(
                f"{who} is already running with this home ({home}); stop it first, or give this one another "
                "AETHER_HOME"
            ) from None
        # The pid is only for that message; the lock itself is what counts.
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


#: The longest health probe deadline a fleet takes: a pass waits for its slowest probe, so a longer one
#: would hold up every scaling decision by as much.
MAX_PROBE_S = 60.0


@dataclass(frozen=True)
class FleetSettings:
    home: Path
    control_plane_addr: str = DEFAULT_LISTEN_ADDR
    redis_url: str = DEFAULT_REDIS_URL
    policy: AutoscalerPolicy = field(default_factory=AutoscalerPolicy)
    replica_host: str = "127.0.0.1"
    #: Extra ``python -m data_plane`` flags for every replica (``--model-config``, …); replicas also
    #: inherit this process's environment, so ``AETHER_*`` variables reach them too.
    replica_args: tuple[str, ...] = ()
    #: What every replica is told on its command line (``--drain-delay-s`` / ``--drain-grace-s``): seconds
    #: NOT_SERVING before it refuses new calls, then seconds its admitted calls get. The fleet passes them
    #: explicitly, so its stop timeout is computed from the values the replicas use, not from a copy of
    #: the data plane's defaults. A drain flag in ``replica_args`` still wins (it comes later).
    drain_delay_s: float = 0.5
    drain_grace_s: float = 5.0
    #: How long a replica may take to drain before it is killed: its drain delay + grace plus a margin,
    #: when None.
    stop_timeout_s: float | None = None
    #: Each autoscaler pass probes every listed replica's health (each worker's of a --workers replica)
    #: with this deadline; one left without an answer ``hung_after_misses`` passes in a row is hung and
    #: replaced (see :mod:`control_plane.deployments.replicas`).
    health_timeout_s: float = 2.0
    hung_after_misses: int = 3
    #: A replica whose event loop has not stamped its heartbeat for this long (the scraped
    #: ``aether_event_loop_heartbeat_age_seconds``) is stalled: its load is left out and a scale-down stops
    #: it first (:mod:`control_plane.deployments.autoscale_loop`). Above the heartbeat's period (0.5 s).
    stalled_after_s: float = DEFAULT_STALLED_AFTER_S

    def __post_init__(self) -> None:
        check_replica_args(self.replica_args)

    @property
    def endpoints_path(self) -> Path:
        return endpoints_path(self.home)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, policy: Mapping[str, int | float] | None = None
    ) -> FleetSettings:
        """``AETHER_HOME``, ``AETHER_CONTROL_PLANE_ADDR``, ``AETHER_REDIS_URL``, ``AETHER_DRAIN_DELAY_S``,
        ``AETHER_DRAIN_GRACE_S``, ``AETHER_REPLICA_HEALTH_TIMEOUT_S``, ``AETHER_REPLICA_HUNG_AFTER_MISSES``,
        ``AETHER_REPLICA_STALLED_AFTER_S`` and the policy variables of
        :func:`~control_plane.deployments.autoscale_loop.policy_from_env`, with the policy fields in
        ``policy`` (the command line's) over them. The policy is validated once, as merged: a variable
        that is only wrong together with a default (AETHER_MIN_REPLICAS=5 with max 4) is fine when a flag
        replaces that default (--max 10). A variable that is wrong on its own (not a number, out of its range)
        is a :class:`~clients.env_values.ConfigurationError`."""
        env = os.environ if environ is None else environ
        # A wrong variable is a ConfigurationError naming it, left to propagate: `aetherctl` prints it as
        # one line and exits 2, as for every other AETHER_* setting.
        values = policy_values_from_env(env)
        _check_replica_bounds(values, policy or {})
        merged = AutoscalerPolicy(**{**values, **(policy or {})})  # type: ignore[arg-type]
        return cls(
            home=Path(env.get("AETHER_HOME") or Path.home() / ".aether").expanduser(),
            control_plane_addr=env.get("AETHER_CONTROL_PLANE_ADDR") or DEFAULT_LISTEN_ADDR,
            redis_url=env.get("AETHER_REDIS_URL") or DEFAULT_REDIS_URL,
            policy=merged,
            # The variables a data plane reads itself: one value for the replicas and the fleet's timeout.
            drain_delay_s=env_float(env, "AETHER_DRAIN_DELAY_S", cls.drain_delay_s, minimum=0),
            drain_grace_s=env_float(env, "AETHER_DRAIN_GRACE_S", cls.drain_grace_s, minimum=0),
            health_timeout_s=env_float(
                env, "AETHER_REPLICA_HEALTH_TIMEOUT_S", cls.health_timeout_s, above=0, maximum=MAX_PROBE_S
            ),
            hung_after_misses=env_int(
                env, "AETHER_REPLICA_HUNG_AFTER_MISSES", cls.hung_after_misses, minimum=1
            ),
            stalled_after_s=env_float(
                env, "AETHER_REPLICA_STALLED_AFTER_S", cls.stalled_after_s, above=HEARTBEAT_PERIOD_S
            ),
        )

    def replica_settings(self) -> ReplicaSettings:
        """What the replica manager runs every replica with: these drain settings on each command line
        (before ``replica_args``, whose drain flags win) and a stop timeout that follows them."""
        drain = ("--drain-delay-s", f"{self.drain_delay_s:g}", "--drain-grace-s", f"{self.drain_grace_s:g}")
        stop_timeout_s = self.stop_timeout_s
        if stop_timeout_s is None:
            stop_timeout_s = replica_stop_timeout(self.replica_args, self.drain_delay_s, self.drain_grace_s)
        return ReplicaSettings(
            control_plane_addr=self.control_plane_addr,
            redis_url=self.redis_url,
            home=fleet_folder(self.home) / "replicas",
            host=self.replica_host,
            extra_args=(*drain, *self.replica_args),
            stop_timeout_s=stop_timeout_s,
            health_timeout_s=self.health_timeout_s,
            hung_after_misses=self.hung_after_misses,
        )


#: Where ``fleet run`` takes each replica bound from: its flag, then its variable, then the default.
_BOUNDS = {"min_replicas": ("--min", "AETHER_MIN_REPLICAS"), "max_replicas": ("--max", "AETHER_MAX_REPLICAS")}


def _check_replica_bounds(env_values: Mapping[str, int | float], flags: Mapping[str, int | float]) -> None:
    """ConfigurationError (``fleet run`` exits 2) when the fewest replicas are more than the most, naming
    where each bound came from: "min (5) <= max (4)" said neither that a 4 was the default nor how to set
    it."""
    said: dict[str, tuple[int | float, str]] = {}
    for field_name, (flag, variable) in _BOUNDS.items():
        if field_name in flags:
            said[field_name] = (flags[field_name], flag)
        elif field_name in env_values:
            said[field_name] = (env_values[field_name], variable)
        else:
            default = getattr(AutoscalerPolicy(), field_name)
            said[field_name] = (default, f"the default; set {flag} or {variable}")
    (fewest, fewest_from), (most, most_from) = said["min_replicas"], said["max_replicas"]
    if fewest > most:
        raise ConfigurationError(
            f"the fewest replicas, {fewest:g} ({fewest_from}), is more than the most, {most:g} ({most_from})"
        )


#: ``python -m data_plane`` flags the fleet gives every replica itself, each its own value, and why one
#: given after ``--`` (later on the command line, so it won) broke the fleet.
FLEET_SET_FLAGS = {
    "--listen": "the fleet sets it for each replica: a free port of its own (a fixed one serves one replica)",
    "--metrics-listen": "the fleet sets it for each replica: a free port of its own, which the autoscaler "
    "scrapes",
    "--snapshot-path": "the fleet sets it for each replica: a file in the replica's own folder",
    "--reuse-port": "it is for the workers of --workers N only",
}


def check_replica_args(replica_args: Sequence[str]) -> None:
    """ConfigurationError (``fleet run`` exits 2) for a flag of :data:`FLEET_SET_FLAGS` among the replicas'
    flags, in either spelling (``--flag V``, ``--flag=V``): the data plane takes no abbreviations; and for a
    drain flag whose value the fleet cannot read (:func:`replica_drain_flags`)."""
    for arg in replica_args:
        name = arg.split("=", 1)[0]
        if name in FLEET_SET_FLAGS:
            raise ConfigurationError(f"{name} after --: {FLEET_SET_FLAGS[name]}; leave it out")
    replica_drain_flags(replica_args)


#: The drain flags the fleet reads from the replicas' flags itself: its stop timeout follows them.
DRAIN_FLAGS = ("--drain-delay-s", "--drain-grace-s")


def replica_drain_flags(replica_args: Sequence[str]) -> dict[str, float]:
    """The drain flags among the replicas' flags (:data:`DRAIN_FLAGS`, either spelling; the last one given
    wins, as on the data plane's command line), by flag. ConfigurationError for a value that is no
    number of seconds (or is missing): read by an argparse parser of the fleet's own, it ended ``fleet
    run`` after its start line with that parser's usage (``usage: main.py [--drain-delay-s
    DRAIN_DELAY_S] ...``), naming neither the command nor the replicas. A negative, NaN or infinite one
    is refused here as well: the data plane refuses it (exit 2), and the stop timeout cannot follow it."""
    found: dict[str, float] = {}
    for index, arg in enumerate(replica_args):
        name, equals, value = arg.partition("=")
        if name not in DRAIN_FLAGS:
            continue
        raw: str | None = value if equals else None
        if raw is None and index + 1 < len(replica_args):
            raw = replica_args[index + 1]
        try:
            seconds = float(raw) if raw is not None else math.nan
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds >= 0):
            got = "nothing" if raw is None else repr(raw)
            raise ConfigurationError(f"{name} after --: expected a number of seconds, 0 or more, got {got}")
        found[name] = seconds
    return found


#: Beyond a replica's drain delay + grace: the rest of its stop (flushing the log, unloading models).
STOP_MARGIN_S = 10.0


def replica_stop_timeout(replica_args: Sequence[str], drain_delay_s: float, drain_grace_s: float) -> float:
    """How long a replica told ``drain_delay_s`` and ``drain_grace_s`` (unless ``replica_args`` says
    otherwise: those flags come later on its command line, so they win) takes to drain at most, plus
    :data:`STOP_MARGIN_S`. A fixed timeout killed replicas told to drain longer, cutting their requests."""
    flags = replica_drain_flags(replica_args)
    delay = flags.get("--drain-delay-s", drain_delay_s)
    grace = flags.get("--drain-grace-s", drain_grace_s)
    return max(delay, 0.0) + max(grace, 0.0) + STOP_MARGIN_S


def write_endpoints(path: Path, endpoints: FleetEndpoints) -> None:
    """Replaces ``path`` atomically: readers see the previous content or this one, even after a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(endpoints.to_json())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # the rename is durable once the folder is synced
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@dataclass(frozen=True)
class FleetStopped:
    """How the fleet's replicas ended, for ``fleet run``'s last line and exit code."""

    #: Replicas SIGKILLed on the way out for overrunning their stop timeout: their drain was cut short, so
    #: requests in flight may have failed because of the stop.
    killed: int = 0
    #: Replicas SIGKILLed while the fleet ran because they hung: their health stopped answering (they were
    #: replaced), or their event loop had stalled when a scale-down stopped them. They never drained, but
    #: whatever they held was lost when they hung, not by the stop: a fault healed on the way, as a crashed
    #: replica is.
    hung: int = 0
    #: Replicas SIGKILLed by the stop itself because their event loop had stalled (one more scrape taken
    #: then): they could not drain, and their kill is no drain cut short either. Counted in ``hung``, they
    #: made the last line say that every replica drained and that they had been replaced while it ran.
    stalled: int = 0


def snapshot(replicas: tuple[Replica, ...]) -> FleetEndpoints:
    """The endpoints file's content: every process named with its start as well as its pid, so that
    ``fleet status`` does not take whatever process has that pid later for it (:mod:`.process_start`)."""
    return FleetEndpoints(
        replicas=tuple(
            FleetReplica(r.number, r.address, r.metrics_address, r.process.pid, r.process_start)
            for r in replicas
        ),
        updated_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        pid=os.getpid(),
        process_start=process_start(os.getpid()),
    )


async def run_fleet(
    settings: FleetSettings,
    stop: asyncio.Event,
    on_change: OnChange | None = None,
    on_start: Callable[[], None] | None = None,
) -> FleetStopped:
    """Runs the fleet until ``stop`` is set, then drains every replica; the endpoints file follows.
    FailedPrecondition, before anything is written, when another fleet runs with the same home;
    ``on_start`` is called once this one holds it. Returns how many replicas were killed for not
    draining within their stop timeout, and how many were killed and replaced for hanging."""
    with hold_home(settings.home):
        if on_start is not None:
            on_start()
        return await _run_held(settings, stop, on_change)


async def _run_held(settings: FleetSettings, stop: asyncio.Event, on_change: OnChange | None) -> FleetStopped:
    path = settings.endpoints_path
    stopping = False
    listed = 0  # replicas in the file now

    def publish() -> None:
        nonlocal listed
        endpoints = snapshot(manager.replicas)
        write_endpoints(path, endpoints)
        listed = len(endpoints.replicas)
        # Only a change a decision applies is that decision's: one made by replacing a crashed or hung
        # replica was attributed to the latest decision, and printed as a scale-down then a scale-up.
        cause = None if stopping else autoscaler.applying
        if on_change is not None:
            on_change(endpoints, cause)

    manager = ReplicaManager(settings.replica_settings(), on_change=publish)
    autoscaler = autoscale_loop_for(settings, manager)
    # A list left by a fleet that crashed names replicas that are gone: start from an empty one.
    write_endpoints(path, snapshot(()))
    autoscaler.start()
    try:
        await _first_of(stop.wait(), autoscaler.failed.wait())
    finally:
        stopping = True
        await autoscaler.stop()
        # One more look at the replicas' event loops: a stalled one never acts on the drain's SIGTERM, and
        # the stop waited for its whole stop timeout, then counted it as a drain cut short.
        stalled, stalled_endpoints = await autoscaler.stalled_now()
        _log.info("stopping the fleet: draining %d replicas", manager.count - len(stalled))
        hung_while_running = manager.hung
        # Publishes each leaving replica.
        await manager.close(stalled=stalled, stalled_endpoints=stalled_endpoints)
        if listed:  # a listener failed on the way: the file must not name stopped replicas
            publish()
    if autoscaler.error is not None:  # a replica refused its command line: fleet run fails, saying why
        raise autoscaler.error
    return FleetStopped(
        killed=manager.killed, hung=hung_while_running, stalled=manager.hung - hung_while_running
    )


def autoscale_loop_for(settings: FleetSettings, manager: ReplicaManager) -> AutoscaleLoop:
    """The autoscaler of a fleet with ``settings``, driving ``manager``."""
    return AutoscaleLoop(manager, settings.policy, stalled_after_s=settings.stalled_after_s)


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Waits until one of ``waits`` ends; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
