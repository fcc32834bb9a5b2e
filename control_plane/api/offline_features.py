"""The ``aether.v1.OfflineFeatures`` gRPC service: receives the entity rows (Arrow IPC pieces or a
Parquet path), builds the training set in a worker thread (the join is blocking CPU and file work) and
streams it back as Arrow IPC pieces, then a summary with the dataset hash; and compacts a view's
offline files on request (``aetherctl offline compact``) and in the background."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any, TypeAlias

import grpc.aio
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from clients.aether.v1 import offline_features_pb2 as pb
from clients.aether.v1 import offline_features_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument, ResourceExhausted, maps_errors
from clients.ipc_budget import IpcBudget
from clients.sdk.offline import CHUNK_BYTES, arrow_stream_pieces, read_arrow_stream
from clients.server_handlers import HandlerRegistry
from clients.uris import redact_text, redact_uri
from control_plane.api.context import ServiceContext
from control_plane.api.identity import JOB_RUN, records_lineage
from control_plane.ingestion import intents
from control_plane.ingestion.counted import reader_counts
from control_plane.offline.compaction import CompactionPolicy, CompactionReport, compact_view
from control_plane.offline.compaction_loop import CompactionLoop, skipped_advice, skipped_partitions
from control_plane.offline.datasets import sweep_stale_copies
from control_plane.offline.historical import TrainingSet, get_historical_features
from control_plane.offline.partition_locks import DatabaseLocks, PartitionLock
from control_plane.offline.resolve import ViewCatalog
from control_plane.offline.roots import open_filesystem
from control_plane.offline.server_paths import confined, datasets_root
from control_plane.offline.store import OfflineStore
from control_plane.offline.uploads import sweep_stale_upload_temps
from control_plane.tracking.store import TrackingStore

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
_log = logging.getLogger("aether.offline")
OFFLINE_FEATURES_SERVICE: str = pb.DESCRIPTOR.services_by_name["OfflineFeatures"].full_name
#: Entity rows larger than this are refused: send a Parquet path the server can read instead. The
#: bound holds for the bytes sent and for what they decode into (compressed Arrow IPC buffers included).
MAX_ENTITY_ROWS_BYTES = 1 << 30
#: Entity rows sent as Arrow IPC with more rows than this are refused, before they are decoded: as many
#: as the byte bound holds of a plain row (an int64 key and a timestamp), where a column with no bytes
#: (null-typed, run-end encoded) could otherwise declare any number.
MAX_ENTITY_ROWS = MAX_ENTITY_ROWS_BYTES // 16


class OfflineFeaturesServicer(pb_grpc.OfflineFeaturesServicer):
    def __init__(
        self,
        store: OfflineStore,
        catalog: ViewCatalog,
        datasets_root: str,
        chunk_bytes: int = CHUNK_BYTES,
        compaction: CompactionPolicy | None = None,
        partition_locks: PartitionLock | None = None,
        runs: TrackingStore | None = None,
        pending: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """``runs``: where a job token's run is looked up (None: not looked up), see
        ``GetHistoricalFeatures``. ``pending``: the files of chunks not yet counted (open ingestion
        intents), which compaction never merges (``compact_view``)."""
        self._store = store
        self._runs = runs
        self._pending = pending
        self._catalog = catalog
        self._compaction = compaction or CompactionPolicy()
        self._partition_locks = partition_locks
        #: entity_rows_path and output_path must lie under it (control_plane.offline.server_paths).
        self._datasets_root = datasets_root
        self._chunk_bytes = chunk_bytes

    @maps_errors
    async def GetHistoricalFeatures(
        self, requests: AsyncIterator[pb.GetHistoricalFeaturesRequest], context: Context
    ) -> AsyncIterator[pb.GetHistoricalFeaturesResponse]:
        head: pb.GetHistoricalFeaturesRequest | None = None
        pieces: list[bytes] = []
        received = 0
        async for request in requests:
            head = head or request
            if request.entity_rows_arrow:
                received += len(request.entity_rows_arrow)
                if received > MAX_ENTITY_ROWS_BYTES:
                    raise ResourceExhausted(
                        f"entity rows exceed {MAX_ENTITY_ROWS_BYTES} bytes; pass a Parquet path instead"
                    )
                pieces.append(request.entity_rows_arrow)
        if head is None:
            raise InvalidArgument("empty request: send the feature references and entity rows")
        if head.summary_only and not head.output_path:
            # Before the join: the set would be built, neither sent back nor written, and lost (recorded
            # for lineage with no copy, so it could never be read back by its hash either).
            raise InvalidArgument(
                "summary_only leaves the training set on the server, so it needs an output_path to write it"
                " to; without one the set would be built and lost"
            )
        # A read-only caller may build training sets but must leave nothing behind: its sets are not
        # recorded (one lineage file per distinct call, unaudited and unbounded), and the reply says so. A
        # job's own token records them: the set is what the job's model version names. Read here, in
        # the call's own context, and handed to the worker thread.
        record = records_lineage()
        job_run = JOB_RUN.get()
        if record and job_run is not None and self._runs is not None:
            # A job token whose run has ended writes nothing (control_plane.api.job_tokens): its sets are
            # still built, as the read-only token's are, and not recorded. One indexed read, job calls only.
            record = not await asyncio.to_thread(self._runs.has_ended, job_run)
        training = await asyncio.to_thread(self._build, head, pieces, record)
        if not head.summary_only:
            for piece in arrow_stream_pieces(training.table, self._chunk_bytes):
                yield pb.GetHistoricalFeaturesResponse(arrow_chunk=piece)
        yield pb.GetHistoricalFeaturesResponse(
            dataset_hash=training.dataset_hash,
            row_count=training.row_count,
            matched=[pb.MatchedCount(column=name, rows=rows) for name, rows in training.matched.items()],
            output_path=training.output_path or "",
            lineage_recorded=record,
        )

    @maps_errors
    async def CompactOfflineFiles(
        self, request: pb.CompactOfflineFilesRequest, context: Context
    ) -> pb.CompactOfflineFilesResponse:
        if not request.view:
            raise InvalidArgument("name the feature view whose offline files to compact")
        report = await asyncio.to_thread(self._compact, request)
        if report.merged or report.deleted:
            _log.info(
                "%s feature view %r: %d file(s) merged into %d, %d replaced file(s) deleted",
                "dry run of compacting" if request.dry_run else "compacted", request.view,
                sum(len(run.files_in) for run in report.merged), len(report.merged), report.deleted,
            )  # fmt: skip
        if report.skipped:
            # The call answers OK with them in damaged_partitions, since it did the rest of its work; the
            # log still says what the operator must do, as the background pass's does.
            _log.warning(
                "%s feature view %r left %s",
                "dry run of compacting" if request.dry_run else "compacting", request.view,
                skipped_advice(skipped_partitions(request.view, report)),
            )  # fmt: skip
        return pb.CompactOfflineFilesResponse(
            merged=[
                pb.CompactedFiles(
                    version=run.version,
                    date=run.day.isoformat(),
                    files_in=list(run.files_in),
                    file_out=run.file_out,
                    rows=run.rows,
                )
                for run in report.merged
            ],
            deleted_files=report.deleted,
            busy_partitions=[f"v{version}/date={day.isoformat()}" for version, day in report.busy],
            damaged_partitions=[
                pb.DamagedPartition(version=version, date=day.isoformat(), error=error)
                for version, day, error in report.skipped
            ],
        )

    def _compact(self, request: pb.CompactOfflineFilesRequest) -> CompactionReport:
        """A compaction pass over the files of ``request.view``. Without files the registry decides: an
        unknown view (or version) is its NOT_FOUND, a registered one has nothing to merge (the files
        alone decided before, so a typo and a view with no data yet were the same "no offline data").
        Files decide before the registry: a deleted view's offline data stays, and compacts."""
        versions = self._store.versions(request.view)
        has_files = request.version in versions if request.version else bool(versions)
        if not has_files:
            self._catalog.get_feature_view(request.view, request.version)
            return CompactionReport()
        return compact_view(
            self._store,
            request.view,
            request.version or None,
            self._compaction,
            dry_run=request.dry_run,
            locks=self._partition_locks,
            pending=self._pending,
        )

    def _build(self, head: pb.GetHistoricalFeaturesRequest, pieces: list[bytes], record: bool) -> TrainingSet:
        # Both paths are checked before anything is read or joined.
        output_path = (
            confined(head.output_path, self._datasets_root, "output_path") if head.output_path else None
        )
        rows_path = (
            confined(head.entity_rows_path, self._datasets_root, "entity_rows_path")
            if head.entity_rows_path
            else ""
        )
        entity_rows = _entity_rows(rows_path, pieces)
        return get_historical_features(
            self._store,
            self._catalog,
            entity_rows,
            list(head.features),
            timestamp_column=head.timestamp_column or None,
            output_path=output_path,
            record=record,
        )


def _entity_rows(rows_path: str, pieces: list[bytes]) -> pa.Table:
    if rows_path and pieces:
        raise InvalidArgument("send entity rows either as Arrow pieces or as a Parquet path, not both")
    if rows_path:
        filesystem, path = open_filesystem(rows_path)
        where = rows_path
        # One Parquet file, as the API says and as Submit and the retraining check already require. A
        # directory was read as a dataset of every file under it, following symbolic links in it that
        # lead out of the datasets root: confined() checks the path given, not what lies below it.
        try:
            if filesystem.get_file_info(path).type == FileType.Directory:
                raise InvalidArgument(
                    f"cannot read entity rows from {redact_uri(where)!r}: it is a directory; give a Parquet"
                    " file"
                )
            # Opened as a file, so a directory put there since the check is refused, not walked.
            with filesystem.open_input_file(path) as source:
                return pq.read_table(source)
        except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
            raise InvalidArgument(
                f"cannot read entity rows from {redact_uri(where)!r}: {redact_text(str(exc), where)}"
            ) from None
    if not pieces:
        raise InvalidArgument("no entity rows: send entity_rows_arrow pieces or entity_rows_path")
    return read_arrow_stream(pieces, IpcBudget("entity rows", MAX_ENTITY_ROWS_BYTES, MAX_ENTITY_ROWS))


def offline_root(context: ServiceContext) -> str:
    """The settings' ``offline_root`` (``AETHER_OFFLINE_ROOT``) when set, else the ``offline`` folder in
    the control plane's home."""
    return context.settings.offline_root or str(context.settings.home / "offline")


def reader_store(context: ServiceContext) -> OfflineStore:
    """The offline store as the control plane reads feature rows for a caller or a run (training sets,
    a retraining's data window): the files of chunks not counted yet (open ingestion intents) are never
    read, and a view version whose folder is gone while ingestion counted rows into it is refused, not
    read as no data. One constructor for every such reader: the retraining window built its own store
    without the second check, and read a lost folder as a window with no rows."""
    return OfflineStore(
        offline_root(context),
        uncounted=intents.reader_filter(context.sessions),
        counted=reader_counts(context.sessions),
    )


def _sweep_store(store: OfflineStore) -> None:
    swept = store.sweep_stale_temps()
    if swept:
        _log.info("removed %d stale temporary file(s) from the offline store %s", swept, store.base_path)


def _sweep_datasets(datasets: str) -> None:
    swept = sweep_stale_copies(datasets)
    if swept:
        _log.info(
            "removed %d stale temporary training-set file(s) from the datasets root %s",
            swept,
            redact_uri(datasets),
        )


def _sweep_object_stores(store: OfflineStore | None, datasets: str | None) -> None:
    """The start's sweeps of an object-store offline root and datasets root (hidden staged objects,
    :mod:`control_plane.offline.uploads`): best effort, each failure logged."""
    if store is not None:
        try:
            _sweep_store(store)
        except Exception:
            _log.warning("could not sweep the offline store %s", redact_uri(str(store.root)), exc_info=True)
    if datasets is not None:
        try:
            _sweep_datasets(datasets)
        except Exception:
            _log.warning("could not sweep the datasets root %s", redact_uri(datasets), exc_info=True)


def datasets_root_of(context: ServiceContext) -> str:
    """The settings' ``datasets_root`` when they have one, else ``AETHER_DATASETS_ROOT``, else the
    ``datasets`` folder in the control plane's home (:mod:`control_plane.offline.server_paths`)."""
    return getattr(context.settings, "datasets_root", None) or datasets_root(context.settings.home)


def add_to_server(server: HandlerRegistry, context: ServiceContext) -> str:
    """Serves the offline store, after removing the temporary files that writers killed mid-write left
    in it (:meth:`OfflineStore.sweep_stale_temps`; a compaction's too), in the datasets root (a
    training set's ``output_path`` copy, :func:`sweep_stale_copies`) and in the local folder where
    uploads to an object store are written first (:func:`sweep_stale_upload_temps`), and compacts it in
    the background every ``offline_compact_interval_s`` (:mod:`control_plane.offline.compaction_loop`)."""
    store = reader_store(context)
    datasets = datasets_root_of(context)
    local_store, local_datasets = store.filesystem.type_name == "local", "://" not in datasets
    if local_store:
        _sweep_store(store)
    if local_datasets:
        _sweep_datasets(datasets)
    # Whatever the roots: a training set's copy to an object store is written here first too.
    swept = sweep_stale_upload_temps()
    if swept:
        _log.info(
            "removed %d stale local file(s) that uploads to an object store (a compaction pass's merged"
            " file, a training set's copy, a dataset record) left before their upload",
            swept,
        )
    if not (local_store and local_datasets):
        # An object store's sweep lists it: in the background, so a store out of reach or slow to answer
        # does not hold up (or stop) the start; what it could not remove waits for the next start.
        threading.Thread(
            target=_sweep_object_stores,
            args=(None if local_store else store, None if local_datasets else datasets),
            name="offline-sweep",
            daemon=True,
        ).start()
    policy = getattr(context.settings, "offline_compaction", None) or CompactionPolicy()
    # A local root's partitions are locked by files in their folders; an object store's by the database.
    locks = None if store.filesystem.type_name == "local" else DatabaseLocks(context.engine)
    # A file an open ingestion intent names may be removed by the intents' recovery (its rows were never
    # counted): merged, its rows would outlive it. A pass that cannot read the intents merges nothing.
    sessions = context.sessions

    def pending() -> frozenset[str]:
        return intents.open_paths(sessions)

    servicer = OfflineFeaturesServicer(
        store,
        context.registry,
        datasets,
        compaction=policy,
        partition_locks=locks,
        runs=TrackingStore(context.sessions),
        pending=pending,
    )
    pb_grpc.add_OfflineFeaturesServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    interval = float(getattr(context.settings, "offline_compact_interval_s", 0.0) or 0.0)
    if interval > 0:
        loop = CompactionLoop(store, policy, interval, locks, pending=pending)
        loop.start()
        context.on_close.append(loop.stop)
    return OFFLINE_FEATURES_SERVICE
