"""``aetherctl fleet run|status``: an autoscaled fleet of local data-plane replicas.

aetherctl fleet run --min 1 --max 4 --target-queue-per-replica 16 --target-p99-ms 50
aetherctl fleet run --min 2 -- --model-config models.json     # flags after -- go to every replica
aetherctl fleet status

``run`` stays in the foreground: one line per change of the ready replicas, and the endpoints file that
clients read (:func:`clients.sdk.fleet.fleet_target`). SIGTERM, SIGINT or SIGHUP (its terminal gone;
unless ignored, as under nohup) drains every replica, empties the endpoints file and exits 0, or 1 when a
replica had to be killed for not draining in time (:func:`stop_report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from control_plane.cli import numbers, output
from control_plane.cli.settings import CliSettings

# Imported when a command runs, not to build the parser: the fleet and its autoscaler import grpc and the
# data plane's clients (and asyncio, which fleet run imports, takes a fifth of the parser's start).
if TYPE_CHECKING:
    from clients.sdk.fleet import FleetEndpoints, FleetReplica
    from control_plane.deployments.autoscale_loop import ScaleEvent
    from control_plane.deployments.fleet import FleetSettings, FleetStopped

#: ``fleet run`` flag (argparse dest) -> AutoscalerPolicy field it overrides.
POLICY_FLAGS = {
    "min": "min_replicas",
    "max": "max_replicas",
    "interval_s": "interval_s",
    "target_queue_per_replica": "target_queue_per_replica",
    "target_p99_ms": "target_p99_ms",
    "up_window_s": "up_window_s",
    "down_window_s": "down_window_s",
}

#: ``fleet run`` flags (argparse dest) that set the FleetSettings field of the same name.
SETTING_FLAGS = ("drain_delay_s", "drain_grace_s", "health_timeout_s", "hung_after_misses", "stalled_after_s")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = commands.add_parser("fleet", help="an autoscaled fleet of local data-plane replicas")
    actions = fleet.add_subparsers(dest="action", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="run the fleet in the foreground until SIGTERM or Ctrl-C")
    run.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    run.add_argument("--redis-url", metavar="URL", help="online store (default: $AETHER_REDIS_URL)")
    # The flags take the ranges of the variables they replace (autoscale_loop.POLICY_VARIABLES): a bad
    # one is a usage error naming the flag (exit 2), not an INVALID_ARGUMENT naming the policy's field.
    # Each names its variable and AutoscalerPolicy's default, as the README's settings table does (the
    # policy is not imported to build the parser; tests/unit/cli/test_fleet_help.py keeps them equal).
    run.add_argument(
        "--min", type=numbers.replicas, metavar="N", help="fewest replicas (default: $AETHER_MIN_REPLICAS, 1)"
    )
    run.add_argument(
        "--max", type=numbers.replicas, metavar="N", help="most replicas (default: $AETHER_MAX_REPLICAS, 4)"
    )
    run.add_argument(
        "--interval-s",
        type=numbers.positive_seconds,
        metavar="S",
        help="seconds between decisions (default: $AETHER_AUTOSCALE_INTERVAL_S, 30)",
    )
    run.add_argument(
        "--target-queue-per-replica",
        type=numbers.positive_number,
        metavar="Q",
        help="queued + in flight per replica (default: $AETHER_TARGET_QUEUE_PER_REPLICA, 16)",
    )
    run.add_argument(
        "--target-p99-ms",
        type=numbers.positive_number,
        metavar="MS",
        help="p99 latency target (default: $AETHER_TARGET_P99_MS, 50)",
    )
    run.add_argument(
        "--up-window-s",
        type=numbers.window_seconds,
        metavar="S",
        help="scale up once load lasts this long (default: $AETHER_AUTOSCALE_UP_WINDOW_S, 60)",
    )
    run.add_argument(
        "--down-window-s",
        type=numbers.window_seconds,
        metavar="S",
        help="scale down once quiet this long (default: $AETHER_AUTOSCALE_DOWN_WINDOW_S, 300)",
    )
    # Told to every replica on its command line, and what its stop timeout follows (drain + 10 s).
    run.add_argument(
        "--drain-delay-s",
        type=numbers.window_seconds,
        metavar="S",
        help="each replica's seconds NOT_SERVING before refusing calls (default: $AETHER_DRAIN_DELAY_S, 0.5)",
    )
    run.add_argument(
        "--drain-grace-s",
        type=numbers.window_seconds,
        metavar="S",
        help="then the seconds its admitted calls get to finish (default: $AETHER_DRAIN_GRACE_S, 5)",
    )
    run.add_argument(
        "--health-timeout-s",
        type=numbers.probe_seconds,
        metavar="S",
        help="deadline of each replica health probe (default: $AETHER_REPLICA_HEALTH_TIMEOUT_S, 2)",
    )
    run.add_argument(
        "--hung-after-misses",
        type=numbers.at_least_one,
        metavar="N",
        help="probes in a row without an answer that make a replica hung "
        "(default: $AETHER_REPLICA_HUNG_AFTER_MISSES, 3)",
    )
    run.add_argument(
        "--stalled-after-s",
        type=numbers.stall_seconds,
        metavar="S",
        help="age of a replica's event-loop heartbeat that makes it stalled: left out of the load, stopped "
        "first (default: $AETHER_REPLICA_STALLED_AFTER_S, 5)",
    )
    run.add_argument(
        "replica_args",
        nargs="*",
        metavar="-- DATA_PLANE_FLAGS",
        help="flags for every `python -m data_plane` replica",
    )
    run.set_defaults(handler=_run)

    status = actions.add_parser("status", help="the fleet's ready replicas and their health")
    status.add_argument(
        "--endpoints", type=Path, metavar="PATH", help="default: $AETHER_HOME/fleet/endpoints.json"
    )
    status.add_argument("--json", action="store_true", help="print the endpoints file as it is")
    status.set_defaults(handler=_status)


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> FleetSettings:
    """The environment's settings, with the command line's flags over them."""
    from control_plane.deployments.fleet import FleetSettings

    # The flags go in before the policy is built: validated against the environment's defaults first, a
    # variable that a flag makes valid (AETHER_MIN_REPLICAS=5 with --max 10) was refused.
    policy: dict[str, int | float] = {
        field: getattr(args, flag) for flag, field in POLICY_FLAGS.items() if getattr(args, flag) is not None
    }
    settings = FleetSettings.from_env(environ, policy)
    overrides: dict[str, Any] = {"replica_args": tuple(args.replica_args)}
    if getattr(args, "control_plane", None):
        overrides["control_plane_addr"] = args.control_plane
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    for flag in SETTING_FLAGS:
        if getattr(args, flag, None) is not None:
            overrides[flag] = getattr(args, flag)
    return dataclasses.replace(settings, **overrides)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    settings = settings_from_args(args)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    line, code = stop_report(asyncio.run(_serve(settings)))
    print(line, flush=True)
    return code


def stop_report(stopped: FleetStopped) -> tuple[str, int]:
    """``fleet run``'s last line and exit code. Only a drain cut short fails the stop (1): in-flight
    requests may have failed because of it. A hung replica was killed and replaced while the fleet ran, as
    a crashed one is, so it is said (apart from the stop's kills) but does not fail the stop. Nor does a
    replica the stop killed at once because its event loop had stalled (it could not drain): said too,
    where "every replica drained" was said of it."""
    line = "aether fleet stopped: "
    if stopped.stalled:
        line += (
            f"{stopped.stalled} stalled replica(s) killed at once (an event loop that does not run cannot "
            "drain); "
        )
    if stopped.killed:
        line += f"{stopped.killed} replica(s) killed for not draining in time"
    else:
        line += "every other replica drained" if stopped.stalled else "every replica drained"
    if stopped.hung:
        line += f"; {stopped.hung} hung replica(s) were killed and replaced while it ran"
    return line, 1 if stopped.killed else 0


async def _serve(settings: FleetSettings) -> FleetStopped:
    import asyncio

    from control_plane.deployments.fleet import run_fleet

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The terminal or SSH session gone: a stop as on SIGTERM. Its default killed the fleet on the spot,
    # leaving its endpoints file naming replicas its death stopped. Left ignored under nohup.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        loop.add_signal_handler(signal.SIGHUP, stop.set)
    policy = settings.policy

    def started() -> None:  # printed once the home is ours: a fleet refused says one line, on stderr
        print(
            f"aether fleet: {policy.min_replicas}..{policy.max_replicas} replicas, deciding every "
            f"{policy.interval_s:g} s; endpoints file {settings.endpoints_path}",
            flush=True,
        )

    return await run_fleet(settings, stop, on_change=_print_change, on_start=started)


def _print_change(endpoints: FleetEndpoints, cause: ScaleEvent | None) -> None:
    count = len(endpoints.replicas)
    listed = ", ".join(r.address for r in endpoints.replicas) or "-"
    noun = "replica" if count == 1 else "replicas"
    if cause is None:
        print(f"{count} {noun} ready: {listed}", flush=True)
        return
    load = cause.load
    p99 = "n/a" if load.p99_ms is None else f"{load.p99_ms:.1f} ms"
    # The queue and p99 leave out a replica that could not be scraped, or whose event loop had stalled: say
    # so, or they read as the fleet's.
    left_out = f", {load.unmeasured} replica{'s' if load.unmeasured > 1 else ''} not measured"
    stalled = f", {load.stalled} replica{'s' if load.stalled > 1 else ''} stalled"
    measured = (
        f"queue {load.queue_depth:.0f}, p99 {p99}{left_out if load.unmeasured else ''}"
        f"{stalled if load.stalled else ''}"
    )
    print(f"scaled to {count} {noun} ({measured}): {listed}", flush=True)


def _status(args: argparse.Namespace) -> int:
    from clients.sdk.fleet import read_endpoints
    from control_plane.deployments.fleet import endpoints_path

    path = args.endpoints or endpoints_path(CliSettings.from_env().home)
    endpoints = read_endpoints(path)  # Unavailable (exit 1) when no fleet ever ran here
    return print_status(endpoints, path, args.json, args.timeout, sys.stdout)


def print_status(endpoints: FleetEndpoints, path: Path, as_json: bool, timeout_s: float, out: TextIO) -> int:
    if as_json:
        print(endpoints.to_json(), file=out)
        return 0
    print(
        f"fleet process {endpoints.pid} ({_fleet_state(endpoints)}), updated {endpoints.updated_at}, "
        f"file {path}",
        file=out,
    )
    if not endpoints.replicas:
        print("no ready replicas", file=out)
        return 0
    rows = [
        (r.number, r.address, r.metrics_address or "-", r.pid, _replica_health(r, min(timeout_s, 2.0)))
        for r in endpoints.replicas
    ]
    print(output.table(("REPLICA", "ADDRESS", "METRICS", "PID", "HEALTH"), rows), file=out)
    return 0


def _fleet_state(endpoints: FleetEndpoints) -> str:
    """Whether the fleet that wrote the file runs: its pid *and* start (a pid alone read a fleet gone for
    days as running once the number was handed to another process, and its stale list as current)."""
    from control_plane.deployments.process_start import ProcessState, process_state

    state = process_state(endpoints.pid, endpoints.process_start)
    if state is ProcessState.RUNNING:
        return "running"
    if state is ProcessState.REPLACED:
        return f"not running: pid {endpoints.pid} is another process now; the list is stale"
    if state is ProcessState.UNKNOWN:  # a file of a fleet that recorded no start: the pid is all there is
        return "running, judged by its pid alone: the list may be stale"
    return "not running: the list is stale"


def _replica_health(replica: FleetReplica, timeout_s: float) -> str:
    """Its health service's answer, unless its process is known to be gone: whatever answers at a gone
    replica's address now (another server given its port) is not the replica."""
    from control_plane.deployments.process_start import ProcessState, process_state

    state = process_state(replica.pid, replica.process_start)
    if state is ProcessState.GONE:
        return "gone (its process has ended)"
    if state is ProcessState.REPLACED:
        return f"gone (its process has ended; pid {replica.pid} is another process now)"
    return _health(replica.address, timeout_s)


def _health(address: str, timeout_s: float) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from clients.sdk.auth import open_channel

    with open_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError as error:
            return f"unreachable ({error.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
