"""``aetherctl audit``: list, verify and export the control plane's tamper-evident audit log.

    aetherctl audit list [--object TYPE/ID | --object TYPE] [--since WHEN] [--until WHEN]
                         [--outcome ok|refused] [--limit N] [--json]
    aetherctl audit verify          # exit 1 when the chain is broken, naming the first bad entry
    aetherctl audit export FILE.jsonl [--object ...] [--since WHEN] [--until WHEN] [--outcome ok|refused]

``--object TYPE/ID`` also selects the ids under ID (``ID:...``, ``ID/...``, ``ID@...``): a view's
ingestion entries (``zone_weather:v1``), a model's versions (``demand/1``), a model's aliases
(``model_alias/demand``: ``demand@champion``).

``list`` shows the oldest matching entries first, at most ``--limit`` (100); when more match, a line on
stderr says so (stdout stays the entries).

The OUTCOME column says "ok" for a change carried out and "refused: <status>: <why>" for a model
operation that was refused (nothing changed).

WHEN is an ISO 8601 time (``2026-11-24``, ``2026-11-24T10:00:00Z``; UTC unless it names an offset) or
a duration before now (``30m``, ``2h``, ``7d``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clients.aether.v1 import audit_pb2 as pb
from control_plane.cli import numbers, output, paging
from control_plane.cli.durations import time_us
from control_plane.cli.errors import UsageError
from control_plane.cli.paths import check_writable

if TYPE_CHECKING:  # the SDK (and grpc) are imported when a command runs, not to build the parser
    from clients.sdk.audit import AuditClient


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="list, verify and export the audit log")
    actions = audit.add_subparsers(dest="audit_action", required=True, metavar="ACTION")

    # After the action too, as every other command that calls the control plane takes them (only the
    # global flags before `audit` reached it: `audit verify --control-plane H:P` was a usage error).
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    connection.add_argument(
        "--timeout", type=numbers.positive_seconds, default=argparse.SUPPRESS, help="seconds per call"
    )

    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument(
        "--object",
        metavar="TYPE[/ID]",
        help="only entries about this object (or type); an ID also selects the ids under it, ID:..., ID/... "
        "and ID@... (feature_view/zone_weather: zone_weather:v1 too; model_version/demand: demand/1, "
        "demand/2; model_alias/demand: demand@champion)",
    )
    selection.add_argument("--since", metavar="WHEN", help="from this time on (ISO 8601, or e.g. 2h ago: 2h)")
    selection.add_argument("--until", metavar="WHEN", help="before this time (ISO 8601, or a duration ago)")
    selection.add_argument(
        "--outcome", choices=OUTCOMES, help="only operations carried out (ok) or only refused ones (refused)"
    )

    listing = actions.add_parser("list", parents=[connection, selection], help="print entries, oldest first")
    listing.add_argument(
        "--limit", type=numbers.limit, default=100, help="at most this many entries (default: 100)"
    )
    listing.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    listing.set_defaults(handler=_list)

    verify = actions.add_parser(
        "verify", parents=[connection], help="check the hash chain; exit 1 if any entry was tampered with"
    )
    verify.set_defaults(handler=_verify)

    export = actions.add_parser(
        "export", parents=[connection, selection], help="write entries to a JSON lines file"
    )
    export.add_argument("file", type=Path, metavar="FILE.jsonl")
    export.set_defaults(handler=_export)


OUTCOMES = ("ok", "refused")


def selection_of(args: argparse.Namespace) -> pb.AuditFilter:
    from clients.sdk.audit import audit_filter

    object_type, object_id = None, None
    if args.object:
        object_type, _, object_id = args.object.partition("/")
        if not object_type:
            raise UsageError(f"invalid --object {args.object!r}: expected TYPE or TYPE/ID")
    since = time_us(args.since, "--since") if args.since else None
    until = time_us(args.until, "--until") if args.until else None
    if since is not None and until is not None and until < since:  # said in the flags' own terms
        raise UsageError(
            f"--until {args.until} is before --since {args.since} (a duration counts back from now)"
        )
    return audit_filter(
        object_type,
        object_id or None,
        since,
        until,
        None if args.outcome is None else args.outcome == "refused",
    )


def _client(args: argparse.Namespace) -> AuditClient:
    from clients.sdk.audit import AuditClient

    return AuditClient(args.control_plane, timeout=args.timeout)


def _list(args: argparse.Namespace) -> int:
    try:
        where = selection_of(args)
    except UsageError as error:
        print(f"aetherctl: error: {error}", file=sys.stderr)
        return 2
    with _client(args) as client:

        def fetch(size: int, token: str) -> tuple[Sequence[pb.AuditEntry], str]:
            page = client.query(where, page_size=size, page_token=token)
            return page.entries, page.next_page_token

        entries, more = paging.up_to(args.limit, fetch)
    _print_entries(entries, args.json)
    if more:  # last, below the entries
        paging.say_more(
            f"more entries match: these are the oldest {len(entries)} (--limit); raise --limit, or narrow"
            " the selection with --since, --until or --object"
        )
    return 0


def _print_entries(entries: list[pb.AuditEntry], as_json: bool) -> None:
    from clients.sdk.audit import entry_line

    if as_json:
        for entry in entries:
            print(entry_line(entry))
        return
    rows = [
        (
            entry.seq,
            output.timestamp(entry.timestamp_us),
            entry.actor,
            entry.action,
            f"{entry.object_type}/{entry.object_id}",
            entry.outcome or "ok",
        )
        for entry in entries
    ]
    print(output.table(("SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "OUTCOME"), rows))
    for entry in entries:
        if entry.damaged:
            print(f"aetherctl: entry {entry.seq} is damaged: {entry.damaged}", file=sys.stderr)


def _verify(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.verify()
    if result.ok:
        print(
            f"audit log intact: {result.entries_checked} entries, head {result.head_seq} {result.head_hash}"
        )
        return 0
    print(
        f"audit log TAMPERED at entry {result.first_bad_seq}: {result.reason}"
        f" ({result.entries_checked} entries before it are intact)",
        file=sys.stderr,
    )
    return 1


def _export(args: argparse.Namespace) -> int:
    try:
        where = selection_of(args)
    except UsageError as error:
        print(f"aetherctl: error: {error}", file=sys.stderr)
        return 2
    check_writable(args.file, "cannot write the export")  # before the server streams the whole log
    with _client(args) as client:
        count = client.export_jsonl(args.file, where)
    print(f"exported {count} entries to {args.file}")
    return 0
