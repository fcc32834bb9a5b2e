"""``aetherctl historical``: build a point-in-time training set on the control plane.

    aetherctl historical --entities rows.parquet --features driver_stats:trips,driver_stats@2 \
        --out train.parquet

Reads the entity rows (join keys + a timezone-aware timestamp column) from a local Parquet file, sends
them to the control plane, writes the training set to ``--out`` (atomically) and prints the row count,
the fraction of rows that got a value per feature, and the dataset hash recorded for lineage (with the
read-only token the set is not recorded, and a ``lineage: not recorded`` line says so).

``--out`` is checked before the control plane builds anything. Should writing still fail (a full disk),
the summary is printed all the same, with the error after it: the set was built and recorded.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import TYPE_CHECKING, TextIO

from control_plane.cli import numbers, output
from control_plane.cli.errors import FileProblem
from control_plane.cli.paths import check_writable

if TYPE_CHECKING:
    from clients.sdk.offline import HistoricalFeatures

DEFAULT_DEADLINE_S = 600.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "historical", help="build a point-in-time training set from the offline store"
    )
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options, separate from :func:`register` so the same command can hang under another name."""
    parser.add_argument(
        "--entities", required=True, metavar="ROWS.parquet", help="entity rows (local Parquet)"
    )
    parser.add_argument(
        "--features",
        required=True,
        metavar="REFS",
        help="comma-separated references: view:feature, view@2:feature, view, view@2",
    )
    parser.add_argument("--out", metavar="TRAIN.parquet", help="where to write the training set (local)")
    # After the command too, as every command that calls the control plane takes it; its time limit is
    # --deadline (the whole build), not the global per-call --timeout.
    parser.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    parser.add_argument("--timestamp-column", default="", help="label time column (default: detected)")
    parser.add_argument(
        "--deadline",
        type=numbers.positive_seconds,
        default=DEFAULT_DEADLINE_S,
        help="seconds the whole build may take (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    # Imported here, not to build the parser: pyarrow, and grpc under the SDK and its errors.
    import pyarrow.parquet as pq

    from clients.errors import InvalidArgument
    from clients.sdk.offline import OfflineFeaturesClient
    from control_plane.offline.datasets import write_parquet

    stream = out or sys.stdout
    refs = [ref.strip() for ref in args.features.split(",") if ref.strip()]
    if not refs:
        raise InvalidArgument("--features needs at least one reference")
    try:
        entity_rows = pq.read_table(args.entities)
    except FileNotFoundError:
        # pyarrow's error holds only the path, so the message read "cannot read ...: x.parquet: x.parquet".
        raise FileProblem("cannot read --entities", args.entities, os.strerror(errno.ENOENT)) from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read entity rows from {args.entities!r}: {exc}") from None
    if args.out:
        check_writable(args.out, "cannot write --out")
    with OfflineFeaturesClient(args.control_plane, timeout=args.deadline) as client:
        result = client.historical_features(entity_rows, refs, timestamp_column=args.timestamp_column)
    try:
        written = write_parquet(result.table, args.out) if args.out else None
    except OSError as exc:
        _report(result, None, args.json, stream)
        reason = (
            f"{exc.strerror or exc} (the training set was built and recorded as dataset"
            f" {result.dataset_hash}, summary above; run again with another --out to save it)"
        )
        raise FileProblem("cannot write --out", args.out, reason) from None
    _report(result, written, args.json, stream)
    return 0


def _report(result: HistoricalFeatures, written: str | None, as_json: bool, out: TextIO) -> None:
    fractions = {column: result.matched_fraction(column) for column in result.matched}
    if as_json:
        output.print_json(
            {
                "rows": result.row_count,
                "dataset_hash": result.dataset_hash,
                "matched_fraction": fractions,
                "out": written,
                "lineage_recorded": result.lineage_recorded,
            },
            out,
        )
        return
    out.write(output.table(("FEATURE", "MATCHED"), [(c, f"{f:.1%}") for c, f in fractions.items()]) + "\n")
    out.write(f"rows: {result.row_count}\n")
    if written:
        out.write(f"written: {written}\n")
    out.write(f"dataset hash: {result.dataset_hash}\n")
    if not result.lineage_recorded:
        out.write(
            "lineage: not recorded (this token may not write; build it with one that may to record it)\n"
        )
