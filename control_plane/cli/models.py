"""``aetherctl models ...`` (the model registry) and ``aetherctl lineage ...`` (where a model version
comes from, and which model versions use a feature view), through the Python SDK."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from control_plane.cli import numbers, output
from control_plane.cli.confirm import add_yes_flag, confirmed
from control_plane.cli.errors import UsageError
from control_plane.cli.settings import actor
from control_plane.cli.tags import key_value

# Imported when a command runs, not to build the parser: the SDK imports grpc.
if TYPE_CHECKING:
    from clients.sdk.models import ModelRegistryClient

STATUS_NAMES: dict[int, str] = {
    pb.PENDING_MANUAL_APPROVAL: "PendingManualApproval",
    pb.APPROVED: "Approved",
    pb.REJECTED: "Rejected",
}
STATUS_CHOICES = {"pending": pb.PENDING_MANUAL_APPROVAL, "approved": pb.APPROVED, "rejected": pb.REJECTED}

Action = Callable[["ModelRegistryClient", argparse.Namespace, TextIO], int]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    common.add_argument(
        "--timeout", type=numbers.positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")

    models = commands.add_parser("models", help="the model registry: versions, approval, aliases")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", parents=[common], help="registered models")
    listing.add_argument("--prefix", default="", help="only models whose name starts with this")
    listing.add_argument(
        "--tag",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="only models with this tag",
    )
    listing.set_defaults(handler=_handler(_list))

    get = actions.add_parser("get", parents=[common], help="one model version (default: the latest)")
    get.add_argument("name")
    get.add_argument("version", type=numbers.version, nargs="?")
    get.add_argument("--alias", default="", help="the version this alias points at")
    get.set_defaults(handler=_handler(_get))

    versions = actions.add_parser("versions", parents=[common], help="every version of a model")
    versions.add_argument("name")
    versions.add_argument("--status", choices=sorted(STATUS_CHOICES), help="only versions with this approval")
    versions.set_defaults(handler=_handler(_versions))

    for verb in ("approve", "reject"):
        review = actions.add_parser(verb, parents=[common], help=f"{verb} a pending version")
        review.add_argument("name")
        review.add_argument("version", type=numbers.version)
        review.add_argument(
            "--reason", default="", required=verb == "reject", help="why (recorded; at most 6,000 characters)"
        )
        review.set_defaults(handler=_handler(_review), verb=verb)

    alias = actions.add_parser(
        "alias",
        parents=[common],
        help="point an alias at a version, or delete it",
        description="Points an alias of a model at a version (moving it from the version it named), or"
        " with --delete removes it. --delete asks for confirmation at a terminal; without one (a script),"
        " --yes is required.",
    )
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=numbers.version, nargs="?")
    alias.add_argument("--delete", action="store_true", help="remove the alias (asks first; see --yes)")
    add_yes_flag(alias)
    alias.set_defaults(handler=_handler(_alias))

    delete = actions.add_parser(
        "delete",
        parents=[common],
        help="delete a version, or a model with none left",
        description="Deletes a model version (its aliases go with it), or, without VERSION, a model with"
        " no version left. Asks for confirmation at a terminal; without one (a script), --yes is required.",
    )
    delete.add_argument("name")
    delete.add_argument("version", type=numbers.version, nargs="?")
    add_yes_flag(delete)
    delete.set_defaults(handler=_handler(_delete))

    lineage = commands.add_parser(
        "lineage", parents=[common], help="the chain behind a model version, or the users of a feature view"
    )
    lineage.add_argument("model", nargs="?", help="model name")
    lineage.add_argument(
        "model_version", metavar="VERSION", type=numbers.version, nargs="?", help="model version"
    )
    lineage.add_argument("--feature-view", default="", help="list the model versions using this view instead")
    lineage.add_argument(
        "--version", type=numbers.uint32, default=0, help="with --feature-view: only this view version"
    )
    lineage.set_defaults(handler=_handler(_lineage))


def _handler(action: Action) -> Callable[[argparse.Namespace], int]:
    """Runs ``action`` with a client; its UsageError (exit 2) and the SDK's errors go to ``main``."""

    def run(args: argparse.Namespace) -> int:
        from clients.sdk.models import ModelRegistryClient

        with ModelRegistryClient(args.control_plane, actor=actor(), timeout=args.timeout) as client:
            return action(client, args, sys.stdout)

    return run


def _status(status: int) -> str:
    return STATUS_NAMES.get(status, "-")


def _list(client: ModelRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    tags = dict(args.tag)
    found = client.list_models(name_prefix=args.prefix, tags=tags)
    if args.json:
        output.print_json([output.to_jsonable(model) for model in found], out)
        return 0
    rows = [
        (
            model.name,
            model.latest_version or "-",
            ",".join(f"{alias}={version}" for alias, version in sorted(model.aliases.items())) or "-",
            output.tags(dict(model.tags)),
            output.timestamp(model.updated_at_us),
        )
        for model in found
    ]
    print(output.table(("MODEL", "LATEST", "ALIASES", "TAGS", "UPDATED"), rows), file=out)
    return 0


def _get(client: ModelRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    version = client.get_version(args.name, args.version or 0, alias=args.alias)
    if args.json:
        output.print_json(output.to_jsonable(version), out)
        return 0
    rows = [
        ("model", f"{version.model_name} version {version.version}"),
        ("approval", _approval(version.approval)),
        ("aliases", ", ".join(version.aliases) or "-"),
        ("run", version.run_id or "-"),
        ("artifact", f"sha256:{version.artifact.sha256} ({version.artifact.size} bytes)"),
        ("inputs", _tensors(version.signature.inputs)),
        ("outputs", _tensors(version.signature.outputs)),
        ("dataset", version.dataset.hash or "-"),
        ("features", ", ".join(version.feature_refs) or "-"),
        ("hyperparameters", output.tags(dict(version.hyperparameters))),
        ("metrics", _metrics(version)),
        ("git commit", version.git_commit or "-"),
        ("registered", f"{output.timestamp(version.created_at_us)} by {version.created_by or '-'}"),
    ]
    print(output.table(("FIELD", "VALUE"), rows), file=out)
    return 0


def _approval(approval: pb.ApprovalRecord) -> str:
    text = _status(approval.status)
    if approval.actor:
        text += f" by {approval.actor} at {output.timestamp(approval.decided_at_us)}"
    if approval.reason:
        text += f": {approval.reason}"
    return text


def _tensors(tensors: Sequence[pb.TensorSpec]) -> str:
    return ", ".join(f"{t.name}:{t.dtype}[{','.join(str(d) for d in t.shape)}]" for t in tensors) or "-"


def _metrics(version: pb.ModelVersion) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(version.metrics.items())) or "-"


def _versions(client: ModelRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    status = STATUS_CHOICES[args.status] if args.status else pb.APPROVAL_STATUS_UNSPECIFIED
    found = client.list_versions(args.name, status=status)
    if args.json:
        output.print_json([output.to_jsonable(version) for version in found], out)
        return 0
    rows = [
        (
            v.version,
            _status(v.approval.status),
            ",".join(v.aliases) or "-",
            v.run_id or "-",
            v.artifact.sha256[:12],
            _metrics(v),
            output.timestamp(v.created_at_us),
        )
        for v in found
    ]
    print(
        output.table(("VERSION", "APPROVAL", "ALIASES", "RUN", "ARTIFACT", "METRICS", "CREATED"), rows),
        file=out,
    )
    return 0


def _review(client: ModelRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    review = client.approve if args.verb == "approve" else client.reject
    version = review(args.name, args.version, args.reason)
    if args.json:
        output.print_json(output.to_jsonable(version), out)
        return 0
    print(f"model {version.model_name} version {version.version}: {_approval(version.approval)}", file=out)
    return 0


def _alias(client: ModelRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.delete:
        if args.version is not None:  # ignored, it deleted an alias the user may have meant to move
            raise UsageError("give either VERSION (to point the alias at it) or --delete, not both")
        if not confirmed(f"delete alias {args.alias!r} of model {args.name!r}", yes=args.yes):
            return 1
        client.delete_alias(args.name, args.alias)
        if args.json:
            output.print_json({"deleted": {"model": args.name, "alias": args.alias}}, out)
        else:
            print(f"alias {args.alias} of model {args.name} deleted", file=out)
        return 0
    if args.version is None:
        raise UsageError("give the VERSION the alias points at, or --delete")
    version = client.set_alias(args.name, args.alias, args.version)
    if args.json:
        output.print_json(output.to_jsonable(version), out)
        return 0
    print(f"{args.name}@{args.alias} -> version {version.version}", file=out)
    return 0


def _delete(client: ModelRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    what = f"version {args.version} of model {args.name!r}" if args.version else f"model {args.name!r}"
    if not confirmed(f"delete {what}", yes=args.yes):
        return 1
    if args.version:
        client.delete_version(args.name, args.version)
        deleted: dict[str, object] = {"model": args.name, "version": args.version}
        text = f"model {args.name} version {args.version} deleted"
    else:
        client.delete_model(args.name)
        deleted, text = {"model": args.name}, f"model {args.name} deleted"
    if args.json:
        output.print_json({"deleted": deleted}, out)
    else:
        print(text, file=out)
    return 0


# -- lineage -------------------------------------------------------------------------------------------


@dataclass
class Node:
    label: str
    children: list[Node] = field(default_factory=list)


def render_tree(root: Node) -> list[str]:
    lines = [root.label]

    def walk(node: Node, prefix: str) -> None:
        for index, child in enumerate(node.children):
            last = index == len(node.children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{child.label}")
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    return lines


def lineage_tree(lineage: pb.Lineage) -> Node:
    """Deployments (and retraining promotions in progress) at the top, then what each link was built
    from, down to the training set's file and the offline-store data each feature view was read from
    (beside the view's registered source)."""
    version = lineage.model_version
    views = [
        Node(
            f"feature view {view.name}@{view.version} ({types_pb2.VersionStatus.Name(view.status)},"
            f" entity {view.entity or '-'}, owner {view.owner or '-'}):"
            f" reads {', '.join(view.features_used)}",
            [*_read_from(lineage, view), Node(_registered_source(view))],
        )
        for view in lineage.feature_views
    ]
    query = f", query {lineage.dataset.query}" if lineage.dataset.query else ""
    dataset = Node(
        f"dataset {lineage.dataset.hash or '(no hash recorded)'}{query}", [*_training_set(lineage), *views]
    )
    if lineage.HasField("run"):
        run = lineage.run
        params = output.tags(dict(run.params))
        below = Node(
            f"run {run.run_id} (experiment {run.experiment}, {run.status}, params {params})", [dataset]
        )
    elif version.run_id:
        below = Node(f"run {version.run_id} (no longer tracked)", [dataset])
    else:
        below = Node("run: none recorded", [dataset])
    # What the version was registered with, besides its run's parameters: a version may have no run.
    model = Node(
        f"model {version.model_name} version {version.version} ({_status(version.approval.status)};"
        f" artifact sha256:{version.artifact.sha256[:12]}; git {version.git_commit or '-'};"
        f" hyperparameters {output.tags(dict(version.hyperparameters))}; metrics {_metrics(version)})",
        [below],
    )
    deployments = ", ".join(f"{d.name} ({d.detail})" if d.detail else d.name for d in lineage.deployments)
    top = f"deployments: {deployments or 'none'}"
    if lineage.promotions:  # about to be deployed: a version awaiting approval is served nowhere yet
        top += "; retraining promotions: " + ", ".join(f"{p.name} ({p.detail})" for p in lineage.promotions)
    return Node(top, [model])


def _training_set(lineage: pb.Lineage) -> list[Node]:
    """The materialized training set, from its record in the offline store (nothing without a hash)."""
    if not lineage.HasField("materialized"):
        return []
    built = lineage.materialized
    if not built.recorded:
        return [Node("training set: no record of this dataset in the offline store")]
    where = built.output_path or "(not written to a file)"
    return [
        Node(
            f"training set {where} ({built.row_count} rows, built {built.created_at or '-'},"
            f" entity rows sha256:{built.entity_rows_sha256[:12] or '-'})"
        )
    ]


def _read_from(lineage: pb.Lineage, view: pb.FeatureViewLineage) -> list[Node]:
    if view.offline_location:
        files = "file" if view.offline_files == 1 else "files"
        text = (
            f"read from offline store {view.offline_location}"
            f" ({view.offline_files} {files}, sha256:{view.offline_files_sha256[:12]})"
        )
        return [Node(text)]
    if lineage.HasField("materialized"):  # a hash, but where its data came from is not recorded
        return [Node("read from: not recorded")]
    return []


def _registered_source(view: pb.FeatureViewLineage) -> str:
    # Labelled apart: the feature registry's declaration (what ingestion reads), not the training data.
    return f"registered source {view.source.kind or '-'} {view.source.uri or '-'}"


def _lineage(client: ModelRegistryClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.feature_view:
        if args.model is not None:
            raise UsageError("give either MODEL VERSION or --feature-view, not both")
        usages = client.usages(args.feature_view, args.version)
        if args.json:
            output.print_json([output.to_jsonable(usage) for usage in usages], out)
            return 0
        scope = f"{args.feature_view}@{args.version}" if args.version else args.feature_view
        if not usages:
            print(f"no model version uses feature view {scope}", file=out)
            return 0
        rows = [
            (
                usage.model_name,
                usage.version,
                _status(usage.approval_status),
                ", ".join(usage.feature_refs),
                ", ".join(d.name for d in usage.deployments) or "-",
                ", ".join(p.name for p in usage.promotions) or "-",
            )
            for usage in usages
        ]
        header = ("MODEL", "VERSION", "APPROVAL", "FEATURES", "DEPLOYMENTS", "PROMOTIONS")
        print(output.table(header, rows), file=out)
        return 0
    if args.model is None or args.model_version is None:
        raise UsageError("give MODEL VERSION, or --feature-view VIEW")
    if args.version:  # ignored, the chain of MODEL VERSION came back as if the flag had narrowed it
        raise UsageError("--version is a feature view's version: give it with --feature-view")
    lineage = client.lineage(args.model, args.model_version)
    if args.json:
        output.print_json(output.to_jsonable(lineage), out)
        return 0
    print("\n".join(render_tree(lineage_tree(lineage))), file=out)
    return 0
