"""The transport-free core behind ``aether.v1.Ingestion``: batch ingestion of Arrow data, materialization
of a Parquet source, and the quarantine (list, show, replay, discard) with run counters."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument, Unavailable
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
from control_plane.ingestion.quarantine import QuarantinedRecord, RunCounts, RunSource
from control_plane.ingestion.tables import QuarantineRow
from control_plane.ingestion.validation import validate
from control_plane.offline.store import OfflineStore


@dataclass(frozen=True)
class ReplayOutcome:
    run_id: str
    replayed: list[int]
    still_quarantined: list[QuarantinedRecord]


def records_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Records (parsed JSON payloads) as a table of string columns: every value as its JSON text
    (strings as they are), so columns never mix types and validation's casts decide what a value is."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return pa.table(
        {name: pa.array([_text(record.get(name)) for record in records], pa.string()) for name in names}
    )


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
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._client = client
        self.batch = BatchMaterializer(sessions, offline, client)

    def _resolve(self, view: str, version: int) -> tuple[pb.FeatureView, pb.Entity]:
        found = self._registry.get_feature_view(view, version)
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
        try:
            chunks = parquet_batches(path)
            return self.batch.materialize(
                found, entity, chunks, window=window, source_id=path, strict=strict, actor=actor
            )
        except (FileNotFoundError, pa.ArrowInvalid) as exc:
            raise InvalidArgument(f"cannot read Parquet source {path!r}: {exc}") from exc

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
            rows = quarantine.get_rows(session, ids)
            _refuse_unless_quarantined(rows)
            quarantine.set_status(session, rows, quarantine.DISCARDED)
            audit(
                session, actor=actor, action="quarantine.discard", object_type="quarantine",
                object_id=",".join(str(i) for i in ids), before=None, after={"discarded": list(ids)},
            )  # fmt: skip
        return len(ids)

    def replay(self, ids: Sequence[int], corrected: Mapping[int, str], actor: str = "") -> ReplayOutcome:
        """See the RPC's comment. Batch views get the passing records written offline and online; a
        streaming view gets them published again to its stream, where its materializer aggregates them."""
        with read_session(self._sessions) as session:
            rows = quarantine.get_rows(session, ids)
        _refuse_unless_quarantined(rows)
        unknown = set(corrected) - set(ids)
        if unknown:
            raise InvalidArgument(f"corrected records {sorted(unknown)} are not among the replayed ids")
        groups: dict[tuple[str, int], list[QuarantineRow]] = {}
        for row in rows:
            groups.setdefault((row.view, row.version), []).append(row)
        run_id = f"replay-{uuid.uuid4().hex}"
        replayed: list[int] = []
        new_reasons: dict[int, str] = {}
        for (view_name, version), members in groups.items():
            view, entity = self._resolve(view_name, version)
            payloads = [_parse(corrected.get(row.id, row.payload), row.id) for row in members]
            result = validate(view, entity, records_table(payloads), now=datetime.now(UTC))
            for index, reason in zip(
                result.rejected.column("row_index").to_pylist(),
                result.rejected.column("reason").to_pylist(),
                strict=True,
            ):
                new_reasons[members[index].id] = reason
            passing = [i for i, row in enumerate(members) if row.id not in new_reasons]
            if passing:
                if view.spec.aggregations:
                    self._republish(view, [payloads[i] for i in passing])
                else:
                    self.batch.write_offline(view, result.accepted)
                    self.batch.write_online(view, entity, result.accepted)
            replayed += [members[i].id for i in passing]
        return self._finish_replay(run_id, rows, replayed, new_reasons, corrected, actor)

    def _finish_replay(
        self,
        run_id: str,
        rows: Sequence[QuarantineRow],
        replayed: list[int],
        new_reasons: dict[int, str],
        corrected: Mapping[int, str],
        actor: str,
    ) -> ReplayOutcome:
        first = rows[0]
        with write_session(self._sessions) as session:
            fresh = {row.id: row for row in quarantine.get_rows(session, [row.id for row in rows])}
            for record_id in replayed:
                row = fresh[record_id]
                row.payload = corrected.get(record_id, row.payload)
                quarantine.set_status(session, [row], quarantine.REPLAYED)
            for record_id, reason in new_reasons.items():
                row = fresh[record_id]
                row.payload = corrected.get(record_id, row.payload)
                quarantine.set_status(session, [row], quarantine.QUARANTINED, reason)
            run = quarantine.ensure_run(
                session, RunSource(run_id, first.view, first.version, "replay", f"quarantine:{first.run_id}")
            )
            run.records_in, run.accepted, run.quarantined = len(rows), len(replayed), len(new_reasons)
            audit(
                session, actor=actor, action="quarantine.replay", object_type="quarantine",
                object_id=",".join(str(row.id) for row in rows), before=None,
                after={"run_id": run_id, "replayed": replayed, "still_quarantined": sorted(new_reasons)},
            )  # fmt: skip
            still = [quarantine.get_quarantined(session, record_id) for record_id in sorted(new_reasons)]
        return ReplayOutcome(run_id, replayed, still)

    def _republish(self, view: pb.FeatureView, payloads: list[dict[str, Any]]) -> None:
        """Publishes the events again to the view's source stream: a Redis stream, or a Kafka topic for a
        ``kafka://`` source (where the materializer reads; an XADD to a Redis stream of that name would
        be read by nobody and the records lost)."""
        stream = view.spec.source.uri
        if not stream:
            raise FailedPrecondition(f"streaming view {view.spec.name!r} has no source stream to replay into")
        events = [
            {k: v for k, v in ((k, _text(v)) for k, v in payload.items()) if v is not None}
            for payload in payloads
        ]
        if stream.startswith("kafka://"):
            self._produce_to_kafka(view, stream, events)
            return
        pipeline = self._client.pipeline(transaction=False)
        for event in events:
            pipeline.xadd(stream, {field: value for field, value in event.items()})
        pipeline.execute()

    def _produce_to_kafka(self, view: pb.FeatureView, url: str, events: list[dict[str, str]]) -> None:
        try:
            from control_plane.ingestion.streaming.kafka_source import parse_kafka_url, produce
        except ImportError as exc:  # confluent-kafka is the optional ``kafka`` extra
            raise FailedPrecondition(
                f"streaming view {view.spec.name!r} reads from Kafka ({url}), but this control plane has no"
                " Kafka client (install the 'kafka' extra) to publish replayed records; they stay"
                " quarantined"
            ) from exc
        try:
            bootstrap, topic = parse_kafka_url(url)
        except ValueError as exc:
            raise FailedPrecondition(f"streaming view {view.spec.name!r}: {exc}") from exc
        failures = [error for error in produce(bootstrap, topic, events) if error is not None]
        if failures:
            raise Unavailable(
                f"Kafka at {bootstrap} did not acknowledge {len(failures)} of {len(events)} replayed records"
                f" of view {view.spec.name!r} (first: {failures[0]}); they stay quarantined"
            )


def _parse(payload: str, record_id: int) -> dict[str, Any]:
    try:
        parsed = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"record {record_id}: payload is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidArgument(f"record {record_id}: payload must be a JSON object")
    return parsed


def _refuse_unless_quarantined(rows: Sequence[QuarantineRow]) -> None:
    for row in rows:
        if row.status != quarantine.QUARANTINED:
            raise FailedPrecondition(f"quarantined record {row.id} is {row.status}, not quarantined")
