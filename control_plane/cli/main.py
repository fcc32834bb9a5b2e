"""``aetherctl``: parse the command line, run one command, turn errors into messages and exit codes.

Exit codes: 0 success, 1 a failed operation (``error: <STATUS_CODE>: message`` on stderr, or ``error: <what>:
<path>: <reason>`` when a local file failed), 2 a usage error or an unusable ``AETHER_*`` setting (``error:
AETHER_TLS_CA: ...``). A user's bad input never ends in a traceback.

Building the parser imports only the commands' own modules, which import what a command needs (the SDK
and grpc, pyarrow, the control plane's modules) inside the functions that run it: ``aetherctl --help``, a
usage error, and every command's start stay free of what other commands need (about a second of imports,
when each module imported its command's dependencies at the top). tests/unit/cli/test_startup_imports.py
keeps it so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from clients.addresses import dial_address_problem
from clients.env_values import ConfigurationError
from control_plane.cli import (
    audit,
    demo,
    deploy,
    dev,
    features,
    fleet,
    historical,
    ingestion,
    jobs,
    models,
    monitor_config,
    monitoring,
    numbers,
    offline,
    retraining,
    runs,
)
from control_plane.cli.errors import FileProblem, UsageError
from control_plane.cli.settings import CliSettings
from control_plane.cli.timeouts import TimeoutFlag

#: The commands that never call the control plane at ``--control-plane``: ``dev`` starts one there (a
#: listen address, which the control plane checks as one), ``demo`` runs a stack of its own, ``fleet`` hands
#: the address to its replicas (or reads a local file), and the materializer opens the database itself.
#: Every other command dials it: its address is checked before the command runs, and an unreachable one
#: is said to be so.
LOCAL_COMMANDS = frozenset({"dev", "demo", "fleet", "materializer"})

#: Actions of those commands that hand the address on to processes that dial it: checked as the calling
#: commands' is. ``fleet run`` gave any address to its replicas, which dialled it as gRPC took it
#: (``127.0.0.1:99999``: port 34463) and served on, watching nothing.
HANDS_ON_THE_ADDRESS = frozenset({("fleet", "run")})


class Parser(argparse.ArgumentParser):
    """A parser that takes long options only as spelt in full (``allow_abbrev=False``).

    argparse's prefix matching made ``audit export --out FILE`` into ``--outcome FILE`` ("invalid
    choice"), and ``--out ok FILE`` silently filtered by outcome. ``add_subparsers`` makes its parsers
    of the parent's class, so every command and action of ``aetherctl`` is one of these."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def build_parser(settings: CliSettings) -> argparse.ArgumentParser:
    # Typed as the base class: the commands' register(subparsers) take _SubParsersAction[ArgumentParser].
    parser: argparse.ArgumentParser = Parser(
        prog="aetherctl",
        description="Administer Aether: features, ingestion, tracking, models, audit, and a local stack.",
    )
    parser.add_argument(
        "--control-plane",
        metavar="HOST:PORT",
        default=settings.control_plane_addr,
        help="control plane address (default: $AETHER_CONTROL_PLANE_ADDR or %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=numbers.positive_seconds,
        action=TimeoutFlag,
        default=settings.timeout_s,
        help="seconds per call (default: %(default)s; quarantine and materialize: 300)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    features.add_parsers(commands)
    dev.add_parsers(commands)
    demo.register(commands)
    runs.register(commands)
    models.register(commands)
    audit.register(commands)
    ingestion.register(commands)
    historical.register(commands)
    offline.register(commands)
    deploy.register(commands)
    fleet.register(commands)
    jobs.register(commands)
    monitoring.register(commands)
    monitor_config.register(commands)
    retraining.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = CliSettings.from_env()
    parser = build_parser(settings)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, already explained by argparse)
        return exit_.code if isinstance(exit_.code, int) else 2
    return _run(args, settings)


def _run(args: argparse.Namespace, settings: CliSettings) -> int:
    """Runs the parsed command; its errors become a message and an exit code."""
    from clients.errors import AetherError, Unavailable  # imports grpc: not for --help or a usage error

    try:
        action = (args.command, getattr(args, "action", None))
        if args.command not in LOCAL_COMMANDS or action in HANDS_ON_THE_ADDRESS:
            _check_control_plane_address(args.control_plane, settings)
        if args.command == "features":
            return features.run(args)
        if args.command == "dev":
            # The global flags override the variables for the stack too: `--control-plane` was ignored
            # here, so `dev up` started the control plane at $AETHER_CONTROL_PLANE_ADDR and `dev status`
            # looked there.
            flags = dataclasses.replace(
                settings, control_plane_addr=args.control_plane, timeout_s=args.timeout
            )
            return dev.run(args, flags)
        # Commands added through a module's ``register(subparsers)`` set their own handler.
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UsageError as error:
        print(f"aetherctl: error: {error}", file=sys.stderr)
        return 2
    except FileProblem as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ConfigurationError as error:  # an AETHER_* setting to fix (AETHER_TLS_CA, AETHER_TOKEN_FILE...)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except AetherError as error:
        message = error.message
        # Only where gRPC could not reach the control plane: an UNAVAILABLE the control plane answered
        # (its database is down) sent the operator to restart a control plane that was running.
        if isinstance(error, Unavailable) and args.command not in LOCAL_COMMANDS and not error.answered:
            message += (
                f" (is the control plane running at {args.control_plane}? `aetherctl dev up` starts one)"
            )
        print(f"error: {error.code.name}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`aetherctl features list | head`): stop quietly like other Unix tools, and
        # point stdout at /dev/null so that flushing it at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as error:
        # The safety net under the commands' own checks: a path they did not foresee (a folder where a file
        # belongs, a full disk) is the user's to fix, so it gets one line naming the command and the path.
        print(f"error: {FileProblem.of(_command_of(args), error)}", file=sys.stderr)
        return 1


def _check_control_plane_address(address: str, settings: CliSettings) -> None:
    """A usage error naming ``--control-plane``, or a ConfigurationError naming the variable when the
    address came from ``AETHER_CONTROL_PLANE_ADDR``, unless ``address`` is one to dial."""
    problem = dial_address_problem(address)
    if problem is None:
        return
    if address == settings.control_plane_addr and os.environ.get("AETHER_CONTROL_PLANE_ADDR"):
        raise ConfigurationError(f"AETHER_CONTROL_PLANE_ADDR: {problem}")
    raise UsageError(f"--control-plane: {problem}")


def _command_of(args: argparse.Namespace) -> str:
    """``audit export``: the command and its action (each group names its action's dest)."""
    action = getattr(args, "action", None) or getattr(args, "audit_action", None)
    return " ".join([args.command, *([action] if isinstance(action, str) else [])])


if __name__ == "__main__":
    raise SystemExit(main())
