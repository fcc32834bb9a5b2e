"""Batch materialization: Arrow tables or a Parquet file -> validation -> quarantine, offline store
(every accepted row) and online store (the latest row per entity).

A run processes its input chunk by chunk (a Parquet file record batch by record batch), so memory stays
bounded by one chunk plus the latest row per entity. The null-fraction rule judges the whole call where
the call's tables are all in memory anyway (IngestBatch, ``one_batch``: the null fractions over all of
its tables' records inside the window, counted first), so how the SDK cut a table into transport pieces
(50,000 rows, ~2 MiB) changes nothing; judged per piece, a 60,000-row table with 1/6 nulls, all in its
last piece, had that piece's nulls quarantined. A Parquet source is read a chunk at a time and never
whole, so there the rule is per chunk (``PARQUET_BATCH_ROWS``, 65,536 rows): counting a whole file's
nulls first would read it twice, and its row groups' ``null_count`` statistics count no NaN, may be
absent, and ignore the window. Per
chunk the accepted rows are written to the offline store first, then the rejected rows and the run's
counters commit in one SQL transaction: the counters never claim rows that are not stored. When that
transaction fails, the chunk's files are removed unless it committed (``chunk_commit``: at once for a
failure before COMMIT; for one at COMMIT, once the run's counter read back says it did not commit);
left in place, readers saw rows no run counted. Before the write the run commits an intent naming the
chunk's files (``intents``; renewed while the run works, ``intent_lease``), which the chunk's transaction
deletes: a run killed between the write and the commit, or whose outcome cannot be read back while the
database stays down, leaves it, and the intent recovery (``intent_recovery``) removes those files once it
is older than the lease (``lease_s``); readers never read files an open intent names.

Each chunk's transaction also appends the run's audit entry for that chunk (the run's counters before and
after it), so every stored and counted chunk is audited even when the run dies before its end; one entry
per chunk (~150 for a 10-million-row file), not per record. A run that finishes appends one more entry,
``ingestion.<kind>.finished``, with its totals and the online rows it wrote: a run without one was cut off.

The online write comes after the last chunk's commit, so the run files its online part first
(write-ahead: ``online_pending.file_online_part``, one ``online_pending`` record naming the run's offline
files, held by the run), in the transaction of the first chunk that stores rows, and names each later
chunk's files in it in that chunk's own transaction: every stored and counted row is named by it. The run
renews its hold on it while it works, and files the files it stores after losing it (stalled past the
lease) in a record of its own (``online_hold``). The run
removes it once its online values are written, in the transaction of its ``finished`` entry, and hands it
to the next replay at once when the online store does not take them, or when a later chunk fails (a
source that cannot be read part-way: filed only with the last chunk, the earlier chunks' rows were left
stored and counted with no online value and no record). A run killed in between leaves it held by the
dead run, and a replay takes it over after the lease and writes the online values; before, such a run
left stored and counted rows with no online value and no record saying so, and ingesting them again
stored them twice.

Before each chunk's offline write and before the online write the run reads its view version's status
again (``version_gate``): one retired or deleted since the run started stops the run there
(``VersionGone``, FAILED_PRECONDITION), the chunks before it stored and counted, its online part removed
as a delete's fence leaves no online value; checked only at the start, a run retired part-way stored
every later row and wrote its online values into a version nothing serves. It reads it once more after
the online write and, found retired, removes what that write put online
(``run_online_write.require_open_after_write``). A control plane that stops stops the run at the same
boundary, before the chunk's write (``draining``).

A run that fails after it stored and counted accepted rows says how many and not to ingest them again,
with a status clients do not retry as it was (``part_way``): a plain UNAVAILABLE (the database down
part-way) was retried, and the retry stored those rows twice.

Rows whose timestamp parses but falls outside ``[start, end)`` are skipped (reported as
``skipped_outside_window``) and are not records of the run; rows whose timestamp cannot be placed
are validated, and so quarantined.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import InvalidArgument
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES
from control_plane.audit.log import record as audit
from control_plane.db import write_session
from control_plane.ingestion import intents
from control_plane.ingestion.casting import TIMESTAMP_TYPE, epoch_us
from control_plane.ingestion.chunk_commit import ChunkFiles, chunk_transaction
from control_plane.ingestion.claims import CLAIM_LEASE_S
from control_plane.ingestion.draining import UNWATCHED, Progress, RunWatch
from control_plane.ingestion.intent_lease import IntentLease
from control_plane.ingestion.online import latest_blobs, latest_per_entity, write_latest
from control_plane.ingestion.online_hold import RunHold
from control_plane.ingestion.part_way import stopped_part_way
from control_plane.ingestion.quarantine import RunSource, check_source_length, record_outcome, supersede
from control_plane.ingestion.run_online_write import (
    check_online,
    require_open,
    require_open_after_write,
    settle_online_part,
    write_run_online,
)
from control_plane.ingestion.run_outcome import (
    MaterializeOutcome,
    run_counters,
    stored_part_way,
    waiting_online,
)
from control_plane.ingestion.validation import (
    DEFAULT_MAX_FUTURE,
    null_fractions,
    timestamp_field,
    validate,
)
from control_plane.ingestion.version_gate import VersionGone
from control_plane.ingestion.window import OPEN_WINDOW, Window, in_window, source_row_numbers
from control_plane.offline.data_files import remove_data_files
from control_plane.offline.store import OfflineStore

_log = logging.getLogger("aether.ingestion.batch")


class BatchMaterializer:
    """Transport-free core of batch ingestion; one per process, safe to share between calls."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        offline: OfflineStore,
        client: redis.Redis,
        lease_s: float = CLAIM_LEASE_S,
        renew_every_s: float | None = None,
        max_key_bytes: int = DEFAULT_MAX_JOIN_KEY_BYTES,
    ) -> None:
        """``lease_s``: how long a replay leaves a run's online part, and a recovery a chunk's intent,
        alone unrenewed (the service's ``claim_lease_s``); the run renews both every ``renew_every_s``.
        ``max_key_bytes``: the longest string join key a run accepts (``key_length``)."""
        self.max_key_bytes = max_key_bytes
        self._sessions = sessions
        self._offline = offline
        self._client = client
        self._lease_s = lease_s
        self._renew_every_s = renew_every_s

    def materialize(
        self,
        view: pb.FeatureView,
        entity: pb.Entity,
        chunks: Iterable[pa.Table],
        *,
        window: Window = OPEN_WINDOW,
        source_id: str = "arrow",
        kind: str = "batch",
        strict: bool = False,
        now: datetime | None = None,
        actor: str = "",
        watch: RunWatch = UNWATCHED,
        one_batch: bool = False,
    ) -> MaterializeOutcome:
        """Materializes ``chunks`` into ``view`` as one run. With ``strict`` every chunk is validated
        first and the first bad record raises ``InvalidArgument`` before anything is written; so does a
        ``source_id`` longer than its column (``SOURCE_LENGTH``). ``watch`` stops it at a chunk boundary
        when the control plane stops (``draining``). With ``one_batch`` the chunks are one call's tables,
        all in memory (IngestBatch): the null-fraction rule judges each chunk by the fraction over all of
        their records inside the window, not by the chunk's own (see the module docstring)."""
        if view.spec.aggregations:
            raise InvalidArgument(
                f"view {view.spec.name!r} is computed from a stream by aggregations; publish its events to"
                f" the stream {view.spec.source.uri or '(its source)'} instead"
            )
        check_source_length(source_id, "source")
        if window.start is not None and window.end is not None and window.start > window.end:
            raise InvalidArgument(
                f"the window's start {window.start.isoformat()} is after its end {window.end.isoformat()}"
            )
        moment = now or datetime.now(UTC)
        run = RunSource(f"{kind}-{uuid.uuid4().hex}", view.spec.name, view.version, kind, source_id)
        outcome = MaterializeOutcome(run.run_id)
        ts_name = timestamp_field(view)
        fractions = None
        if one_batch:
            chunks = list(chunks)
            # A generator: each chunk's in-window copy is dropped once counted (a call holds up to 1 GiB).
            fractions = null_fractions(view, entity, (in_window(c, ts_name, window).rows for c in chunks))
        if strict:
            chunks = list(chunks)
            for chunk in chunks:
                rows = in_window(chunk, ts_name, window).rows
                validate(
                    view, entity, rows, now=moment, strict=True, null_fractions=fractions,
                    max_key_bytes=self.max_key_bytes,
                )  # fmt: skip
        check_online(self._client)
        hold = RunHold(self._sessions, run, self._lease_s, self._renew_every_s)  # its online part's
        try:
            outcome.online_rows = self._run_chunks(
                view, entity, chunks, window=window, source_id=source_id, kind=kind, moment=moment,
                actor=actor, run=run, outcome=outcome, hold=hold, watch=watch, fractions=fractions,
            )  # fmt: skip
        finally:
            hold.stop()
        return outcome

    def _run_chunks(
        self, view: pb.FeatureView, entity: pb.Entity, chunks: Iterable[pa.Table], *, window: Window,
        source_id: str, kind: str, moment: datetime, actor: str, run: RunSource, outcome: MaterializeOutcome,
        hold: RunHold, watch: RunWatch, fractions: Mapping[str, float] | None,
    ) -> int:  # fmt: skip
        """``materialize``'s chunks, online write and end; returns the online rows written. ``fractions``:
        the null fractions each chunk is judged by (None: each chunk's own)."""
        ts_name = timestamp_field(view)
        key_names = [key.name for key in entity.join_keys]
        latest: list[pa.Table] = []
        target = f"{view.spec.name}:v{view.version}"
        chunk_number = 0
        source_rows = 0  # rows of the source before this chunk, those outside the window included
        online_rows = 0
        files: ChunkFiles | None = None  # the current chunk's
        counting = (0, 0, 0)  # the current chunk's records in, accepted and quarantined
        named = None
        watch.publish(Progress(run.run_id))  # a stop that gives up on it names the run (draining)
        try:
            for chunk in chunks:
                watch.check(run.run_id)  # a stopping control plane stops it here (draining)
                require_open(self._sessions, view, outcome)  # before the chunk's offline write (version_gate)
                windowed = in_window(chunk, ts_name, window)
                inside = windowed.rows
                outcome.skipped_outside_window += windowed.skipped
                result = validate(
                    view, entity, inside, now=moment, max_future=DEFAULT_MAX_FUTURE, null_fractions=fractions,
                    max_key_bytes=self.max_key_bytes,
                )  # fmt: skip
                accepted = result.accepted
                files = ChunkFiles(run.run_id, outcome.accepted, accepted.num_rows, [])
                if accepted.num_rows:
                    stamped = stamp_ingested(accepted)  # the same time offline and online (tie-breaks)
                    self.write_offline(view, stamped, files, chunk_number)  # its intent committed first
                    outcome.offline_paths += files.paths
                    latest.append(latest_per_entity(stamped, key_names))
                rejected_rows = result.rejected.column("row_index")
                record_keys = [str(i) for i in source_row_numbers(source_rows, windowed, rejected_rows)]
                # The hold's lock around the transaction: its renewals never write the record meanwhile.
                # A transaction that fails takes the chunk's files with it unless it committed.
                transaction = chunk_transaction(self._sessions, files, self.remove_offline)
                with hold.lock, transaction as session:
                    before = None if chunk_number == 0 else run_counters(outcome, source_id)
                    fresh = record_outcome(
                        session,
                        run,
                        accepted=accepted.num_rows,
                        rejected=result.rejected,
                        record_keys=record_keys,
                    )
                    # A rerun of the source (a dead run's retry) quarantined these again: an earlier run's
                    # pending copies go, or replaying every pending record would write each twice.
                    superseded = supersede(
                        session, run, record_keys, result.rejected.column("payload").to_pylist()
                    )
                    # In the chunk's own transaction: the entry commits or rolls back with the rows and
                    # counters it describes (written after the run, it was lost with a run killed mid-way).
                    after = run_counters(outcome, source_id, inside.num_rows, accepted.num_rows, fresh) | {
                        "chunk": chunk_number
                    }
                    if superseded:
                        after["superseded"] = superseded
                    counting = (inside.num_rows, accepted.num_rows, fresh)
                    # Write-ahead: what this chunk stores waits for its online write (online_hold).
                    named = hold.name_files(session, outcome.offline_paths) if accepted.num_rows else None
                    audit(
                        session, actor=actor, action=f"ingestion.{kind}", object_type="feature_view",
                        object_id=target, before=before, after=after,
                    )  # fmt: skip
                if named is not None:
                    hold.adopt(named)  # committed: the record now holds what the transaction set
                outcome.records_in += inside.num_rows
                outcome.accepted += accepted.num_rows
                outcome.quarantined += fresh
                source_rows += chunk.num_rows
                chunk_number += 1
                # Counts and row as one record, as committed: a stop's answer names both (draining).
                done = (outcome.records_in, outcome.accepted, outcome.quarantined, source_rows)
                watch.publish(Progress(run.run_id, *done))
            if latest:  # the online write below is the run's last write into the version
                require_open(self._sessions, view, outcome)
        except VersionGone:
            # Retired or deleted meanwhile: no online value of the version is wanted (as for a delete at
            # the online write), so the run's online part goes; what it stored stays stored and counted.
            settle_online_part(run, hold)
            raise
        except BaseException as exc:
            if files is not None:  # failed between its chunk's write and transaction: its intent lapses
                files.stop_renewing()
            if files is not None and files.committed and named is not None:
                hold.adopt(named)  # its transaction failed at COMMIT yet committed (chunk_commit)
            # A later chunk failed (its source unreadable part-way, a store down): what earlier chunks
            # stored and counted is named by the run's online part, handed to the next replay now.
            settle_online_part(run, hold, f"the run failed part-way ({type(exc).__name__}: {exc})")
            stored = stored_part_way(run, outcome, files, counting)
            if isinstance(exc, Exception) and stored.anything:  # the caller must not ingest them again
                raise stopped_part_way(exc, stored, waiting_online(view)) from exc
            raise
        if latest:
            pairs = latest_blobs(view, key_names, pa.concat_tables(latest))
            online_rows = write_run_online(self._client, run, view, pairs, hold)
            try:
                require_open_after_write(self._sessions, self._client, view, outcome, run, hold, pairs)
            except VersionGone:
                raise
            except Exception as exc:  # the database could not say: every row is stored, counted and online
                hold.stop()  # its online part stays filed: a replay after the lease writes the same values
                written = (
                    f"Its online values were written ({online_rows} rows); whether its version was retired"
                    " meanwhile could not be read."
                )
                stored = stored_part_way(run, outcome, None, (0, 0, 0))
                if stored.anything:
                    raise stopped_part_way(exc, stored, written) from exc
                raise
        hold.stop()
        try:
            with write_session(self._sessions) as session:
                hold.settle_in(
                    session
                )  # written online: the run's online part is done (if it fails, it waits)
                finished = run_counters(outcome, source_id) | {
                    "chunks": chunk_number,
                    "skipped_outside_window": outcome.skipped_outside_window,
                    "online_rows": online_rows,
                }
                audit(
                    session, actor=actor, action=f"ingestion.{kind}.finished", object_type="feature_view",
                    object_id=target, before=None, after=finished,
                )  # fmt: skip
        except Exception as exc:  # every row is stored, counted and online: only the end went unrecorded
            written = (
                f"Its online values were written ({online_rows} rows); only its"
                f" `ingestion.{kind}.finished` audit entry could not be recorded."
            )
            stored = stored_part_way(run, outcome, None, (0, 0, 0))
            if stored.anything:
                raise stopped_part_way(exc, stored, written) from exc
            raise
        return online_rows

    def read_online_part(self, entity: pb.Entity, offline_paths: Sequence[str]) -> pa.Table:
        """The latest row per entity of a run's offline files (``file_online_part``'s payload), read in
        the order the run wrote them, so a tie goes to the row its online write would have taken."""
        key_names = [key.name for key in entity.join_keys]
        latest = [
            latest_per_entity(pa.Table.from_batches(list(self._offline.read_file(path))), key_names)
            for path in offline_paths
        ]
        return pa.concat_tables(latest) if latest else pa.table({})

    def write_offline(
        self, view: pb.FeatureView, accepted: pa.Table, files: ChunkFiles, chunk: int = 0
    ) -> list[str]:
        """Appends validated rows (:func:`stamp_ingested`) as chunk ``chunk`` of ``files.run_id``, its
        intent committed before any file is written and renewed until the chunk's transaction ends
        (``intent_lease``); sets ``files``' paths and intent, and returns the paths."""
        every = self._renew_every_s
        lease = IntentLease(
            self._sessions, files.run_id, view.spec.name, view.version, chunk, self._lease_s, every
        )
        return files.write(self._offline, stamp_ingested(accepted), lease)

    def recover_intents(self, lease_s: float | None = None) -> intents.Recovery:
        """One intent recovery pass (``intents.recover``) over this store, with ``lease_s`` (the run's)."""
        lease = self._lease_s if lease_s is None else lease_s
        remove = functools.partial(remove_data_files, self._offline.filesystem)  # raises: one line a pass
        return intents.recover(self._sessions, remove, lease, owns=self._offline.is_data_file)

    def remove_offline(self, paths: Sequence[str]) -> bool:
        """Removes offline files this process wrote whose rows no run counts (a replay refused at its
        commit); whether all are gone (one that fails stays, logged)."""
        try:
            return remove_data_files(self._offline.filesystem, paths)
        except (OSError, ValueError):  # pyarrow's ArrowInvalid (a path it refuses) is a ValueError
            _log.exception("could not remove uncounted offline files %s", list(paths))
            return False

    def write_online(self, view: pb.FeatureView, entity: pb.Entity, accepted: pa.Table) -> int:
        """Writes the latest validated row per entity online (never over a fresher value)."""
        return write_latest(self._client, view, [key.name for key in entity.join_keys], accepted)


def stamp_ingested(accepted: pa.Table) -> pa.Table:
    """Validated rows with their ``ingested_ts`` column: now, unless they have one. The offline store
    keeps it, and the online write makes it the blob's write time, so both break a tie of event times
    the same way: the later ingestion wins."""
    if "ingested_ts" in accepted.column_names:
        return accepted
    ingested = pa.array(np.full(accepted.num_rows, epoch_us(datetime.now(UTC))), pa.int64())
    return accepted.append_column("ingested_ts", ingested.cast(TIMESTAMP_TYPE))
