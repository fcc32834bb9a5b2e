"""The transport-free core behind ``aether.v1.Ingestion``: batch ingestion of Arrow data, materialization
of a Parquet source, and the quarantine (list, show, replay, discard) with run counters."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition, InvalidArgument, Unavailable
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES
from clients.uris import MISPLACED_CREDENTIALS, misplaced_credentials, redact_uri
from control_plane.audit.log import record as audit
from control_plane.db import read_session, write_session
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import claims, online_pending, quarantine
from control_plane.ingestion.batch import BatchMaterializer, stamp_ingested
from control_plane.ingestion.chunk_commit import ChunkFiles, chunk_transaction
from control_plane.ingestion.claims import Claim
from control_plane.ingestion.draining import UNWATCHED, RunWatch
from control_plane.ingestion.online_completion import OnlineCompletion, ingestion_stamps
from control_plane.ingestion.parquet_source import parquet_batches
from control_plane.ingestion.quarantine import QuarantinedRecord, RunCounts, RunSource
from control_plane.ingestion.records import parse_payload
from control_plane.ingestion.replay_publish import (
    MARKER_TTL_S,
    Publish,
    PublishedBefore,
    RedisPublisher,
    kafka_publisher,
    record_identity,
    redis_publisher,
)
from control_plane.ingestion.replay_reading import replay_table
from control_plane.ingestion.run_outcome import MaterializeOutcome
from control_plane.ingestion.tables import QuarantineRow
from control_plane.ingestion.validation import judged_alone, validate
from control_plane.ingestion.window import OPEN_WINDOW, Window
from control_plane.offline.store import OfflineStore

_log = logging.getLogger("aether.ingestion.replay")


@dataclass(frozen=True)
class ReplayOutcome:
    run_ids: list[str]  # one replay run per view version, in the order they were written
    replayed: list[int]
    still_quarantined: list[QuarantinedRecord]


class IngestionService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: FeatureRegistry,
        offline: OfflineStore,
        client: redis.Redis,
        kafka_options: Mapping[str, str] | None = None,
        claim_lease_s: float = claims.CLAIM_LEASE_S,
        replay_marker_ttl_s: int = MARKER_TTL_S,
        max_join_key_bytes: int = DEFAULT_MAX_JOIN_KEY_BYTES,
    ) -> None:
        """``kafka_options``: the librdkafka settings of the replay's producer, the process's
        ``ControlPlaneSettings.kafka_options`` (what the materializer consumes with); ``claim_lease_s``:
        how old a dead replay's claim must be before a replay takes it over; ``replay_marker_ttl_s``: the
        backstop TTL of a Redis stream replay's per-record publish markers (``replay_publish``);
        ``max_join_key_bytes``: the longest string join key a run or a replay accepts (``key_length``,
        ``ControlPlaneSettings.max_join_key_bytes``)."""
        self._replay_marker_ttl_s = replay_marker_ttl_s
        self._sessions = sessions
        self._registry = registry
        self._client = client
        self._kafka_options = dict(kafka_options or {})
        self._claim_lease_s = claim_lease_s
        self.batch = BatchMaterializer(
            sessions, offline, client, lease_s=claim_lease_s, max_key_bytes=max_join_key_bytes
        )
        self._online = OnlineCompletion(sessions, registry, self.batch)

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
        watch: RunWatch = UNWATCHED,
        one_batch: bool = False,
    ) -> MaterializeOutcome:
        """Ingests ``chunks`` as one run, validated chunk by chunk. With ``one_batch`` they are one call's
        tables, all in memory (IngestBatch's): the null-fraction rule judges each by the fraction over
        all of them, so how a client cut its table into transport pieces changes nothing; without, each
        chunk by its own (a source read a chunk at a time)."""
        found, entity = self._resolve(view, version)
        return self.batch.materialize(
            found, entity, chunks, window=window, source_id=source, strict=strict, actor=actor, watch=watch,
            one_batch=one_batch,
        )  # fmt: skip

    def materialize_file(
        self, view: str, version: int, source_uri: str, *, window: Window = OPEN_WINDOW, strict: bool = False,
        actor: str = "", watch: RunWatch = UNWATCHED,
    ) -> MaterializeOutcome:  # fmt: skip
        found, entity = self._resolve(view, version)
        path = source_uri or found.spec.source.uri
        if not path:
            raise InvalidArgument(f"view {view!r} has no source uri; name a Parquet file to materialize")
        if misplaced_credentials(path):
            raise InvalidArgument(f"cannot read Parquet source: {MISPLACED_CREDENTIALS}")
        # The run, its quarantined records and the audit entry keep the source without its credentials.
        source_id = redact_uri(path)
        quarantine.check_source_length(source_id, "source_uri")
        chunks = parquet_batches(path)
        return self.batch.materialize(
            found, entity, chunks, window=window, source_id=source_id, strict=strict, actor=actor,
            watch=watch,
        )  # fmt: skip

    # -- quarantine --------------------------------------------------------------------------------

    def list_quarantined(
        self,
        *,
        view: str = "",
        reason_contains: str = "",
        status: str = "",
        run_id: str = "",
        limit: int = 0,
        before_id: int = 0,
    ) -> list[QuarantinedRecord]:
        wanted = "" if status == "all" else (status or quarantine.QUARANTINED)
        if wanted and wanted not in quarantine.STATUSES:
            raise InvalidArgument(
                f"unknown status {status!r}; expected one of {', '.join(quarantine.STATUSES)}, all"
            )
        with read_session(self._sessions) as session:
            return quarantine.list_quarantined(
                session, view=view, reason_contains=reason_contains, status=wanted, run_id=run_id,
                limit=limit or 100, before_id=before_id,
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
            stored = online_pending.unheld(session, ids, self._claim_lease_s)
            held = claims.claim(session, ids, self._claim_lease_s, action="discarded", online_pending=True)
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

        The records are claimed first, all or none (``claims.claim``): of two replays of the same
        record only one writes it, and the other is refused (FAILED_PRECONDITION) naming the records
        another replay holds. Every group of records (one view version) is then parsed, resolved and
        validated, and every stream it publishes to checked, before anything is written; then each group
        is written and its statuses committed at once, before the next group, the claim renewed before
        each write. A refused or failed replay hands back what it did not commit, so every record ends
        either written and marked replayed or unwritten and still quarantined, never written yet
        quarantined (which a second replay would publish again: a stream event aggregated twice). A Redis
        stream's publish whose answer is lost (a timeout) may have run all the same; its records go back
        to the quarantine, and a retry finds them in the stream by their markers and publishes them no
        more (``replay_publish``).

        A batch view's group commits its records ``online_pending`` (and counted) once their rows are in
        the offline store, before its online write, and ``replayed`` after it: a failed online write
        (Redis down) leaves them ``online_pending``, and a replay of such a record writes only its online
        value (idempotent: never over a fresher one), so its offline row is written once. Handed back to
        the quarantine instead, it was written offline again by every retry. Such records are held first,
        as claims hold the others (``online_pending.take_online``): a second replay of them is refused while
        the first writes them, instead of both writing, reporting and auditing them.

        A commit that fails after its group's write removes the group's offline files unless it
        committed (``chunk_commit``) and hands its records back; one whose outcome cannot be read back
        leaves them ``replaying``, as a crash does;
        the next replay of them takes the claim over once it is older than the lease
        (``claims.CLAIM_LEASE_S``) and writes them. A batch group's offline files have an intent
        committed before they are written (``intents``), which its commit deletes: those of a group that
        crashed or never learnt its commit's outcome are removed by the intent recovery once the intent
        is older than the lease, unless the commit landed, so its rows are stored once. Records a crash
        caught between their publish to a Kafka topic and the commit are published again; until the
        lease runs out they are refused, and ``aetherctl quarantine list --status replaying`` shows
        them."""
        ids = list(dict.fromkeys(ids))  # an id named twice would be written twice
        unknown = set(corrected) - set(ids)
        if unknown:
            raise InvalidArgument(f"corrected records {sorted(unknown)} are not among the replayed ids")
        with write_session(self._sessions) as session:
            # Held, as a claim holds the others: of two replays of one, only the first writes it online.
            pending = online_pending.take_online(session, ids, self._claim_lease_s)
            # Its offline row holds the payload it was replayed with, and its online value must match it:
            # the same correction again (a retried request) is fine, another one is refused.
            changed = [
                row.id
                for row in quarantine.get_rows(session, [i for i in pending.ids if i in corrected])
                if parse_payload(corrected[row.id], row.id) != parse_payload(row.payload, row.id)
            ]
            if changed:
                raise InvalidArgument(
                    f"records {changed} are stored offline already (online_pending) with the payload they"
                    " were replayed with; replay them without a correction to write their online values"
                )
            others = [i for i in ids if i not in set(pending.ids)]
            claim = claims.claim(session, others, self._claim_lease_s)
        if claim.taken_over or pending.taken_over:
            _log.warning(
                "replay takes over records %s, claimed by a replay that did not finish within %g s",
                claim.taken_over + pending.taken_over, self._claim_lease_s,
            )  # fmt: skip
        try:
            completed = self._online.complete(pending, actor)
            outcome = self._replay_claimed(claim, corrected, actor)
            return ReplayOutcome(outcome.run_ids, completed + outcome.replayed, outcome.still_quarantined)
        except BaseException:
            self._release(claim)
            self._online.free(pending, pending.ids)  # those not completed: refused, or their write failed
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
                stamp = claims.renew(session, claim)
            claim.stamp = stamp
            files = ChunkFiles(run.run_id, 0, 0, [])  # the replay run's counter, 0 before it
            undelivered, paths, before = self._write_replay(group, files)  # an intent before the files
            done = [group.members[i].id for i in group.passing if i not in undelivered]
            batch = group.publish is None
            status = quarantine.ONLINE_PENDING if batch else quarantine.REPLAYED
            files.adding = len(done)
            try:  # those an earlier replay published are committed with what the stream holds
                self._commit_replay(run, claim, group, done, {**corrected, **before}, actor, status, files)
            except claims.ClaimLost:
                # Refused before its commit wrote anything: no run counts the rows this replay stored,
                # and the replay that took the records over stores them itself. Left in place they were
                # an accepted row stored twice; removed, the records this claim still holds go back.
                if not self.batch.remove_offline(paths):
                    claim.ids = [record_id for record_id in claim.ids if record_id not in done]
                raise
            except BaseException:
                # Written but not marked: they stay claimed (``replaying``), not handed back to the
                # quarantine, where a retry would write them again at once; unless the commit did not
                # land and took the written files with it (``chunk_commit``): nothing of them is stored.
                if not files.removed:
                    claim.ids = [record_id for record_id in claim.ids if record_id not in done]
                raise
            if isinstance(group.publish, RedisPublisher):  # committed replayed: never published again
                committed = set(done)
                group.publish.forget(
                    [record_identity(m.id, m.created_at_us) for m in group.members if m.id in committed]
                )  # cut to a grace, best effort (logged); the markers' TTL is the backstop
            still += sorted(group.new_reasons)
            run_ids.append(run.run_id)
            if batch and done:  # committed online_pending, held under the claim's stamp
                hold = Claim(done, claim.stamp, [])
                self._online.write(
                    group.view, group.entity, group.accepted, hold, f"run {run.run_id}", replayed
                )
                self._online.finish(hold)
            replayed += done
            if undelivered:
                raise Unavailable(
                    f"{len(undelivered)} records of view {group.view.spec.name!r} were not acknowledged by"
                    f" its stream ({next(iter(undelivered.values()))}); they stay quarantined. Already"
                    f" replayed (runs {', '.join(run_ids)}): {replayed or 'none'}"
                )
            if before:
                raise FailedPrecondition(
                    f"records {sorted(before)} of view {group.view.spec.name!r} were published already, by a"
                    " replay whose answer was lost, with other payloads than this replay's; the stream holds"
                    " those, so the records are marked replayed with them and this replay's were not"
                    f" published. Already replayed (runs {', '.join(run_ids)}): {replayed}"
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
                claims.release(session, claim)
        except Exception:
            _log.exception(
                "could not hand back claimed records %s; a replay takes them over later", claim.ids
            )

    def _prepare_replay(self, members: list[QuarantineRow], corrected: Mapping[int, str]) -> _ReplayGroup:
        """Everything that can refuse a group's replay, with nothing written yet."""
        view, entity = self._resolve(members[0].view, members[0].version)
        payloads = [parse_payload(corrected.get(row.id, row.payload), row.id) for row in members]
        # Each record judged alone (validation: judged_alone): as a batch of its own, a record with a null
        # its max_null_fraction allowed had a null fraction of 1.0, and was quarantined again for good.
        alone = judged_alone(view, entity)
        records, found = replay_table(view, entity, payloads)  # as the reader they go to reads them
        result = validate(
            view, entity, records, now=datetime.now(UTC), null_fractions=alone,
            max_key_bytes=self.batch.max_key_bytes, rejected_before=found,
        )  # fmt: skip
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
        # Stamped once: the offline rows and their online write carry the same ingestion time.
        accepted = stamp_ingested(result.accepted)
        return _ReplayGroup(view, entity, members, payloads, accepted, new_reasons, passing, publish)

    def _write_replay(
        self, group: _ReplayGroup, files: ChunkFiles
    ) -> tuple[dict[int, str], list[str], dict[int, str]]:
        """Writes a group's passing records (a batch view's to the offline store only); returns, by
        member index, the events its stream did not acknowledge (never written: they stay quarantined),
        the offline files written (their intent committed first and set on ``files``), and by record id
        the payloads an earlier replay whose answer was lost published instead of this one's
        (``replay_publish``: a record is published once)."""
        if not group.passing:
            return {}, [], {}
        if group.publish is None:  # online once the offline write is committed (``OnlineCompletion.write``)
            return {}, self.batch.write_offline(group.view, group.accepted, files), {}
        events = [group.payloads[i] for i in group.passing]  # each publisher writes them its way
        rows = [group.members[i] for i in group.passing]
        results = group.publish(events, [record_identity(row.id, row.created_at_us) for row in rows])
        undelivered = {i: r for i, r in zip(group.passing, results, strict=True) if isinstance(r, str)}
        before = {
            row.id: r.payload for row, r in zip(rows, results, strict=True) if isinstance(r, PublishedBefore)
        }
        return undelivered, [], before

    def _commit_replay(
        self,
        run: RunSource,
        claim: Claim,
        group: _ReplayGroup,
        done: list[int],
        corrected: Mapping[int, str],
        actor: str,
        status: str,
        files: ChunkFiles,
    ) -> None:
        """Commits one written group: its records' statuses (``done`` ones ``status``), the run's counters
        and the audit entry; records its stream did not take go back to the quarantine as they were. A
        commit that fails removes the group's offline ``files`` unless it committed (``chunk_commit``)."""
        members = [row.id for row in group.members]
        stored_at: dict[int, int] = {}
        if status == quarantine.ONLINE_PENDING:  # kept, so a later replay writes online what is stored
            stored_at = ingestion_stamps([group.members[i].id for i in group.passing], group.accepted)
        with chunk_transaction(self._sessions, files, self.batch.remove_offline) as session:
            fresh = claims.held(session, claim, members)
            lost = [record_id for record_id in members if record_id not in fresh]
            if lost:  # only a write that outlasted the lease: another replay may write them too
                written = [record_id for record_id in lost if record_id in done]
                after = (
                    "the rows it stored offline for this group are removed, and that replay writes them"
                    if group.publish is None
                    else f"those it published ({written or 'none'}) may be published twice (to Kafka; a"
                    " Redis stream takes a record once, replay_publish.py)"
                )
                raise claims.ClaimLost(
                    f"this replay's claim on quarantined records {lost} of view {group.view.spec.name!r}"
                    " lapsed while it wrote them (the write took longer than the lease) and another replay"
                    f" took them over; {after}"
                )
            for record_id in done:
                row = fresh[record_id]
                row.payload = corrected.get(record_id, row.payload)
                quarantine.set_status(session, [row], status)
                if status == quarantine.ONLINE_PENDING:  # held by this replay while it writes them online
                    row.updated_at_us = claim.stamp
                    row.ingested_at_us = stored_at[record_id]  # its stored row's ingested_ts
            for record_id, reason in group.new_reasons.items():
                row = fresh[record_id]
                row.payload = corrected.get(record_id, row.payload)
                quarantine.set_status(session, [row], quarantine.QUARANTINED, reason)
            unsent = set(members) - set(done) - set(group.new_reasons)
            quarantine.set_status(
                session, [fresh[record_id] for record_id in sorted(unsent)], quarantine.QUARANTINED
            )
            counters = quarantine.ensure_run(session, run)
            if group.publish is None:  # stored by this run: accepted here
                counters.records_in += len(done)
                counters.accepted += len(done)
            else:  # published to the view's stream: its stream run counts them in, accepted or not
                counters.published += len(done)
            counters.records_in += len(group.new_reasons)
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

    def _publisher(self, view: pb.FeatureView) -> Publish:
        """How to publish events again to a streaming view's source, where its materializer reads: a Redis
        stream, or the topic of a ``kafka://`` source (an XADD to a Redis stream of that name would be
        read by nobody and the records lost). Refuses, before anything is written, a view with no source
        or a Kafka source this control plane has no client for."""
        stream = view.spec.source.uri
        if not stream:
            raise FailedPrecondition(f"streaming view {view.spec.name!r} has no source stream to replay into")
        if stream.startswith("kafka://"):
            return kafka_publisher(view, stream, self._kafka_options)
        # at most once per record, even when retried
        grace_s = math.ceil(2 * self._claim_lease_s)  # a stalled replay's late publish finds the marker
        return redis_publisher(self._client, stream, self._replay_marker_ttl_s, grace_s)


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
