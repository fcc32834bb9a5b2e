"""The transport-free ingestion service against a real redis-server, a real SQLite file and a real offline
store: what a batch run and a replay write when input is bad, and that nothing half-written remains."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.service import IngestionService
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import CLICKS, CLIMATE, ENTITY

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Env:
    service: IngestionService
    registry: FeatureRegistry
    offline: OfflineStore
    client: redis.Redis


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> Iterator[Env]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    registry = FeatureRegistry(sessions)
    registry.create_entity(ENTITY)
    registry.create_feature_view(CLIMATE, pb.FeatureViewMetadata())
    registry.create_feature_view(CLICKS, pb.FeatureViewMetadata())
    offline = OfflineStore(str(tmp_path / "offline"))
    client = redis.Redis.from_url(redis_url)
    yield Env(IngestionService(sessions, registry, offline, client), registry, offline, client)
    client.close()
    engine.dispose()


def offline_rows(env: Env, view: str) -> list[object]:
    """The join keys of the offline rows of ``view`` v1, in write order."""
    return [key for batch in env.offline.scan(view, 1) for key in batch.column("sensor_id").to_pylist()]


def test_a_nan_join_key_is_quarantined_and_the_rest_of_the_run_reaches_both_stores(env: Env) -> None:
    # pandas stores an int key column with a gap as float64 with NaN.
    table = pa.table(
        {
            "sensor_id": pa.array([1.0, float("nan")]),
            "event_ts": [NOW, NOW],
            "temperature_c": [20.0, 21.0],
            "mode": [1, 2],
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    assert env.client.get(online_key("sensor", ["1"], "climate", 1)) is not None
    assert offline_rows(env, "climate") == [1]
    (record,) = env.service.list_quarantined(view="climate")
    assert "sensor_id: required join key is null (NaN or missing)" in record.reason
    assert json.loads(record.payload)["sensor_id"] == "NaN"
