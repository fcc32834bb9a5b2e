"""``aetherctl dev up|down|status``: a local stack of redis-server, the control plane and the data plane.

The flags are here; the stack itself is :mod:`control_plane.cli.local_stack`, imported only when a ``dev``
action runs: it imports grpc and redis, a tenth of a second of every other command's start."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from control_plane.cli.numbers import positive_seconds, window_seconds

if TYPE_CHECKING:
    from control_plane.cli.settings import CliSettings


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser("dev", help="a local stack: redis-server, control plane, data plane")
    actions = dev.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the local stack (in the background) and wait until it is ready")
    up.add_argument(
        "--wait", type=positive_seconds, default=60.0, help="seconds to wait for each service (default: 60)"
    )
    down = actions.add_parser("down", help="stop the local stack")
    down.add_argument(
        "--grace", type=window_seconds, default=10.0, help="seconds between SIGTERM and SIGKILL (default: 10)"
    )
    actions.add_parser("status", help="show which services of the local stack run, and where")


def run(args: argparse.Namespace, settings: CliSettings) -> int:
    from control_plane.cli import local_stack

    return local_stack.run(args, settings)
