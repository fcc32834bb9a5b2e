"""``aetherctl offline``: maintenance of the offline store, through the control plane.

    aetherctl offline compact --view clicks [--version 2] [--dry-run]

``compact`` runs one compaction pass over the view's offline files (every version with data unless
``--version``): in each date partition whose day has ended, the control plane merges its many small
files (a streaming view writes one a second) into few, and deletes the files it merged at least the
grace period ago (the thresholds are the control plane's ``AETHER_OFFLINE_COMPACT_*`` settings; it also
runs a pass by itself every ``AETHER_OFFLINE_COMPACT_INTERVAL_S``). Prints each merged file with its
partition, the number of files in, and its rows; ``--dry-run`` prints what would be done.

A partition with a file that does not decode (damaged bytes) is left as it was while the rest is
compacted: the command lists each such partition with the error naming its file, says on stderr what to
do, and exits 1 so a script notices: the rest is done, but those partitions wait on a person.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from control_plane.cli import output
from control_plane.cli.numbers import positive_seconds

if TYPE_CHECKING:  # an annotation only: the parser is built without the stubs
    from clients.aether.v1 import offline_features_pb2 as pb

DEFAULT_DEADLINE_S = 600.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    offline = subparsers.add_parser("offline", help="offline store maintenance (compaction)")
    actions = offline.add_subparsers(dest="action", required=True, metavar="ACTION")
    compact = actions.add_parser(
        "compact",
        help="merge a view's small offline files",
        description="Merge the small files of a view's ended date partitions into few, and delete those"
        " merged long enough ago (one pass; the control plane also runs them by itself).",
    )
    compact.add_argument("--view", required=True, help="feature view name")
    compact.add_argument(
        "--version", type=_version, default=0, help="one version (default: every version with data)"
    )
    compact.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    compact.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    compact.add_argument(
        "--deadline",
        type=positive_seconds,
        default=DEFAULT_DEADLINE_S,
        help="seconds the pass may take (default: %(default)s; a day of a busy stream is ~86,400 files)",
    )
    compact.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    compact.set_defaults(handler=run)


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a version is 1 or more, got {value}")
    return value


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from clients.sdk.offline import OfflineFeaturesClient  # when the command runs: pyarrow, grpc

    stream = out or sys.stdout
    with OfflineFeaturesClient(args.control_plane, timeout=args.deadline) as client:
        report = client.compact(args.view, args.version, dry_run=args.dry_run)
    if args.json:
        output.print_json(output.to_jsonable(report), stream)
        return _damaged(report.damaged_partitions)
    rows = [(f"v{run.version}", run.date, len(run.files_in), run.file_out, run.rows) for run in report.merged]
    if rows:
        stream.write(output.table(("VERSION", "DATE", "FILES IN", "FILE OUT", "ROWS"), rows) + "\n")
    verb = "would merge" if args.dry_run else "merged"
    files_in = sum(len(run.files_in) for run in report.merged)
    stream.write(f"{verb} {files_in} file(s) into {len(report.merged)}\n")
    stream.write(f"{'would delete' if args.dry_run else 'deleted'} {report.deleted_files} replaced file(s)\n")
    for partition in report.busy_partitions:
        stream.write(f"skipped {partition}: another compaction holds it\n")
    if report.damaged_partitions:
        damaged = [(f"v{p.version}", p.date, p.error) for p in report.damaged_partitions]
        stream.write("\n" + output.table(("VERSION", "DATE", "LEFT AS IT WAS: A FILE NOT DECODING"), damaged))
        stream.write("\n")
    return _damaged(report.damaged_partitions)


def _damaged(partitions: Sequence[pb.DamagedPartition]) -> int:
    """The exit status: 1 when partitions were left for damaged files, with the operator's action on
    stderr (stdout stays the report, JSON included). Waiting never mends damaged bytes, so every later
    pass would leave them too: a script must notice, though the call itself succeeded."""
    if not partitions:
        return 0
    print(
        f"warning: {len(partitions)} partition(s) left as they were, a file in each not decoding: move the"
        " damaged file aside or restore it from a backup, and the next pass compacts its partition",
        file=sys.stderr,
    )
    return 1
