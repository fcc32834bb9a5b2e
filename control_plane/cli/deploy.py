"""``aetherctl deploy ...``: deployments, traffic splits and canaries, through the Python SDK.

aetherctl deploy create eta-prod --model eta --version 3
aetherctl deploy canary start eta-prod --model eta --version 4 --steps 5,25,50,100 --bake-seconds 300
aetherctl deploy get eta-prod
aetherctl deploy traffic eta-prod eta-v4 30
aetherctl deploy promote eta-prod          # or: rollback eta-prod --reason "..."
aetherctl deploy delete eta-prod           # asks [y/N] at a terminal; a script passes --yes
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from clients.aether.v1 import deployments_pb2 as pb
from clients.serving_rules import MAX_WARMUP_REQUESTS, share_problem
from control_plane.cli import deploy_values, numbers, output
from control_plane.cli.conditional import read_change_write
from control_plane.cli.confirm import add_yes_flag, confirmed
from control_plane.cli.errors import UsageError
from control_plane.cli.settings import actor

if TYPE_CHECKING:  # the SDK (and grpc) are imported when a command runs, not to build the parser
    from clients.sdk.deployments import DeploymentsClient

Action = Callable[["DeploymentsClient", argparse.Namespace, TextIO], int]

ROLE_NAMES = {
    pb.VARIANT_ROLE_PRIMARY: "primary",
    pb.VARIANT_ROLE_CANARY: "canary",
    pb.VARIANT_ROLE_SHADOW: "shadow",
}
CANARY_NAMES: dict[int, str] = {
    pb.CANARY_STATUS_UNSPECIFIED: "-",
    pb.CANARY_STATUS_PROGRESSING: "progressing",
    pb.CANARY_STATUS_PROMOTED: "promoted",
    pb.CANARY_STATUS_ROLLED_BACK: "rolled back",
}


def canary_name(status: int) -> str:
    """A canary status as printed; one a newer control plane added is shown by its number."""
    return CANARY_NAMES.get(status, f"status {status}")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument(
        "--timeout", type=numbers.positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    # Every policy flag defaults to None, "not given": `canary start` changes only the fields given (see
    # _canary_start), and 0 is a value of its own for some (no error tolerated, no p99 ceiling). A group,
    # not an epilog: subcommands copy their parents' groups, with the description, but not an epilog.
    policy_parser = argparse.ArgumentParser(add_help=False)
    policy = policy_parser.add_argument_group(
        "canary policy",
        "create: a flag not given takes its default; canary start: a flag not given keeps the deployment's "
        "current value",
    )
    policy.add_argument(
        "--steps",
        type=deploy_values.canary_steps,
        help="canary traffic steps in percent, ascending to 100 (default 5,25,50,100)",
    )
    policy.add_argument(
        "--bake-seconds",
        type=numbers.whole(0, deploy_values.MAX_BAKE_SECONDS),
        help="how long each step is held (default 300; 0: no bake; at most ten years)",
    )
    policy.add_argument(
        "--max-error-rate",
        type=deploy_values.fraction,
        help="fraction of server errors that rolls back, and of refusals as the caller's mistake"
        " above the primary's (default 0.01; 0: any error)",
    )
    policy.add_argument(
        "--max-p99-ms",
        type=deploy_values.non_negative,
        help="absolute p99 ceiling (default 0: none); a breach needs two requests above it (one while only"
        " one was observed: --min-requests 1)",
    )
    policy.add_argument(
        "--max-p99-ratio",
        type=deploy_values.non_negative,
        help="canary p99 / primary p99 ceiling (default 1.5; 0: no comparison); p99s are judged no higher"
        " than each variant's second-slowest request",
    )
    policy.add_argument(
        "--min-requests", type=numbers.uint64, help="requests needed per decision (default 100)"
    )

    deploy = commands.add_parser("deploy", help="deployments: traffic splits, canaries, shadows")
    actions = deploy.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[common, policy_parser], help="deploy an approved model version"
    )
    create.add_argument("name")
    create.add_argument("--model", required=True)
    create.add_argument("--version", type=numbers.version, required=True)
    create.add_argument("--variant", default="", help="variant name (default <model>-v<version>)")
    create.add_argument(
        "--shadow", action="append", default=[], metavar="MODEL:VERSION[:PERCENT]", help="mirror to a shadow"
    )
    create.add_argument(
        "--ab",
        action="append",
        default=[],
        metavar="MODEL:VERSION:PERCENT",
        help="an A/B variant with this share of live traffic (the primary keeps the rest; repeatable)",
    )
    create.add_argument("--description", default="")
    create.add_argument("--salt", default="", help="routing salt (default: the deployment name)")
    create.add_argument(
        "--max-batch-size",
        type=numbers.int32,
        default=0,
        help="most rows the data plane runs in one batch (0: the server's default, 32)",
    )
    create.add_argument(
        "--max-queue-delay-us",
        type=numbers.int32,
        default=0,
        help="longest a request waits for others to batch with, in microseconds; it waits only while "
        "waits have been finding company (0: the server's default, 2000)",
    )
    create.add_argument("--warmup-requests", type=numbers.whole(0, MAX_WARMUP_REQUESTS), default=0)
    create.add_argument(
        "--missing-entity-policy",
        choices=("error", "defaults"),
        default="",
        help="an entity with no stored features: refuse the request (error, the default) or use defaults",
    )
    create.add_argument(
        "--feature-defaults",
        type=deploy_values.feature_defaults,
        default=[],
        metavar="V1,V2,...",
        help="one per input column: what a missing stored feature becomes, for any entity (else NaN for a "
        "model that takes it, else 0)",
    )
    create.add_argument(
        "--allow-non-finite",
        action="store_true",
        help="let NaN and infinities through, and feed a missing feature as NaN: for a model that imputes "
        "missing values itself (versions whose signature says so get this anyway)",
    )
    create.set_defaults(handler=_handler(_create))

    listing = actions.add_parser("list", parents=[common], help="deployments")
    listing.add_argument("--prefix", default="")
    listing.set_defaults(handler=_handler(_list))

    get = actions.add_parser("get", parents=[common], help="one deployment: variants, traffic, canary")
    get.add_argument("name")
    get.set_defaults(handler=_handler(_get))

    traffic = actions.add_parser("traffic", parents=[common], help="set one variant's traffic share")
    traffic.add_argument("name")
    traffic.add_argument("variant")
    traffic.add_argument(
        "percent", type=deploy_values.traffic_share, metavar="PERCENT", help="from 0 to 100 (0: no traffic)"
    )
    traffic.set_defaults(handler=_handler(_traffic))

    canary = actions.add_parser("canary", help="canary releases")
    canary_actions = canary.add_subparsers(dest="canary_action", required=True, metavar="ACTION")
    start = canary_actions.add_parser("start", parents=[common, policy_parser], help="start a canary")
    start.add_argument("name")
    start.add_argument("--model", required=True)
    start.add_argument("--version", type=numbers.version, required=True)
    start.add_argument("--variant", default="")
    start.set_defaults(handler=_handler(_canary_start))

    promote = actions.add_parser("promote", parents=[common], help="blue/green swap of the canary")
    promote.add_argument("name")
    promote.add_argument("--variant", default="", help="default: the running canary")
    promote.set_defaults(handler=_handler(_promote))

    rollback = actions.add_parser("rollback", parents=[common], help="take the canary to 0%%")
    rollback.add_argument("name")
    rollback.add_argument("--variant", default="", help="default: the running canary")
    rollback.add_argument("--reason", default="", help="why (recorded; at most 6000 characters)")
    rollback.set_defaults(handler=_handler(_rollback))

    delete = actions.add_parser(
        "delete",
        parents=[common],
        help="delete a deployment",
        description="Deletes a deployment. Asks for confirmation at a terminal; without one (a script),"
        " --yes is required.",
    )
    delete.add_argument("name")
    add_yes_flag(delete)
    delete.set_defaults(handler=_handler(_delete))


def _handler(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from clients.sdk.deployments import DeploymentsClient

        with DeploymentsClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
            try:
                return action(client, args, sys.stdout)
            except ValueError as error:
                print(f"aetherctl: error: {error}", file=sys.stderr)
                return 2

    return run


# The policy flags by their attribute on the parsed arguments, with the CanaryPolicy field each sets.
POLICY_FLAGS = {
    "bake_seconds": "bake_seconds",
    "max_error_rate": "max_error_rate",
    "max_p99_ms": "max_p99_latency_ms",
    "max_p99_ratio": "max_p99_ratio",
    "min_requests": "min_requests",
}


def _policy_given(args: argparse.Namespace) -> bool:
    return args.steps is not None or any(getattr(args, flag) is not None for flag in POLICY_FLAGS)


def _policy(args: argparse.Namespace, current: pb.CanaryPolicy | None = None) -> pb.CanaryPolicy | None:
    """The canary policy of the flags given, over ``current`` when there is one (each flag not given keeps
    its field there); without ``current``, the fields of flags not given stay unset: the server's
    defaults. None when no policy flag was given: the server keeps the policy it has."""
    if not _policy_given(args):
        return None
    policy = pb.CanaryPolicy()
    if current is not None:
        policy.CopyFrom(current)
    if args.steps is not None:
        policy.steps_percent[:] = args.steps
    for flag, field in POLICY_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(policy, field, value)
    return policy


def _shadow(text: str) -> pb.Variant:
    from clients.sdk.deployments import variant

    parts = text.split(":")
    try:
        if len(parts) in (2, 3):
            percent = float(parts[2]) if len(parts) == 3 else 100.0
            _share_must_route("--shadow", text, percent)
            return variant(parts[0], int(parts[1]), "shadow", percent)
    except ValueError:
        pass
    raise UsageError(f"--shadow takes MODEL:VERSION[:PERCENT], not {text!r}")


def _ab(text: str) -> pb.Variant:
    from clients.sdk.deployments import variant

    parts = text.split(":")
    try:
        if len(parts) == 3:
            percent = float(parts[2])
            # Checked here: the server judges the primary's share (100 minus the tests'), so a bad PERCENT
            # came back as an error about the primary with a number the user never typed.
            _share_must_route("--ab", text, percent)
            return variant(parts[0], int(parts[1]), "canary", percent)
    except ValueError:
        pass
    raise UsageError(f"--ab takes MODEL:VERSION:PERCENT, not {text!r}")


def _share_must_route(flag: str, text: str, percent: float) -> None:
    """The server's rules, checked here so that the error names the flag: a share lies in [0, 100] (a
    NaN, negative or oversized --shadow share was sent, and refused as INVALID_ARGUMENT), and a positive
    share under one of the router's buckets gets no requests at all."""
    if not 0.0 <= percent <= 100.0:  # NaN fails it too
        raise UsageError(f"{flag} {text}: PERCENT must lie in [0, 100]")
    problem = share_problem(percent)
    if problem is not None:
        raise UsageError(f"{flag} {text}: PERCENT is {percent:g}%, {problem}")


def _show(deployment: pb.Deployment, args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        output.print_json(output.to_jsonable(deployment), out)
        return 0
    rows = [
        (v.name, ROLE_NAMES.get(v.role, "-"), f"{v.model_name}:{v.version}", f"{v.traffic_percent:.2f}%")
        for v in deployment.variants
    ]
    out.write(f"deployment {deployment.name}  (plan revision {deployment.plan_revision})\n")
    out.write(output.table(("VARIANT", "ROLE", "MODEL", "TRAFFIC"), rows) + "\n")
    canary = deployment.canary
    if canary.status != pb.CANARY_STATUS_UNSPECIFIED:
        steps = ", ".join(f"{s:g}" for s in deployment.canary_policy.steps_percent)
        out.write(
            f"canary {canary.variant} ({canary.model_name}:{canary.version}): {canary_name(canary.status)}"
            f" at {canary.traffic_percent:g}% (steps {steps}); {canary.reason}\n"
        )
    return 0


def _create(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    from clients.sdk.deployments import variant

    tests = [_ab(text) for text in args.ab]
    primary = 100.0 - sum(v.traffic_percent for v in tests)
    if primary < 0.0:
        raise UsageError(f"the --ab shares sum to {100.0 - primary:g}%, more than 100%")
    variants = [variant(args.model, args.version, "primary", primary, name=args.variant), *tests]
    variants += [_shadow(text) for text in args.shadow]
    serving = pb.ServingConfig(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        warmup_requests=args.warmup_requests,
        missing_entity_policy=args.missing_entity_policy,
        feature_defaults=args.feature_defaults,
        allow_non_finite=args.allow_non_finite,
    )
    created = client.create(
        args.name,
        variants,
        description=args.description,
        serving=serving,
        canary_policy=_policy(args),
        routing_salt=args.salt,
    )
    return _show(created, args, out)


def _list(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    found = list(client.list(name_prefix=args.prefix))
    if args.json:
        output.print_json([output.to_jsonable(d) for d in found], out)
        return 0
    rows = [
        (
            d.name,
            ", ".join(
                f"{v.name} {v.traffic_percent:g}%" for v in d.variants if v.role != pb.VARIANT_ROLE_SHADOW
            ),
            canary_name(d.canary.status),
            output.timestamp(d.updated_at_us),
        )
        for d in found
    ]
    out.write(output.table(("DEPLOYMENT", "TRAFFIC", "CANARY", "UPDATED"), rows) + "\n")
    return 0


def _get(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.get(args.name), args, out)


def _traffic(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.set_traffic(args.name, args.variant, args.percent), args, out)


def _canary_start(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    # StartCanary replaces the whole policy it is given, so the flags given are laid over the deployment's
    # current policy: `--min-requests 10` alone no longer reset the steps, bake and thresholds to defaults.
    # The start is conditional on the revision read (see control_plane.cli.conditional): a policy change
    # landing between the read and the start was silently undone.
    if not _policy_given(args):  # nothing read: the server keeps the policy it has
        started = client.start_canary(args.name, args.model, args.version, variant_name=args.variant)
        return _show(started, args, out)

    def start(current: pb.Deployment) -> pb.Deployment:
        return client.start_canary(
            args.name,
            args.model,
            args.version,
            variant_name=args.variant,
            policy=_policy(args, current.canary_policy),
            expected_plan_revision=current.plan_revision,
        )

    started = read_change_write(lambda: client.get(args.name), start, f"deployment {args.name!r}")
    return _show(started, args, out)


def _promote(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.promote(args.name, args.variant), args, out)


def _rollback(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    return _show(client.rollback(args.name, args.variant, args.reason), args, out)


def _delete(client: DeploymentsClient, args: argparse.Namespace, out: TextIO) -> int:
    if not confirmed(f"delete deployment {args.name!r}", yes=args.yes):
        return 1
    client.delete(args.name)
    if args.json:
        output.print_json({"deleted": args.name}, out)
    else:
        out.write(f"deleted deployment {args.name}\n")
    return 0
