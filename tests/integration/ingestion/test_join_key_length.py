"""A join key longer than the limit (``AETHER_MAX_JOIN_KEY_BYTES``, 1,024 bytes of UTF-8 by default) is
quarantined on every path, batch, Redis stream and Kafka, its reason naming the key column, its length
and the limit; records in = accepted + quarantined (a real redis-server, SQLite quarantine and offline
store, librdkafka's mock Kafka cluster, the materializer as its own process).

Before, a 5 MB key became a 5 MB Redis key and a 5 MB row of the offline store."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.state_keys import StateKeys
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.streaming_support import (
    MODULE,
    USER,
    materialize_kafka,
    materializer_env,
    registry_db,
    run_until_idle,
    spend_view,
    wait_until_handled,
)
from tests.support.kafka_mock import KafkaMockCluster

OPTIONS = MaterializerOptions(count=500, block_ms=50, reclaim_every_s=0.1, lag_every_s=0.1)
LIMIT = "longer than the limit of 1,024 bytes for a join key (AETHER_MAX_JOIN_KEY_BYTES)"
AT_LIMIT = "k" * 1024  # 1,024 bytes: accepted
ONE_OVER = "k" * 1025
WIDE = "é" * 513  # 513 characters, 1,026 bytes of UTF-8
HUGE = "x" * (5 * 2**20)


def _reasons() -> list[str]:
    return sorted(
        [
            f"user_id: {'k' * 100!r}... (1025 characters) is 1,025 bytes of UTF-8, {LIMIT}",
            f"user_id: {'é' * 100!r}... (513 characters) is 1,026 bytes of UTF-8, {LIMIT}",
            f"user_id: {'x' * 100!r}... (5242880 characters) is 5,242,880 bytes of UTF-8, {LIMIT}",
        ]
    )


def _profile_view(env: Env) -> None:
    env.registry.create_entity(USER)
    spec = pb.FeatureViewSpec(
        name="profile", entity="user", features=[pb.Feature(name="age", value_type=t.INT64)]
    )
    env.registry.create_feature_view(spec, pb.FeatureViewMetadata())


def _profile(user_ids: list[str]) -> pa.Table:
    n = len(user_ids)
    return pa.table(
        {
            "user_id": user_ids,
            "event_ts": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            "age": [30] * n,
        }
    )


def test_batch_quarantines_a_join_key_longer_than_the_limit(env: Env) -> None:
    _profile_view(env)
    outcome = env.service.ingest("profile", 1, [_profile([AT_LIMIT, ONE_OVER, WIDE, HUGE, "alice"])])

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (5, 2, 3)
    held = env.service.list_quarantined(run_id=outcome.run_id)
    assert sorted(record.reason for record in held) == _reasons()
    stored = pa.Table.from_batches(env.offline.scan("profile", 1))
    assert sorted(stored.column("user_id").to_pylist()) == ["alice", AT_LIMIT]
    expected = sorted(online_key("user", [u], "profile", 1) for u in ("alice", AT_LIMIT))
    assert sorted(env.client.keys("ae:*")) == expected


def test_a_service_takes_its_limit_from_its_settings(env: Env, tmp_path: Path) -> None:
    """``ControlPlaneSettings.max_join_key_bytes`` (AETHER_MAX_JOIN_KEY_BYTES) is the batch's limit."""
    _profile_view(env)
    service = IngestionService(
        env.sessions, env.registry, OfflineStore(str(tmp_path / "off2")), env.client, max_join_key_bytes=5
    )
    outcome = service.ingest("profile", 1, [_profile(["alice", "alice2"])])

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    (held,) = service.list_quarantined(run_id=outcome.run_id)
    assert held.reason == (
        "user_id: 'alice2' is 6 bytes of UTF-8, longer than the limit of 5 bytes for a join key"
        " (AETHER_MAX_JOIN_KEY_BYTES)"
    )


def test_redis_stream_quarantines_a_join_key_longer_than_the_limit(tmp_path: Path, redis_url: str) -> None:
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    view, entity = spend_view(sessions, "events:spend")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    for user in (AT_LIMIT, ONE_OVER, WIDE, HUGE, "alice"):
        client.xadd("events:spend", {"user_id": user, "event_ts": now, "amount": "2"})
    source = RedisStreamSource(client, "events:spend", OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)
    materializer.flush()

    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        held = quarantine.list_quarantined(session, view="spend")
    assert (counts.records_in, counts.accepted, counts.quarantined) == (5, 2, 3)
    assert sorted(record.reason for record in held) == _reasons()
    expected = sorted(online_key("user", [u], "spend", 1) for u in ("alice", AT_LIMIT))
    assert sorted(client.keys("ae:*")) == expected


def test_kafka_quarantines_a_join_key_longer_than_the_limit(
    kafka: KafkaMockCluster, tmp_path: Path, redis_url: str
) -> None:
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    topic = "long-keys"
    view, entity = spend_view(sessions, f"kafka://{kafka.bootstrap}/{topic}")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    users = (AT_LIMIT, ONE_OVER, WIDE, "x" * 100_000, "alice")  # under the mock broker's record size
    kafka.publish(topic, [{"user_id": u, "event_ts": now, "amount": "2"} for u in users], keys=["k"] * 5)
    materialize_kafka(kafka.bootstrap, topic, view, entity, client, sessions, tmp_path / "off", expected=5)

    with read_session(sessions) as session:
        held = quarantine.list_quarantined(session, view="spend")
        (run,) = quarantine.list_runs(session, "spend")
    assert (run.records_in, run.accepted, run.quarantined) == (5, 2, 3)
    huge = f"user_id: {'x' * 100!r}... (100000 characters) is 100,000 bytes of UTF-8, {LIMIT}"
    reasons = [reason for reason in _reasons() if "5,242,880" not in reason] + [huge]
    assert sorted(record.reason for record in held) == sorted(reasons)
    expected = sorted(online_key("user", [u], "spend", 1) for u in ("alice", AT_LIMIT))
    assert sorted(client.keys("ae:*")) == expected


def test_the_materializer_process_takes_its_limit_from_aether_max_join_key_bytes(
    tmp_path: Path, redis_url: str
) -> None:
    url, sessions, _clicks, _sensor = registry_db(tmp_path)
    spend_view(sessions, "events:spend")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    for user in ("alice", "alice2"):
        client.xadd("events:spend", {"user_id": user, "event_ts": now, "amount": "2"})
    env = {**materializer_env(tmp_path, url, redis_url), "AETHER_MAX_JOIN_KEY_BYTES": "5"}
    command = [*MODULE, "--view", "spend", "--block-ms", "50"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert "aether materializer running" in process.stdout.readline()
        keys = StateKeys.of("spend", 1, "materializer")
        wait_until_handled(client, keys, 2, timeout_s=60, settled=lambda: _counted(sessions) == 2)
    finally:
        process.terminate()
        process.wait(30)

    with read_session(sessions) as session:
        (held,) = quarantine.list_quarantined(session, view="spend")
    assert held.reason == (
        "user_id: 'alice2' is 6 bytes of UTF-8, longer than the limit of 5 bytes for a join key"
        " (AETHER_MAX_JOIN_KEY_BYTES)"
    )
    assert client.keys("ae:*") == [online_key("user", ["alice"], "spend", 1)]


def _counted(sessions: sessionmaker[Session]) -> int:
    with read_session(sessions) as session:
        return sum(run.records_in for run in quarantine.list_runs(session, "spend"))
