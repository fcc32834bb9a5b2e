"""``aetherctl features ...``: the feature registry from the command line, through the Python SDK."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.value_types import type_name
from control_plane.cli import numbers, output
from control_plane.cli.confirm import add_yes_flag, confirmed
from control_plane.cli.errors import FileProblem
from control_plane.cli.settings import actor
from control_plane.cli.tags import key_value

# Imported when a command runs, not to build the parser: the SDK and errors import grpc, and the
# definitions the features' validation (SQLAlchemy, numba, pyarrow), most of a second.
if TYPE_CHECKING:
    from clients.errors import AetherError
    from clients.sdk.registry import FeatureRegistryClient
    from control_plane.features.definitions import Definitions


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    features = commands.add_parser("features", help="the feature registry: apply definitions, inspect views")
    actions = features.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument(
        "--timeout", type=numbers.positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    apply = actions.add_parser("apply", parents=[common], help="create or version what FILE defines")
    apply.add_argument("file", metavar="FILE.yaml")
    apply.add_argument("--dry-run", action="store_true", help="print the plan without applying it")
    apply.set_defaults(run=_apply)

    listing = actions.add_parser("list", parents=[common], help="latest version of every feature view")
    listing.add_argument("--owner", default="", help="only views of this owner")
    listing.add_argument(
        "--tag",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="only views with this tag",
    )
    listing.add_argument(
        "--include-retired", action="store_true", help="also views whose versions are all retired"
    )
    listing.set_defaults(run=_list)

    entities = actions.add_parser("entities", parents=[common], help="every entity and its join keys")
    entities.set_defaults(run=_entities)

    get = actions.add_parser("get", parents=[common], help="one feature view with its features")
    get.add_argument("name")
    get.add_argument(
        "--version", type=numbers.uint32, default=0, help="version to show (default: the latest)"
    )
    get.set_defaults(run=_get)

    versions = actions.add_parser("versions", parents=[common], help="every version of a feature view")
    versions.add_argument("name")
    versions.set_defaults(run=_versions)

    for verb, help_text in (
        ("deprecate", "mark a version deprecated (still served)"),
        ("retire", "retire a deprecated version (no longer served)"),
    ):
        change = actions.add_parser(verb, parents=[common], help=help_text)
        change.add_argument("name")
        change.add_argument("version", type=numbers.view_version)
        change.set_defaults(run=_change_status, verb=verb)

    delete = actions.add_parser(
        "delete",
        parents=[common],
        help="delete a feature view and all its versions",
        description="Deletes a feature view and all its versions. Its online values (Redis) are removed"
        " in the background after the delete returns ('features get NAME' tells whether they are gone);"
        " its offline-store data is kept, since training sets and model lineage refer to it. A view"
        " created again under the name starts at the next version. Asks for confirmation at a terminal;"
        " without one (a script), --yes is required.",
    )
    delete.add_argument("name")
    add_yes_flag(delete)
    delete.set_defaults(run=_delete)


def run(args: argparse.Namespace) -> int:
    """Runs a ``features`` action; AetherError and UsageError propagate to ``main``."""
    from clients.sdk.registry import FeatureRegistryClient

    with FeatureRegistryClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
        code: int = args.run(client, args, sys.stdout)
        return code


# apply -----------------------------------------------------------------------------------------------

# How the summary line counts steps: (after applying, in a dry run).
_ACTION_WORDS = {
    pb.CREATE: ("created", "to create"),
    pb.NEW_VERSION: ("new version", "new version"),
    pb.UPDATE_METADATA: ("metadata updated", "metadata update"),
}


#: gRPC's default receive limit, which the control plane keeps: an Apply request is one message.
MAX_APPLY_REQUEST_BYTES = 4 * 1024 * 1024


def _too_large(definitions: Definitions, request: pb.ApplyRequest) -> str | None:
    """Why ``request`` cannot be sent as one Apply (None when it can). Each view may take up to 2 MiB
    (the registry's bound), so a valid file could still be refused by gRPC itself, with its "Received
    message larger than max" printed as the control plane's rejection."""
    size = request.ByteSize()
    if size <= MAX_APPLY_REQUEST_BYTES:
        return None
    sizes = [(entity.ByteSize(), f"entity {entity.name!r}") for entity in request.entities]
    sizes += [(view.ByteSize(), f"feature view {view.spec.name!r}") for view in request.views]
    largest_size, largest = max(sizes)
    return (
        f"{definitions.file}: its definitions take {size:,} bytes as one Apply request, over the"
        f" {MAX_APPLY_REQUEST_BYTES:,} a gRPC message may take (largest: {largest}, {largest_size:,} bytes);"
        " apply them in parts, one file each, entities before the views that use them"
    )


def _apply(client: FeatureRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    from clients.errors import AetherError
    from control_plane.features.definitions import DefinitionError, load_definitions

    try:
        # Read here first: a file that is not there (or a folder) is no problem of its content, said in
        # one line as for any local file; it was "FILE:0: cannot read file: [Errno 2] ..." and then
        # "error: INVALID_ARGUMENT: FILE is invalid". (Small: reading it twice costs nothing.)
        Path(args.file).read_bytes()
    except OSError as error:
        raise FileProblem.of("cannot read the definitions", error) from None
    try:
        definitions = load_definitions(args.file)
    except DefinitionError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"error: INVALID_ARGUMENT: {args.file} is invalid; nothing was sent", file=sys.stderr)
        return 1
    request = pb.ApplyRequest()
    request.CopyFrom(definitions.request)
    request.dry_run = args.dry_run
    too_large = _too_large(definitions, request)
    if too_large is not None:
        print(f"error: RESOURCE_EXHAUSTED: {too_large}; nothing was sent", file=sys.stderr)
        return 1
    try:
        response = client.apply_request(request)  # one call, one transaction: all of it or nothing
    except AetherError as error:
        _explain_rejection(definitions, error, dry_run=request.dry_run, address=args.control_plane)
        return 1
    if args.json:
        output.print_json(output.to_jsonable(response), out)
        return 0
    print(_plan_table(response.steps), file=out)
    print(f"\n{_summary(response)}", file=out)
    return 0


def _plan_table(steps: Iterable[pb.PlanStep]) -> str:
    def rows() -> Iterator[tuple[object, ...]]:
        for step in steps:
            changes = list(step.changes) or ["-"]
            version = step.version or "-"
            yield (step.kind, step.name, pb.PlanAction.Name(step.action), version, changes[0])
            for change in changes[1:]:  # one reason a line, under the step it belongs to
                yield ("", "", "", "", change)

    return output.table(("KIND", "NAME", "ACTION", "VERSION", "CHANGES"), rows())


def _summary(response: pb.ApplyResponse) -> str:
    counts: dict[str, int] = {}
    for step in response.steps:
        if step.action != pb.NO_CHANGE:
            done, planned = _ACTION_WORDS.get(step.action, (pb.PlanAction.Name(step.action),) * 2)
            word = done if response.applied else planned
            counts[word] = counts.get(word, 0) + 1
    if not counts:
        return "no changes"
    described = ", ".join(f"{count} {word}" for word, count in counts.items())
    return f"applied: {described}" if response.applied else f"dry run, nothing applied: {described}"


def _explain_rejection(definitions: Definitions, error: AetherError, *, dry_run: bool, address: str) -> None:
    """Points each line of the server's message that names a request path back at the file."""
    from clients.errors import AetherError, DeadlineExceeded, Unavailable

    located = False
    for line in error.message.splitlines() or [error.message]:
        explained = definitions.explain(line)
        if explained is not None:
            print(explained, file=sys.stderr)
            located = True
    summary = f"the control plane rejected {definitions.file}; nothing was applied"
    unanswered = isinstance(error, Unavailable | DeadlineExceeded) or type(error) is AetherError
    if unanswered and not dry_run:
        # No answer came back (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED...): the server may have
        # committed the Apply before the connection or the deadline gave out, so "nothing was applied"
        # could be false. Apply converges on the file, so running it again is safe.
        summary = (
            f"whether {definitions.file} was applied is unknown (no answer came back); apply is"
            " idempotent: run it again, or see what is registered with `aetherctl features list`"
        )
    detail = summary if located else f"{error.message} ({summary})"
    if isinstance(error, Unavailable) and not error.answered:  # as main says it for every other command
        detail += f" (is the control plane running at {address}? `aetherctl dev up` starts one)"
    print(f"error: {error.code.name}: {detail}", file=sys.stderr)


# inspection ------------------------------------------------------------------------------------------


def _list(client: FeatureRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    tags = dict(args.tag)
    views = client.list_feature_views(owner=args.owner, tags=tags, include_retired=args.include_retired)
    if args.json:
        output.print_json([output.to_jsonable(view) for view in views], out)
        return 0
    headers = ("NAME", "VERSION", "STATUS", "ENTITY", "FEATURES", "TTL", "OWNER", "TAGS")
    rows = [
        (
            view.spec.name,
            view.version,
            types_pb2.VersionStatus.Name(view.status),
            view.spec.entity,
            len(view.spec.features),
            output.duration(view.spec.ttl_seconds),
            view.metadata.owner or "-",
            output.tags(dict(view.metadata.tags)),
        )
        for view in views
    ]
    print(output.table(headers, rows) if rows else "no feature views", file=out)
    return 0


def _entities(client: FeatureRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    entities = client.list_entities()
    if args.json:
        output.print_json([output.to_jsonable(entity) for entity in entities], out)
        return 0
    rows = [
        (
            entity.name,
            ", ".join(f"{key.name}:{type_name(key.value_type)}" for key in entity.join_keys),
            entity.description or "-",
        )
        for entity in entities
    ]
    print(output.table(("NAME", "JOIN KEYS", "DESCRIPTION"), rows) if rows else "no entities", file=out)
    return 0


def _get(client: FeatureRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    view = client.get_feature_view(args.name, args.version)
    if args.json:
        output.print_json(output.to_jsonable(view), out)
        return 0
    spec, meta = view.spec, view.metadata
    source = f"{spec.source.kind} {spec.source.uri}".strip() or "-"
    if spec.source.timestamp_field:
        source += f" (timestamp {spec.source.timestamp_field})"
    fields = [
        ("name", spec.name),
        ("version", f"{view.version} of {view.latest_version}"),
        ("status", types_pb2.VersionStatus.Name(view.status)),
        ("entity", spec.entity),
        ("description", meta.description or "-"),
        ("owner", meta.owner or "-"),
        ("tags", output.tags(dict(meta.tags))),
        ("ttl", output.duration(spec.ttl_seconds)),
        ("source", source),
        ("fingerprint", f"{view.schema_fingerprint:016x}"),
        ("created", output.timestamp(view.created_at_us)),
        ("updated", output.timestamp(view.updated_at_us)),
    ]
    width = max(len(key) for key, _ in fields)
    for key, value in fields:
        print(f"{key + ':':<{width + 1}}  {value}", file=out)
    print(file=out)
    feature_rows = [
        (feature.name, type_name(feature.value_type), _rule(feature.validation), feature.description or "-")
        for feature in spec.features
    ]
    print(output.table(("FEATURE", "DTYPE", "VALIDATION", "DESCRIPTION"), feature_rows), file=out)
    if spec.aggregations:
        print(file=out)
        aggregation_rows = [
            (agg.output, agg.function, agg.column, output.duration(agg.window_seconds))
            for agg in spec.aggregations
        ]
        print(output.table(("AGGREGATION", "FUNCTION", "COLUMN", "WINDOW"), aggregation_rows), file=out)
    return 0


def _rule(rule: pb.ValidationRule) -> str:
    parts = []
    if rule.HasField("min_value"):
        parts.append(f"min={rule.min_value:g}")
    if rule.HasField("max_value"):
        parts.append(f"max={rule.max_value:g}")
    if rule.allowed_values:
        parts.append("allowed=" + "|".join(str(value) for value in rule.allowed_values))
    parts.append(f"nulls<={rule.max_null_fraction:g}")
    return " ".join(parts)


def _versions(client: FeatureRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    versions = client.list_feature_view_versions(args.name)
    if args.json:
        output.print_json([output.to_jsonable(view) for view in versions], out)
        return 0
    rows = [
        (
            view.version,
            types_pb2.VersionStatus.Name(view.status),
            len(view.spec.features),
            output.duration(view.spec.ttl_seconds),
            f"{view.schema_fingerprint:016x}",
            output.timestamp(view.created_at_us),
        )
        for view in versions
    ]
    headers = ("VERSION", "STATUS", "FEATURES", "TTL", "FINGERPRINT", "CREATED")
    print(output.table(headers, rows), file=out)
    return 0


# lifecycle -------------------------------------------------------------------------------------------


def _change_status(client: FeatureRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.verb == "deprecate":
        view = client.deprecate_version(args.name, args.version)
    else:
        view = client.retire_version(args.name, args.version)
    if args.json:
        output.print_json(output.to_jsonable(view), out)
    else:
        status = types_pb2.VersionStatus.Name(view.status)
        print(f"feature view {view.spec.name} version {view.version} is now {status}", file=out)
    return 0


def _delete(client: FeatureRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    action = f"delete feature view {args.name!r}"
    if not confirmed(action, yes=args.yes, details=" and all its versions"):
        return 1
    client.delete_feature_view(args.name)
    if args.json:
        output.print_json({"deleted": args.name}, out)
    else:
        print(f"deleted feature view {args.name}", file=out)
    return 0
