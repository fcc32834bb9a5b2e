"""A real control plane serving ingestion (SQLite and PostgreSQL via ``db_url``, a real redis-server),
with a sensor entity and two registered views: ``climate`` (batch) and ``clicks`` (stream aggregations);
and the same registry behind the transport-free ``IngestionService`` on a SQLite file (``env``) or on
PostgreSQL (``postgresql_env``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.api.ingestion import add_to_server
from control_plane.db import (
    create_db_engine,
    create_session_factory,
    read_session,
    upgrade_to_head,
    write_session,
)
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion import quarantine
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.quarantine import RunSource, record_outcome
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.tables import IngestionIntentRow
from control_plane.offline.store import OfflineStore
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.support.kafka_mock import KafkaMockCluster
from tests.support.postgres_server import PostgresServer
from tests.support.s3_server import FakeS3Server

ENTITY = pb.Entity(name="sensor", join_keys=[pb.JoinKey(name="sensor_id", value_type=t.INT64)])
CLIMATE = pb.FeatureViewSpec(
    name="climate",
    entity="sensor",
    features=[
        pb.Feature(
            name="temperature_c",
            value_type=t.FLOAT32,
            validation=pb.ValidationRule(min_value=-40, max_value=60, max_null_fraction=0.5),
        ),
        pb.Feature(name="mode", value_type=t.INT32, validation=pb.ValidationRule(allowed_values=[1, 2, 3])),
    ],
)
CLICKS = pb.FeatureViewSpec(
    name="clicks",
    entity="sensor",
    source=pb.Source(kind="stream", uri="events:clicks"),
    features=[
        pb.Feature(name="clicks_10m", value_type=t.INT64),
        pb.Feature(name="amount_sum_1h", value_type=t.FLOAT64),
        pb.Feature(name="amount_mean_1h", value_type=t.FLOAT64),
        pb.Feature(name="amount_max_24h", value_type=t.FLOAT64),
        pb.Feature(name="amount_last_1h", value_type=t.FLOAT32),
    ],
    aggregations=[
        pb.Aggregation(column="amount", function="count", window_seconds=600, output="clicks_10m"),
        pb.Aggregation(column="amount", function="sum", window_seconds=3600, output="amount_sum_1h"),
        pb.Aggregation(column="amount", function="mean", window_seconds=3600, output="amount_mean_1h"),
        pb.Aggregation(column="amount", function="max", window_seconds=86400, output="amount_max_24h"),
        pb.Aggregation(column="amount", function="last", window_seconds=3600, output="amount_last_1h"),
    ],
)


@pytest.fixture
async def control_plane(tmp_path: Path, db_url: str, redis_url: str) -> AsyncIterator[ControlPlaneServer]:
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=db_url, redis_url=redis_url, listen_addr="127.0.0.1:0"
    )
    server = await start_server(settings, services=[add_to_server])
    server.registry.create_entity(ENTITY)
    server.registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
    server.registry.create_feature_view(CLICKS, pb.FeatureViewMetadata())
    yield server
    await server.stop()


@dataclass(frozen=True)
class RegistryDb:
    """A migrated metadata database holding :data:`ENTITY` and one view of it (``registry_on``)."""

    engine: Engine
    sessions: sessionmaker[Session]
    registry: FeatureRegistry
    entity: pb.Entity
    view: pb.FeatureView


def registry_on(url: str, view: pb.FeatureViewSpec = CLICKS) -> RegistryDb:
    """The database at ``url`` migrated, with :data:`ENTITY` and ``view`` (version 1) registered; its
    engine is the caller's to dispose of."""
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    entity = registry.create_entity(ENTITY)
    return RegistryDb(
        engine, sessions, registry, entity, registry.create_feature_view(view, pb.FeatureViewMetadata())
    )


@dataclass
class Env:
    service: IngestionService
    sessions: sessionmaker[Session]
    registry: FeatureRegistry
    offline: OfflineStore
    client: redis.Redis

    def quarantine(self, view: str, payload: dict[str, Any], reason: str, key: str = "0") -> int:
        """Quarantines one record of ``view`` v1 as a run of its own would; returns the record's id."""
        run = RunSource(f"run-{uuid.uuid4().hex}", view, 1, "batch", "test")
        rejected = pa.table({"payload": [json.dumps(payload)], "reason": [reason]})
        with write_session(self.sessions) as session:
            record_outcome(session, run, accepted=0, rejected=rejected, record_keys=[key])
        (record,) = self.service.list_quarantined(run_id=run.run_id)
        return record.id


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> Iterator[Env]:
    yield from _env(f"sqlite:///{tmp_path / 'aether.db'}", tmp_path, redis_url)


@pytest.fixture
def postgresql_env(tmp_path: Path, redis_url: str, postgres_server: PostgresServer) -> Iterator[Env]:
    """``env`` with its metadata on PostgreSQL (the session's throwaway cluster)."""
    yield from _env(postgres_server.fresh_url(), tmp_path, redis_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_env(request: pytest.FixtureRequest) -> Env:
    """``env`` on each metadata backend: SQLite serializes writers, PostgreSQL locks rows."""
    env: Env = request.getfixturevalue("env" if request.param == "sqlite" else "postgresql_env")
    return env


def _env(db_url: str, tmp_path: Path, redis_url: str) -> Iterator[Env]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    registry.create_entity(ENTITY)
    registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
    registry.create_feature_view(CLICKS, pb.FeatureViewMetadata())
    offline = OfflineStore(str(tmp_path / "offline"))
    client = redis.Redis.from_url(redis_url)
    yield Env(IngestionService(sessions, registry, offline, client), sessions, registry, offline, client)
    client.close()
    engine.dispose()


@pytest.fixture
def kafka() -> Iterator[KafkaMockCluster]:
    """An in-process Kafka cluster (librdkafka's mock, tests/support/kafka_mock.py)."""
    cluster = KafkaMockCluster()
    yield cluster
    cluster.close()


# The intents' tests (test_chunk_intents.py, test_intent_recovery_faults.py) --------------------------


@dataclass
class Stand:
    db: RegistryDb
    offline: OfflineStore
    client: redis.Redis
    batch: BatchMaterializer

    def runs(self) -> list[quarantine.RunCounts]:
        with read_session(self.db.sessions) as session:
            return quarantine.list_runs(session, "climate")

    def counted(self) -> int:
        runs = self.runs()
        assert all(run.records_in == run.accepted + run.quarantined for run in runs)
        return sum(run.accepted for run in runs)

    def stored_rows(self) -> int:
        return sum(batch.num_rows for batch in self.offline.scan("climate", 1))

    def intents(self) -> list[IngestionIntentRow]:
        with read_session(self.db.sessions) as session:
            return list(session.scalars(select(IngestionIntentRow)))


def make_stand(db_url: str, redis_url: str, root: str) -> Iterator[Stand]:
    db = registry_on(db_url, CLIMATE)
    offline = OfflineStore(root)
    client = redis.Redis.from_url(redis_url)
    yield Stand(db, offline, client, BatchMaterializer(db.sessions, offline, client))
    client.close()
    db.engine.dispose()


@pytest.fixture
def stand(db_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stand]:
    """SQLite and PostgreSQL, a local offline store."""
    yield from make_stand(db_url, redis_url, str(tmp_path / "offline"))


@pytest.fixture(params=["sqlite", "postgresql", "sqlite-s3"])
def any_stand(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Stand]:
    """SQLite and PostgreSQL with a local offline store, and SQLite with an S3-style object store (a fake
    S3 endpoint of the test's own)."""
    if request.param == "postgresql":
        yield from make_stand(request.getfixturevalue("postgres_server").fresh_url(), redis_url,
                              str(tmp_path / "offline"))  # fmt: skip
        return
    url = f"sqlite:///{tmp_path / 'aether.db'}"
    if request.param == "sqlite":
        yield from make_stand(url, redis_url, str(tmp_path / "offline"))
        return
    s3 = FakeS3Server()
    try:
        yield from make_stand(url, redis_url, s3.uri("features"))
    finally:
        s3.close()
