"""``aetherctl dev up|down|status``: a local stack of redis-server, the control plane and the data plane.

The flags are here; the stack itself is :mod:`control_plane.cli.local_stack`, imported only when a ``dev``
action runs: it imports grpc and redis, a tenth of a second of every other command's start."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from control_plane.cli.numbers import positive_seconds, window_seconds

if TYPE_CHECKING:
    from control_plane.cli.settings import CliSettings

#: ``dev down``'s seconds between SIGTERM and SIGKILL by default: the control plane's default drain (6 s)
#: and gRPC grace (2 s), with ``DOWN_MARGIN_S`` to close its stores and exit.
DEFAULT_DOWN_GRACE_S = 10.0
DOWN_MARGIN_S = 2.0


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser("dev", help="a local stack: redis-server, control plane, data plane")
    actions = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the local stack (in the background) and wait until it is ready")
    up.add_argument(
        "--wait", type=positive_seconds, default=60.0, help="seconds to wait for each service (default: 60)"
    )
    down = actions.add_parser("down", help="stop the local stack")
    down.add_argument(
        "--grace",
        type=window_seconds,
        default=None,
        help="seconds between SIGTERM and SIGKILL (default: 10, or the running control plane's"
        " AETHER_CONTROL_PLANE_DRAIN_S + 4 when that is longer: its drain and gRPC grace, so a stop answers"
        " its runs' callers first)",
    )
    actions.add_parser("status", help="show which services of the local stack run, and where")


def run(args: argparse.Namespace, settings: CliSettings) -> int:
    from control_plane.cli import local_stack

    if args.action == "down":
        # The drain the running control plane was started with, from whichever shell `dev up` ran in;
        # this shell's only when that cannot be read.
        args.grace = down_grace(args.grace, local_stack.control_plane_environment(settings) or os.environ)
    return local_stack.run(args, settings)


def down_grace(flag: float | None, environ: Mapping[str, str]) -> float:
    """``dev down``'s grace: ``--grace`` when given, else long enough for the control plane's stop to
    drain its ingestion runs (AETHER_CONTROL_PLANE_DRAIN_S in ``environ``: the running control plane's own
    environment, see ``local_stack.control_plane_environment``; this shell's was used, so a control plane
    started from another shell with a longer drain was SIGKILLed mid-drain) and answer them before
    SIGKILL: a fixed 10 s killed a control plane with a longer drain while it waited for a stuck run,
    whose caller then got a retryable UNAVAILABLE instead of the answer naming what the run stored
    (``control_plane.ingestion.draining``)."""
    if flag is not None:
        return flag
    # Imported here: they import grpc and redis, which no other command's flags need (test_startup_imports).
    from clients.env_values import ConfigurationError, env_float
    from control_plane.ingestion.draining import DEFAULT_DRAIN_S, DRAIN_VARIABLE
    from control_plane.settings import ControlPlaneSettings

    try:
        drain_s = env_float(environ, DRAIN_VARIABLE, DEFAULT_DRAIN_S, minimum=0, maximum=3600)
    except ConfigurationError:  # the control plane refuses to start with it: nothing of it to wait for
        drain_s = DEFAULT_DRAIN_S
    return max(DEFAULT_DOWN_GRACE_S, drain_s + ControlPlaneSettings.shutdown_grace_s + DOWN_MARGIN_S)
