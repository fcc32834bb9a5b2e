"""``aetherctl quarantine``, ``aetherctl materialize`` and ``aetherctl materializer run``.

    aetherctl quarantine list [--view V[@VERSION]] [--reason-contains X]
                              [--status quarantined|replaying|online_pending|replayed|discarded|
                                        superseded|all]
    aetherctl quarantine show ID
    aetherctl quarantine replay ID... [--file corrected.jsonl]
    aetherctl quarantine discard ID... [--yes]   (asks [y/N] at a terminal; a script passes --yes)
    aetherctl materialize VIEW --start 2024-01-01 --end 2024-01-02 [--source FILE.parquet]
    aetherctl materializer run --view V [...]   (the stream materializer, in this process)

``--file`` holds one JSON object per line: ``{"id": 12, "payload": {...}}``, or bare payload objects
taken in the order of the IDs. ``--start``/``--end`` are ISO 8601; a time without a zone is UTC.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from clients.aether.v1 import ingestion_pb2 as pb
from control_plane.cli import output, paging
from control_plane.cli.confirm import add_yes_flag, confirmed
from control_plane.cli.durations import iso_time
from control_plane.cli.errors import UsageError
from control_plane.cli.numbers import limit, positive_seconds, uint32, uint64
from control_plane.cli.paths import read_text_input
from control_plane.cli.settings import actor
from control_plane.cli.timeouts import TimeoutFlag, given_timeout
from control_plane.ingestion.streaming.flags import SETTINGS_EPILOG as MATERIALIZER_SETTINGS
from control_plane.ingestion.streaming.flags import add_arguments as add_materializer_arguments

# Imported when a command runs, not to build the parser: the SDK and its errors import grpc, and pyarrow
# takes a tenth of a second of its own.
if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from clients.errors import InvalidArgument
    from clients.sdk.ingestion import IngestionClient


#: ``quarantine list --status``: the statuses a record has (``control_plane.ingestion.quarantine.STATUSES``,
#: whose module imports SQLAlchemy, too slow for a start: a unit test keeps the two equal) and ``all``.
#: Checked here: a misspelt status was sent and refused by the control plane, exit 1, not a usage error.
QUARANTINE_STATUSES = (
    "quarantined",
    "replaying",
    "online_pending",
    "replayed",
    "discarded",
    "superseded",
    "all",
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    # After the command too, as every other group takes them (``aetherctl --control-plane X quarantine``
    # works as well; these override it).
    common.add_argument(
        "--control-plane", metavar="HOST:PORT", default=argparse.SUPPRESS, help="control plane address"
    )
    # Without one, a call waits the ingestion client's own default (300 s): a materialize or a replay of
    # a large batch runs for minutes, past the global default. A given value, however small, is used:
    # it was raised to 300 s without a word.
    common.add_argument(
        "--timeout",
        type=positive_seconds,
        action=TimeoutFlag,
        default=argparse.SUPPRESS,
        help="seconds per call (default: 300, as a materialize or replay of a large batch takes minutes)",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")

    quarantine = commands.add_parser("quarantine", help="records rejected by validation: inspect, replay")
    actions = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="quarantined records, newest first")
    listing.add_argument(
        "--view",
        default="",
        metavar="VIEW[@VERSION]",
        help="one view (every version), or one version as the VIEW column shows it: zone_weather@1",
    )
    listing.add_argument("--reason-contains", default="", metavar="TEXT")
    listing.add_argument(
        "--status",
        default="",
        choices=QUARANTINE_STATUSES,
        metavar="STATUS",
        help="quarantined (default), replaying, online_pending, replayed, discarded, superseded or all",
    )
    listing.add_argument(
        "--limit", type=limit, default=100, help="at most this many records (default %(default)s)"
    )
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", parents=[common], help="one record with its payload and reasons")
    show.add_argument("id", type=uint64)
    show.set_defaults(handler=_show)
    replay = actions.add_parser("replay", parents=[common], help="re-validate and ingest what now passes")
    replay.add_argument("ids", type=uint64, nargs="+", metavar="ID")
    replay.add_argument("--file", metavar="corrected.jsonl", help="corrected payloads, one JSON per line")
    replay.set_defaults(handler=_replay)
    discard = actions.add_parser(
        "discard",
        parents=[common],
        help="give records up for good (an online_pending one's stored row stays)",
        description="Gives quarantined records up for good (an online_pending one's stored row stays)."
        " Asks for confirmation at a terminal; without one (a script), --yes is required.",
    )
    discard.add_argument("ids", type=uint64, nargs="+", metavar="ID")
    add_yes_flag(discard)
    discard.set_defaults(handler=_discard)

    materialize = commands.add_parser(
        "materialize", parents=[common], help="validate a batch source into the offline and online stores"
    )
    materialize.add_argument("view")
    materialize.add_argument("--start", required=True, help="first event time included (ISO 8601)")
    materialize.add_argument("--end", required=True, help="first event time excluded (ISO 8601)")
    materialize.add_argument(
        "--source", metavar="FILE.parquet", help="local file (default: the view's source)"
    )
    materialize.add_argument("--version", type=uint32, default=0, help="view version (default: latest)")
    materialize.add_argument("--strict", action="store_true", help="refuse the batch on the first bad record")
    materialize.set_defaults(handler=_materialize)

    materializer = commands.add_parser("materializer", help="the stream materializer")
    materializer_actions = materializer.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = materializer_actions.add_parser(
        "run",
        help="run it in this process until SIGTERM/SIGINT (flags: --help)",
        epilog=MATERIALIZER_SETTINGS,
    )
    add_materializer_arguments(run)
    run.set_defaults(handler=_run_materializer)


def _client(args: argparse.Namespace) -> IngestionClient:
    from clients.sdk.ingestion import IngestionClient

    # None: the client's own default (IngestionClient.DEFAULT_TIMEOUT_S).
    return IngestionClient(args.control_plane, actor=actor(), timeout=given_timeout(args))


def _records(records: list[pb.QuarantinedRecord], as_json: bool, out: TextIO) -> None:
    if as_json:
        output.print_json([output.to_jsonable(r) for r in records], out)
        return
    rows = [
        (r.id, f"{r.view}@{r.version}", r.source_kind, r.record_key, r.status,
         output.timestamp(r.created_at_us), r.reason)
        for r in records
    ]  # fmt: skip
    print(output.table(["ID", "VIEW", "SOURCE", "RECORD", "STATUS", "CREATED", "REASON"], rows), file=out)


def _list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    with _client(args) as client:

        def fetch(size: int, token: str) -> tuple[list[pb.QuarantinedRecord], str]:
            return client.quarantined_page(
                view=args.view,
                reason_contains=args.reason_contains,
                status=args.status,
                limit=size,
                page_token=token,
            )

        records, more = paging.up_to(args.limit, fetch)
        if args.view and not records:
            _refuse_an_unknown_view(args, client)
    _records(records, args.json, out or sys.stdout)
    if more:
        paging.say_more(
            f"more quarantined records match: these are the newest {len(records)} (--limit); raise --limit"
            " for older ones, or narrow the selection with --view, --status or --reason-contains"
        )
    return 0


def _refuse_an_unknown_view(args: argparse.Namespace, client: IngestionClient) -> None:
    """NotFound when ``--view`` names neither a registered view (version) nor any quarantined record: a
    misspelt name printed an empty table, as if that view had no bad records."""
    from clients.errors import InvalidArgument, NotFound
    from clients.feature_refs import parse_ref
    from clients.sdk.registry import FeatureRegistryClient

    try:
        ref = parse_ref(args.view)
    except InvalidArgument:  # no reference a registry holds (a space, a ':')
        ref = None
    if ref is not None and ref.feature is None:
        with FeatureRegistryClient(args.control_plane, actor=actor(), timeout=args.timeout) as registry:
            try:
                registry.get_feature_view(ref.view, ref.version or 0)
                return
            except NotFound:
                pass
    # A view deleted since keeps its records: whatever status they have now, the name is known.
    if client.list_quarantined(view=args.view, status="all", limit=1):
        return
    raise NotFound(f"feature view {args.view!r} not found, and no quarantined record names it")


def _show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    with _client(args) as client:
        record = client.get_quarantined(args.id)
    if args.json:
        output.print_json(output.to_jsonable(record), stream)
        return 0
    print(f"id:      {record.id}\nview:    {record.view}@{record.version}", file=stream)
    print(f"source:  {record.source_kind} {record.source_id} (record {record.record_key})", file=stream)
    print(f"status:  {record.status}\ncreated: {output.timestamp(record.created_at_us)}", file=stream)
    print("reasons:", *[f"  - {r}" for r in record.reason.split("; ")], sep="\n", file=stream)
    print(f"payload: {record.payload_json}", file=stream)
    return 0


def corrected_payloads(path: str, ids: list[int]) -> dict[int, str]:
    from clients.errors import InvalidArgument

    corrected: dict[int, str] = {}
    entries = [line for line in read_text_input(path, "corrections").split("\n") if line.strip()]
    for index, line in enumerate(entries):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{path}:{index + 1}: not JSON: {exc}") from None
        if isinstance(item, dict) and set(item) == {"id", "payload"}:
            record_id = item["id"]
            # bool is an int to Python; a quarantine id is a whole number in a uint64 field.
            if type(record_id) is not int or not 0 <= record_id < 2**63:
                raise InvalidArgument(f"{path}:{index + 1}: id {record_id!r} is not a quarantine record id")
            corrected[record_id] = json.dumps(item["payload"])
        elif isinstance(item, dict) and index < len(ids):
            corrected[ids[index]] = json.dumps(item)
        else:
            raise InvalidArgument(
                f'{path}:{index + 1}: expected {{"id": N, "payload": {{...}}}} or a payload'
            )
    return corrected


def _replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    corrected = corrected_payloads(args.file, args.ids) if args.file else {}
    with _client(args) as client:
        response = client.replay(args.ids, corrected)
    if args.json:
        output.print_json(output.to_jsonable(response), stream)
        return 0
    print(f"replayed: {len(response.replayed)} {list(response.replayed)}", file=stream)
    print(f"still quarantined: {len(response.still_quarantined)}", file=stream)
    if response.still_quarantined:
        _records(list(response.still_quarantined), False, stream)
    return 0


def _discard(args: argparse.Namespace, out: TextIO | None = None) -> int:
    if not confirmed(f"discard {_naming(args.ids)}", yes=args.yes, details=" for good"):
        return 1
    with _client(args) as client:
        count = client.discard(args.ids)
    if args.json:
        output.print_json({"discarded": count}, out or sys.stdout)
        return 0
    print(f"discarded: {count}", file=out or sys.stdout)
    return 0


def _naming(ids: list[int]) -> str:
    """The records a question names, short whatever the number of IDs: ``quarantined record 7``,
    ``quarantined records 7, 8``, ``12 quarantined records (7, 8, 9, ...)``."""
    if len(ids) == 1:
        return f"quarantined record {ids[0]}"
    if len(ids) <= 5:
        return f"quarantined records {', '.join(map(str, ids))}"
    return f"{len(ids)} quarantined records ({', '.join(map(str, ids[:3]))}, ...)"


def _open_source(path: str) -> pq.ParquetFile:
    """The ``--source`` file, opened before the stream starts: raised inside the stream, the reason would
    reach the user only as gRPC's "Exception iterating requests!"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise _unreadable(path, exc) from None


def _ipc_chunks(parquet: pq.ParquetFile, path: str) -> Iterator[bytes]:
    import pyarrow as pa

    batches = parquet.iter_batches(batch_size=50_000)
    while True:
        try:  # a file whose footer reads can still hold a corrupt row group
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowInvalid) as exc:
            raise _unreadable(path, exc) from None
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        yield sink.getvalue().to_pybytes()


def _unreadable(path: str, exc: Exception) -> InvalidArgument:
    from clients.errors import InvalidArgument

    reason = " ".join(str(exc).split())  # pyarrow's reasons may span lines; the error is one
    return InvalidArgument(f"cannot read {path!r}: {reason}")


def _materialize(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from clients.sdk.ingestion import header

    stream = out or sys.stdout
    # Usage errors naming the flag (exit 2), as every other time flag's: they were INVALID_ARGUMENT.
    start, end = iso_time(args.start, "--start"), iso_time(args.end, "--end")
    if end <= start:
        raise UsageError(f"--end {args.end} is not after --start {args.start}: the window holds no time")
    with _client(args) as client:
        if args.source:
            head = header(args.view, args.version, start, end, args.strict, args.source)
            with _open_source(args.source) as parquet:
                response = client.ingest_ipc(head, _ipc_chunks(parquet, args.source))
        else:
            response = client.materialize(
                args.view, version=args.version, start=start, end=end, strict=args.strict
            )
    if args.json:
        output.print_json(output.to_jsonable(response), stream)
        return 0
    rows = [(response.records_in, response.accepted, response.quarantined, response.skipped_outside_window,
             response.online_rows, len(response.offline_paths), response.run_id)]  # fmt: skip
    headers = ["IN", "ACCEPTED", "QUARANTINED", "OUTSIDE WINDOW", "ONLINE ROWS", "OFFLINE FILES", "RUN"]
    print(output.table(headers, rows), file=stream)
    return 0


def _run_materializer(args: argparse.Namespace) -> int:
    from control_plane.ingestion.streaming.__main__ import run  # the materializer's imports, only here

    return run(args)
