"""The transport-free core behind ``aether.v1.Ingestion``: batch ingestion of Arrow data, materialization
of a Parquet source, and the quarantine (list, show, replay, discard) with run counters."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from clients.uris import MISPLACED_CREDENTIALS, misplaced_credentials, redact_uri
from control_plane.audit.log import record as audit
from control_plane.db import read_session, write_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.batch import (
    OPEN_WINDOW,
    BatchMaterializer,
    MaterializeOutcome,
    Window,
    parquet_batches,
)
from control_plane.ingestion.quarantine import Claim, QuarantinedRecord, RunCounts, RunSource
from control_plane.ingestion.tables import QuarantineRow
from control_plane.ingestion.validation import ValidationResult, validate
from control_plane.offline.store import OfflineStore

_log = logging.getLogger("aether.ingestion.replay")


@dataclass(frozen=True)
class ReplayOutcome:
    run_ids: list[str]  # one replay run per view version, in the order they were written
    replayed: list[int]
    still_quarantined: list[QuarantinedRecord]


def records_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Records (parsed JSON payloads) as a table, one column per field, so validation's casts decide
    what a value is as they did at the original ingest. A column of JSON numbers stays numeric (the
    payload of a float64 column holds 6.0, and the int64 cast accepts the float 6.0 but not the text
    "6.0": an unchanged record failed its replay); any other column is the values' JSON text (strings as
    they are), so a column never mixes types."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return pa.table({name: _column([record.get(name) for record in records]) for name in names})


# How validation writes a float that JSON has no number for (validation.record_json).
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_EXACT_FLOAT_INT = 2**53


def _column(values: list[Any]) -> pa.Array:
    present = [v for v in values if v is not None]
    numbers = [v for v in present if _is_number(v)]
    if numbers and all(_is_number(v) or (isinstance(v, str) and v in _FLOAT_WORDS) for v in present):
        if len(numbers) == len(present) and all(isinstance(v, int) for v in numbers):
            if all(-(2**63) <= v < 2**63 for v in numbers):
                return pa.array(values, pa.int64())
        elif all(isinstance(v, float) or abs(v) <= _EXACT_FLOAT_INT for v in numbers):
            # Floats (and the words for NaN and the infinities): as the float64 column they came from.
            floats = [_FLOAT_WORDS[v] if isinstance(v, str) else v for v in values]
            return pa.array(floats, pa.float64())
    return pa.array([_text(v) for v in values], pa.string())  # as text; so is an int beyond int64


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


class IngestionService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: FeatureRegistry,
        offline: OfflineStore,
        client: redis.Redis,
        kafka_options: Mapping[str, str] | None = None,
        claim_lease_s: float = quarantine.CLAIM_LEASE_S,
    ) -> None:
        """``kafka_options``: the librdkafka settings of the replay's producer, the process's
        ``ControlPlaneSettings.kafka_options`` (what the materializer consumes with); ``claim_lease_s``:
        how old a dead replay's claim must be before a replay takes it over."""
        self._sessions = sessions
        self._registry = registry
        self._client = client
        self._kafka_options = dict(kafka_options or {})
        self._claim_lease_s = claim_lease_s
        self.batch = BatchMaterializer(sessions, offline, client)

    def _resolve(self, view: str, version: int) -> tuple[pb.FeatureView, pb.Entity]:
        found = self._registry.get_feature_view(view, version)
        if found.status == types_pb2.RETIRED:
            # Asked for by number (version 0 is the latest one not retired). Nothing serves a retired
            # version and no model may reference it, so its writes were stored and counted for no reader.
            raise FailedPrecondition(
                f"feature view {view!r} version {found.version} is retired (not served); ingest into a"
                " version that is not retired (version 0 is the latest such), or discard its quarantined"
                " records"
            )
        return found, self._registry.get_entity(found.spec.entity)

    def ingest(
        self,
        view: str,
        version: int,
        chunks: Iterable[pa.Table],
        *,
        window: Window = OPEN_WINDOW,
        strict: bool = False,
        source: str = "arrow",
        actor: str = "",
    ) -> MaterializeOutcome:
        found, entity = self._resolve(view, version)
        return self.batch.materialize(
            found, entity, chunks, window=window, source_id=source, strict=strict, actor=actor
        )

    def materialize_file(
        self, view: str, version: int, source_uri: str, *, window: Window = OPEN_WINDOW, strict: bool = False,
        actor: str = "",
    ) -> MaterializeOutcome:  # fmt: skip
        found, entity = self._resolve(view, version)
        path = source_uri or found.spec.source.uri
        if not path:
            raise InvalidArgument(f"view {view!r} has no source uri; name a Parquet file to materialize")
        if misplaced_credentials(path):
            raise InvalidArgument(f"cannot read Parquet source: {MISPLACED_CREDENTIALS}")
        chunks = parquet_batches(path)
        # The run, its quarantined records and the audit entry keep the source without its credentials.
        return self.batch.materialize(
            found, entity, chunks, window=window, source_id=redact_uri(path), strict=strict, actor=actor
        )

    # -- quarantine --------------------------------------------------------------------------------

    def list_quarantined(
        self, *, view: str = "", reason_contains: str = "", status: str = "", run_id: str = "", limit: int = 0
    ) -> list[QuarantinedRecord]:
        wanted = "" if status == "all" else (status or quarantine.QUARANTINED)
        if wanted and wanted not in quarantine.STATUSES:
            raise InvalidArgument(
                f"unknown status {status!r}; expected one of {', '.join(quarantine.STATUSES)}, all"
            )
        with read_session(self._sessions) as session:
            return quarantine.list_quarantined(
                session, view=view, reason_contains=reason_contains, status=wanted, run_id=run_id,
                limit=limit or 100,
            )  # fmt: skip

    def get_quarantined(self, record_id: int) -> QuarantinedRecord:
        with read_session(self._sessions) as session:
            return quarantine.get_quarantined(session, record_id)

    def list_runs(self, view: str = "", limit: int = 0) -> list[RunCounts]:
        with read_session(self._sessions) as session:
            return quarantine.list_runs(session, view, limit or 100)

    def discard(self, ids: Sequence[int], actor: str = "") -> int:
        with write_session(self._sessions) as session:
            # Claimed and finished in one transaction: a replay holding one of them refuses the discard
            # (as it would a replay), and a discarded record is never claimed by a replay after.
            # online_pending ones (stored offline, counted accepted) are taken too when no replay holds
            # them: their online value is not wanted (a retired or deleted version's), or they stayed
            # online_pending for good. Their rows stay stored and counted, as the audit entry says.
            stored = quarantine.online_pending(session, ids, self._claim_lease_s)
            held = quarantine.claim(
                session, ids, self._claim_lease_s, action="discarded", online_pending=True
            )
            rows = quarantine.get_rows(session, held.ids)
            quarantine.set_status(session, rows, quarantine.DISCARDED)
            after: dict[str, list[int]] = {"discarded": list(ids)}
            if stored:
                after["stored_offline"] = stored  # no online value written; the offline row stays
            audit(
                session, actor=actor, action="quarantine.discard", object_type="quarantine",
                object_id=",".join(str(i) for i in ids), before=None, after=after,
            )  # fmt: skip
        return len(held.ids)

    def replay(self, ids: Sequence[int], corrected: Mapping[int, str], actor: str = "") -> ReplayOutcome:
        """See the RPC's comment. Batch views get the passing records written offline and online; a
        streaming view gets them published again to its stream, where its materializer aggregates them.

        The records are claimed first, all or none (``quarantine.claim``): of two replays of the same
        record only one writes it, and the other is refused (FAILED_PRECONDITION) naming the records
        another replay holds. Every group of records (one view version) is then parsed, resolved and
        validated, and every stream it publishes to checked, before anything is written; then each group
        is written and its statuses committed at once, before the next group, the claim renewed before
        each write. A refused or failed replay hands back what it did not commit, so every record ends
        either written and marked replayed or unwritten and still quarantined, never written yet
        quarantined (which a second replay would publish again: a stream event aggregated twice).

        A batch view's group commits its records ``online_pending`` (and counted) once their rows are in
        the offline store, before its online write, and ``replayed`` after it: a failed online write
        (Redis down) leaves them ``online_pending``, and a replay of such a record writes only its online
        value (idempotent: never over a fresher one), so its offline row is written once. Handed back to
        the quarantine instead, it was written offline again by every retry. Such records are held first,
        as claims hold the others (``quarantine.take_online``): a second replay of them is refused while
        the first writes them, instead of both writing, reporting and auditing them.

        A crash leaves its records ``replaying`` (so does a commit that fails after its group's write);
        the next replay of them takes the claim over once it is older than the lease
        (``quarantine.CLAIM_LEASE_S``) and writes them. Records written before the crash and not yet
        committed are then written again, the window a batch run's chunk has too; until the lease runs
        out they are refused, and ``aetherctl quarantine list --status replaying`` shows them."""
        ids = list(dict.fromkeys(ids))  # an id named twice would be written twice
        unknown = set(corrected) - set(ids)
        if unknown:
            raise InvalidArgument(f"corrected records {sorted(unknown)} are not among the replayed ids")
        with write_session(self._sessions) as session:
            # Held, as a claim holds the others: of two replays of one, only the first writes it online.
            pending = quarantine.take_online(session, ids, self._claim_lease_s)
            # Its offline row holds the payload it was replayed with, and its online value must match it:
            # the same correction again (a retried request) is fine, another one is refused.
            changed = [
                row.id
                for row in quarantine.get_rows(session, [i for i in pending.ids if i in corrected])
                if _parse(corrected[row.id], row.id) != _parse(row.payload, row.id)
            ]
            if changed:
                raise InvalidArgument(
                    f"records {changed} are stored offline already (online_pending) with the payload they"
                    " were replayed with; replay them without a correction to write their online values"
                )
            others = [i for i in ids if i not in set(pending.ids)]
            claim = quarantine.claim(session, others, self._claim_lease_s)
        if claim.taken_over or pending.taken_over:
            _log.warning(
                "replay takes over records %s, claimed by a replay that did not finish within %g s",
                claim.taken_over + pending.taken_over, self._claim_lease_s,
            )  # fmt: skip
        try:
            completed = self._complete_online(pending, actor)
            outcome = self._replay_claimed(claim, corrected, actor)
            return ReplayOutcome(outcome.run_ids, completed + outcome.replayed, outcome.still_quarantined)
        except BaseException:
            self._release(claim)
            self._free_online(pending, pending.ids)  # those not completed: refused, or their write failed
            raise

    def _replay_claimed(self, claim: Claim, corrected: Mapping[int, str], actor: str) -> ReplayOutcome:
        with read_session(self._sessions) as session:
            rows = quarantine.get_rows(session, claim.ids)
        members_of: dict[tuple[str, int], list[QuarantineRow]] = {}
        for row in rows:
            members_of.setdefault((row.view, row.version), []).append(row)
        groups = [self._prepare_replay(members, corrected) for members in members_of.values()]
        replayed: list[int] = []
        still: list[int] = []
        run_ids: list[str] = []
        for group in groups:
            # A run per view version: one run for the whole call filed every view's records under the
            # first view, so no view's runs added up.
            first = group.members[0]
            source = f"quarantine:{first.run_id}"
            run = RunSource(f"replay-{uuid.uuid4().hex}", first.view, first.version, "replay", source)
            with write_session(self._sessions) as session:  # never write what another replay now holds
                stamp = quarantine.renew(session, claim)
            claim.stamp = stamp
            undelivered = self._write_replay(group)
            done = [group.members[i].id for i in group.passing if i not in undelivered]
            batch = group.publish is None
            status = quarantine.ONLINE_PENDING if batch else quarantine.REPLAYED
            try:
                self._commit_replay(run, claim, group, done, corrected, actor, status)
            except BaseException:
                # Written but not marked: they stay claimed (``replaying``), not handed back to the
                # quarantine, where a retry would write them again at once.
                claim.ids = [record_id for record_id in claim.ids if record_id not in done]
                raise
            still += sorted(group.new_reasons)
            run_ids.append(run.run_id)
            if batch and done:  # committed online_pending, held under the claim's stamp
                hold = Claim(done, claim.stamp, [])
                self._write_online(
                    group.view, group.entity, group.accepted, hold, f"run {run.run_id}", replayed
                )
                self._finish_online(hold)
            replayed += done
            if undelivered:
                raise Unavailable(
                    f"{len(undelivered)} records of view {group.view.spec.name!r} were not acknowledged by"
                    f" its stream ({next(iter(undelivered.values()))}); they stay quarantined. Already"
                    f" replayed (runs {', '.join(run_ids)}): {replayed or 'none'}"
                )
        with read_session(self._sessions) as session:
            records = [quarantine.get_quarantined(session, record_id) for record_id in sorted(still)]
        return ReplayOutcome(run_ids, replayed, records)

    def _release(self, claim: Claim) -> None:
        """Hands a failed replay's uncommitted records back to the quarantine. When the database is what
        failed, they stay claimed until the lease runs out and a replay takes them over."""
        if not claim.ids:
            return
        try:
            with write_session(self._sessions) as session:
                quarantine.release(session, claim)
        except Exception:
            _log.exception(
                "could not hand back claimed records %s; a replay takes them over later", claim.ids
            )

    def _prepare_replay(self, members: list[QuarantineRow], corrected: Mapping[int, str]) -> _ReplayGroup:
        """Everything that can refuse a group's replay, with nothing written yet."""
        view, entity = self._resolve(members[0].view, members[0].version)
        payloads = [_parse(corrected.get(row.id, row.payload), row.id) for row in members]
        result = validate(view, entity, records_table(payloads), now=datetime.now(UTC))
        new_reasons = {
            members[index].id: reason
            for index, reason in zip(
                result.rejected.column("row_index").to_pylist(),
                result.rejected.column("reason").to_pylist(),
                strict=True,
            )
        }
        passing = [i for i, row in enumerate(members) if row.id not in new_reasons]
        publish = self._publisher(view) if view.spec.aggregations and passing else None
        return _ReplayGroup(view, entity, members, payloads, result.accepted, new_reasons, passing, publish)

    def _write_replay(self, group: _ReplayGroup) -> dict[int, str]:
        """Writes a group's passing records (a batch view's to the offline store only); returns, by
        member index, the events its stream did not acknowledge (never written: they stay quarantined)."""
        if not group.passing:
            return {}
        if group.publish is None:  # online once the offline write is committed (``_write_online``)
            self.batch.write_offline(group.view, group.accepted)
            return {}
        events = [_event(group.payloads[i]) for i in group.passing]
        errors = group.publish(events)
        return {i: error for i, error in zip(group.passing, errors, strict=True) if error is not None}

    def _commit_replay(
        self,
        run: RunSource,
        claim: Claim,
        group: _ReplayGroup,
        done: list[int],
        corrected: Mapping[int, str],
        actor: str,
        status: str,
    ) -> None:
        """Commits one written group: its records' statuses (``done`` ones ``status``), the run's counters
        and the audit entry; records its stream did not take go back to the quarantine as they were."""
        members = [row.id for row in group.members]
        with write_session(self._sessions) as session:
            fresh = quarantine.held(session, claim, members)
            lost = [record_id for record_id in members if record_id not in fresh]
            if lost:  # only a write that outlasted the lease: another replay may write them too
                written = [record_id for record_id in lost if record_id in done]
                raise FailedPrecondition(
                    f"this replay's claim on quarantined records {lost} of view {group.view.spec.name!r}"
                    " lapsed while it wrote them (the write took longer than the lease) and another replay"
                    f" took them over; those it wrote ({written or 'none'}) may be written twice"
                )
            for record_id in done:
                row = fresh[record_id]
                row.payload = corrected.get(record_id, row.payload)
                quarantine.set_status(session, [row], status)
                if status == quarantine.ONLINE_PENDING:  # held by this replay while it writes them online
                    row.updated_at_us = claim.stamp
            for record_id, reason in group.new_reasons.items():
                row = fresh[record_id]
                row.payload = corrected.get(record_id, row.payload)
                quarantine.set_status(session, [row], quarantine.QUARANTINED, reason)
            unsent = set(members) - set(done) - set(group.new_reasons)
            quarantine.set_status(
                session, [fresh[record_id] for record_id in sorted(unsent)], quarantine.QUARANTINED
            )
            counters = quarantine.ensure_run(session, run)
            counters.records_in += len(done) + len(group.new_reasons)
            counters.accepted += len(done)
            counters.quarantined += len(group.new_reasons)
            counters.updated_at_us = quarantine.now_us()
            audit(
                session, actor=actor, action="quarantine.replay", object_type="quarantine",
                object_id=",".join(str(row.id) for row in group.members), before=None,
                after={
                    "run_id": run.run_id, "replayed": done, "still_quarantined": sorted(group.new_reasons),
                    "taken_over": sorted(set(claim.taken_over) & set(members)),
                },
            )  # fmt: skip
        claim.ids = [record_id for record_id in claim.ids if record_id not in fresh]

    def _write_online(
        self, view: pb.FeatureView, entity: pb.Entity, accepted: pa.Table, hold: Claim, counted_by: str,
        replayed: list[int],
    ) -> None:  # fmt: skip
        """The online part (``accepted``) of ``hold``'s committed ``online_pending`` records; when the
        online store does not take it they are handed over at once to the next replay."""
        try:
            self.batch.write_online(view, entity, accepted)
        except redis.RedisError as exc:
            self._free_online(hold, hold.ids)
            raise Unavailable(
                f"the online store (Redis) did not take the online values of view {view.spec.name!r}"
                f" ({type(exc).__name__}: {exc}); records {hold.ids} are stored offline and counted"
                f" ({counted_by}) and are online_pending: replay them again, without corrections, to write"
                f" only their online values. Already replayed: {replayed or 'none'}"
            ) from exc

    def _finish_online(self, hold: Claim, actor: str | None = None) -> list[int]:
        """Marks ``replayed`` those of ``hold``'s records it still holds, their online values written,
        and returns them; with ``actor``, audited in the same transaction."""
        with write_session(self._sessions) as session:
            marked = quarantine.finish_online(session, hold, hold.ids)
            if actor is not None and marked:
                audit(
                    session, actor=actor, action="quarantine.replay.online", object_type="quarantine",
                    object_id=",".join(str(i) for i in marked), before=None, after={"replayed": marked},
                )  # fmt: skip
        return marked

    def _free_online(self, hold: Claim, ids: list[int]) -> None:
        if not ids:
            return
        try:
            with write_session(self._sessions) as session:
                quarantine.free_online(session, hold, ids)
        except Exception:  # they wait out the lease instead
            _log.exception("could not hand back online_pending records %s", ids)

    def _complete_online(self, pending: Claim, actor: str) -> list[int]:
        """Writes the online values of the ``online_pending`` records ``pending`` holds (their offline
        rows are stored and counted by the run or replay that wrote them) and marks them ``replayed``;
        returns those it marked."""
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
            parts = [row for row in members if row.record_key == quarantine.ONLINE_PART_KEY]
            members = [row for row in members if row.record_key != quarantine.ONLINE_PART_KEY]
            for part in parts:  # a batch run's online part: its latest rows are in its offline files
                rows = self._online_part(view, entity, part)
                hold = Claim([part.id], pending.stamp, [])
                self._write_online(view, entity, rows, hold, f"by run {part.run_id}", completed)
                completed += self._finish_online(hold, actor)
            if not members:
                continue
            payloads = [_parse(row.payload, row.id) for row in members]
            result = _typed(view, entity, records_table(payloads))
            if result.rejected.num_rows:  # not what was stored: write none rather than guess a value
                failed = [members[i].id for i in result.rejected.column("row_index").to_pylist()]
                raise FailedPrecondition(
                    f"records {failed} of view {name!r} version {version} are stored offline, but their"
                    f" payloads do not cast to the version's types ({result.rejected.column('reason')[0]});"
                    " their online values were not written: discard them"
                )
            hold = Claim([row.id for row in members], pending.stamp, [])
            self._write_online(view, entity, result.accepted, hold, "by an earlier run or replay", completed)
            completed += self._finish_online(hold, actor)
        return completed

    def _online_part(self, view: pb.FeatureView, entity: pb.Entity, part: QuarantineRow) -> pa.Table:
        """The latest row per entity of the batch run whose online part ``part`` is."""
        files = _parse(part.payload, part.id).get("offline_files")
        if not isinstance(files, list) or not all(isinstance(path, str) for path in files):
            raise FailedPrecondition(
                f"record {part.id} is run {part.run_id}'s online part, but its payload names no offline"
                " files; its online values were not written: discard it"
            )
        try:
            return self.batch.read_online_part(entity, files)
        except (OSError, pa.ArrowInvalid) as exc:
            raise FailedPrecondition(
                f"record {part.id} is run {part.run_id}'s online part, but its offline files cannot be read"
                f" ({type(exc).__name__}: {exc}); its online values were not written: discard it"
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

    def _publisher(self, view: pb.FeatureView) -> Publish:
        """How to publish events again to a streaming view's source, where its materializer reads: a Redis
        stream, or the topic of a ``kafka://`` source (an XADD to a Redis stream of that name would be
        read by nobody and the records lost). Refuses, before anything is written, a view with no source
        or a Kafka source this control plane has no client for."""
        stream = view.spec.source.uri
        if not stream:
            raise FailedPrecondition(f"streaming view {view.spec.name!r} has no source stream to replay into")
        if stream.startswith("kafka://"):
            return _kafka_publisher(view, stream, self._kafka_options)

        def xadd(events: list[dict[str, str]]) -> list[str | None]:
            # One MULTI/EXEC: every event is added or none is, so a failure leaves none half-published.
            pipeline = self._client.pipeline(transaction=True)
            for event in events:
                pipeline.xadd(stream, {field: value for field, value in event.items()})
            pipeline.execute()
            return [None] * len(events)

        return xadd


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
    return validate(unjudged, entity, records, now=datetime.now(UTC), max_future=_ANY_FUTURE)


#: Publishes events to a stream; per event, None once the stream holds it, else why it does not.
Publish = Callable[[list[dict[str, str]]], list[str | None]]


@dataclass(frozen=True)
class _ReplayGroup:
    """The records of one view version in a replay, validated and ready to write."""

    view: pb.FeatureView
    entity: pb.Entity
    members: list[QuarantineRow]
    payloads: list[dict[str, Any]]
    accepted: pa.Table
    new_reasons: dict[int, str]  # record id -> why it stays quarantined
    passing: list[int]  # indices into members
    publish: Publish | None  # a streaming view's publisher; None for a batch view


def _kafka_publisher(view: pb.FeatureView, url: str, options: Mapping[str, str]) -> Publish:
    """Publishes to the topic of a ``kafka://`` URL with the process's librdkafka settings (the ones
    its materializer consumes with: a secured cluster's security.protocol, sasl.*, ssl.*)."""
    try:
        from control_plane.ingestion.streaming.kafka_source import parse_kafka_url, produce
    except ImportError as exc:  # confluent-kafka is the optional ``kafka`` extra
        raise FailedPrecondition(
            f"streaming view {view.spec.name!r} reads from Kafka ({url}), but this control plane has no"
            " Kafka client (install the 'kafka' extra) to publish replayed records; they stay quarantined"
        ) from exc
    try:
        bootstrap, topic = parse_kafka_url(url)
    except ValueError as exc:
        raise FailedPrecondition(f"streaming view {view.spec.name!r}: {exc}") from exc
    return lambda events: produce(bootstrap, topic, events, options)


def _event(payload: Mapping[str, Any]) -> dict[str, str]:
    """A record as stream fields: values as text, absent ones left out (as a stream message carries)."""
    return {k: v for k, v in ((k, _text(v)) for k, v in payload.items()) if v is not None}


def _parse(payload: str, record_id: int) -> dict[str, Any]:
    try:
        parsed = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"record {record_id}: payload is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidArgument(f"record {record_id}: payload must be a JSON object")
    return parsed
