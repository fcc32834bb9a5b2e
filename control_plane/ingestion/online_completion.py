"""The online part of ``online_pending`` records (stored offline and counted, their online values not
written yet; see ``online_pending``): writing it, then marking them ``replayed``, or handing them to the
next replay when the online store does not take it. A replay of such records writes only this part.

An online value carries its row's ingestion time as its write time, which breaks a tie of event times
online as the point-in-time join breaks it offline (the later ingestion wins; see ``ingestion.online``).
A replayed record's row is stored offline with the replay's ``ingested_ts``, and the record keeps it
(``QuarantineRow.ingested_at_us``, committed with the ``online_pending`` status: ``ingestion_stamps``),
so the online value written later, from its payload, carries that time. Written with the time of the
later replay instead, it beat a batch run that stored the same entity and event time in between, and
the online store served the older row for good while training sets returned the later one. A record
committed before migration 0032 has no such time, and its online value is stamped when it is written
(the behaviour before; the fallback)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import (
    FailedPrecondition,
    NotFound,
    OfflineFileUndecodable,
    OfflineStoreMisconfigured,
    Unavailable,
)
from control_plane.audit.log import record as audit
from control_plane.db import read_session, write_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import online_pending, quarantine
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.casting import TIMESTAMP_TYPE, epoch_us
from control_plane.ingestion.claims import Claim
from control_plane.ingestion.records import parse_payload, records_table
from control_plane.ingestion.tables import QuarantineRow
from control_plane.ingestion.validation import ValidationResult, text_columns, validate

_log = logging.getLogger("aether.ingestion.replay")


class OnlineCompletion:
    """The replay's writer of online parts; shares the service's sessions, registry and batch writer."""

    def __init__(
        self, sessions: sessionmaker[Session], registry: FeatureRegistry, batch: BatchMaterializer
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._batch = batch

    def write(
        self, view: pb.FeatureView, entity: pb.Entity, accepted: pa.Table, hold: Claim, counted_by: str,
        replayed: list[int],
    ) -> None:  # fmt: skip
        """The online part (``accepted``) of ``hold``'s committed ``online_pending`` records; when the
        online store does not take it they are handed over at once to the next replay."""
        try:
            self._batch.write_online(view, entity, accepted)
        except redis.RedisError as exc:
            self.free(hold, hold.ids)
            raise Unavailable(
                f"the online store (Redis) did not take the online values of view {view.spec.name!r}"
                f" ({type(exc).__name__}: {exc}); records {hold.ids} are stored offline and counted"
                f" ({counted_by}) and are online_pending: replay them again, without corrections, to write"
                f" only their online values. Already replayed: {replayed or 'none'}"
            ) from exc

    def finish(self, hold: Claim, actor: str | None = None) -> list[int]:
        """Marks ``replayed`` those of ``hold``'s records it still holds, their online values written,
        and returns them; with ``actor``, audited in the same transaction."""
        with write_session(self._sessions) as session:
            marked = online_pending.finish_online(session, hold, hold.ids)
            if actor is not None and marked:
                audit(
                    session, actor=actor, action="quarantine.replay.online", object_type="quarantine",
                    object_id=",".join(str(i) for i in marked), before=None, after={"replayed": marked},
                )  # fmt: skip
        return marked

    def free(self, hold: Claim, ids: list[int]) -> None:
        if not ids:
            return
        try:
            with write_session(self._sessions) as session:
                online_pending.free_online(session, hold, ids)
        except Exception:  # they wait out the lease instead
            _log.exception("could not hand back online_pending records %s", ids)

    def complete(self, pending: Claim, actor: str) -> list[int]:
        """Writes the online values of the ``online_pending`` records ``pending`` holds (their offline
        rows are stored and counted by the run or replay that wrote them) and marks them ``replayed``;
        returns those it marked. A replayed record's value carries its stored row's ingestion time
        (``ingested_at_us``; now for a record committed without one, before migration 0032), a run's online
        part its files' ``ingested_ts``."""
        with read_session(self._sessions) as session:
            rows = quarantine.get_rows(session, pending.ids)
        members_of: dict[tuple[str, int], list[QuarantineRow]] = {}
        for row in rows:
            members_of.setdefault((row.view, row.version), []).append(row)
        completed: list[int] = []
        # Every view version resolved before anything is written, so a refusal writes nothing.
        resolved = {
            (name, version): self._resolve_pending(name, version, [row.id for row in members])
            for (name, version), members in members_of.items()
        }
        for (name, version), members in members_of.items():
            view, entity = resolved[name, version]
            parts = [row for row in members if online_pending.is_online_part(row.record_key)]
            members = [row for row in members if not online_pending.is_online_part(row.record_key)]
            for part in parts:  # a batch run's online part: its latest rows are in its offline files
                rows = self._online_part(view, entity, part)
                hold = Claim([part.id], pending.stamp, [])
                self.write(view, entity, rows, hold, f"by run {part.run_id}", completed)
                completed += self.finish(hold, actor)
            if not members:
                continue
            payloads = [parse_payload(row.payload, row.id) for row in members]
            result = _typed(view, entity, records_table(payloads, text_columns(view, entity)))
            if result.rejected.num_rows:  # not what was stored: write none rather than guess a value
                failed = [members[i].id for i in result.rejected.column("row_index").to_pylist()]
                raise FailedPrecondition(
                    f"records {failed} of view {name!r} version {version} are stored offline, but their"
                    f" payloads do not cast to the version's types ({result.rejected.column('reason')[0]});"
                    " their online values were not written: discard them"
                )
            accepted = _stamped(result.accepted, [row.ingested_at_us for row in members])
            hold = Claim([row.id for row in members], pending.stamp, [])
            self.write(view, entity, accepted, hold, "by an earlier run or replay", completed)
            completed += self.finish(hold, actor)
        return completed

    def _online_part(self, view: pb.FeatureView, entity: pb.Entity, part: QuarantineRow) -> pa.Table:
        """The latest row per entity of the batch run whose online part ``part`` is."""
        files = parse_payload(part.payload, part.id).get("offline_files")
        if not isinstance(files, list) or not all(isinstance(path, str) for path in files):
            raise FailedPrecondition(
                f"record {part.id} is run {part.run_id}'s online part, but its payload names no offline"
                " files; its online values were not written: discard it"
            )
        try:
            return self._batch.read_online_part(entity, files)
        except Unavailable as exc:
            # The store's failure that may pass (OfflineStoreUnavailable: an object store throttling, a file
            # gone since it was listed), caught before the OSError it also is: "discard it" there lost the
            # run's online values for good, where a later replay writes them.
            raise Unavailable(
                f"record {part.id} is run {part.run_id}'s online part, and its offline files could not be"
                f" read now ({exc.message}); its online values were not written and it stays"
                " online_pending: replay it again later"
            ) from exc
        except (OfflineFileUndecodable, pa.ArrowInvalid) as exc:  # bytes damaged: no setting brings them back
            raise FailedPrecondition(
                f"record {part.id} is run {part.run_id}'s online part, but its offline files cannot be read"
                f" ({type(exc).__name__}: {exc}); its online values were not written: discard it"
            ) from exc
        except OfflineStoreMisconfigured as exc:
            # The store refusing the read (permissions, credentials, a missing bucket, a folder replaced by
            # a file), not damaged bytes: the same files read once it is fixed. Answered "discard it" too,
            # which lost the run's online values for good; the record is handed back (``free``) instead.
            raise FailedPrecondition(
                f"record {part.id} is run {part.run_id}'s online part, and the offline store refuses to read"
                f" its offline files ({exc.message}); its online values were not written and it stays"
                " online_pending: fix the offline store's setup named here, then replay it again"
            ) from exc

    def _resolve_pending(self, name: str, version: int, ids: list[int]) -> tuple[pb.FeatureView, pb.Entity]:
        """The view version of ``online_pending`` records; a retired or deleted one refused saying what to
        do (``_resolve``'s "discard its quarantined records" read as wrong: a discard refused them)."""
        try:
            found = self._registry.get_feature_view(name, version)
        except NotFound:
            gone = "deleted"
        else:
            if found.status != types_pb2.RETIRED:
                return found, self._registry.get_entity(found.spec.entity)
            gone = "retired (not served)"
        raise FailedPrecondition(
            f"records {ids} wait for their online values (online_pending) in feature view {name!r} version"
            f" {version}, which is {gone}: nothing reads its online values, so none is written. Discard"
            f" them (`aetherctl quarantine discard {' '.join(map(str, ids))}`): their rows stay stored"
            " offline and counted accepted"
        )


def ingestion_stamps(record_ids: Sequence[int], accepted: pa.Table) -> dict[int, int]:
    """The ingestion time (µs) of each of ``record_ids``' rows, the ``ingested_ts`` of ``accepted``'s rows
    in the same order (a replay group's passing records and the rows it stores offline): what their
    records keep (``ingested_at_us``) when they are committed ``online_pending``."""
    stamps = accepted.column("ingested_ts").cast(pa.int64()).to_pylist()
    return {record_id: int(stamp) for record_id, stamp in zip(record_ids, stamps, strict=True)}


def _stamped(rows: pa.Table, ingested_us: Sequence[int | None]) -> pa.Table:
    """``online_pending`` records' typed rows with the ``ingested_ts`` their stored rows have, which the
    online write makes the blobs' write time. A record committed before migration 0032 kept none: its row
    is stamped now, as every record's was before (so it may win a tie of event times online that a later
    ingestion wins in training sets)."""
    now = epoch_us(datetime.now(UTC))
    stamps = pa.array([now if stamp is None else stamp for stamp in ingested_us], pa.int64())
    return rows.append_column("ingested_ts", stamps.cast(TIMESTAMP_TYPE))


#: No event time is too far ahead for ``_typed`` (a century: ``now`` plus it stays a valid datetime).
_ANY_FUTURE = timedelta(days=36_500)


def _typed(view: pb.FeatureView, entity: pb.Entity, records: pa.Table) -> ValidationResult:
    """``records`` of ``online_pending`` records as the typed rows the online write takes, judged by no
    rule of the view. Their rows passed the rules with their batch (or replay) and are stored offline and
    counted; the online value is the latest stored row, so refusing it leaves the online store stale
    behind the offline one. Re-judging them as a batch of their own stranded them: the latest row per
    entity of a batch that had 40% nulls is often all nulls, over a 0.5 ``max_null_fraction``; a rule
    edited since (rules change without a new version) would too. No per-record rule is kept either (range,
    categories, event time ahead of now): the rows are stored, and time only moves on. What remains is
    what the write needs, not a rule: join keys and event time present and every value castable to the
    version's types, which are fixed per version, so they fail only for a payload that is not the row
    that was stored."""
    unjudged = pb.FeatureView()
    unjudged.CopyFrom(view)
    for feature in unjudged.spec.features:  # batch views only: a streaming view's events never get here
        feature.validation.CopyFrom(pb.ValidationRule(max_null_fraction=1.0))
    # No key length limit either: the rows were stored under the limit of their day.
    return validate(
        unjudged, entity, records, now=datetime.now(UTC), max_future=_ANY_FUTURE, max_key_bytes=None
    )
