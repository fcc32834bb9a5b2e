"""What a batch run's online part costs: one run of ``--rows`` rows over ``--entities`` entities (a
SQLite file, a real redis-server, the offline store on local disk), best of ``--repeat`` runs.

    .venv/bin/python benchmarks/batch_online_write_ahead.py [--rows 1000000] [--entities 100000]

A run files its latest row per entity as ``online_pending`` records in its last chunk's transaction and
removes them once its online write succeeds (the write-ahead that keeps a crash between the two from
losing the online values); this prints the run's time, to set against a checkout without it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.ingestion.batch import PARQUET_BATCH_ROWS
from control_plane.ingestion.service import IngestionService
from control_plane.offline.store import OfflineStore
from tests.support.redis_server import RedisServer

ENTITY = pb.Entity(name="sensor", join_keys=[pb.JoinKey(name="sensor_id", value_type=t.INT64)])
VIEW = pb.FeatureViewSpec(
    name="climate",
    entity="sensor",
    features=[
        pb.Feature(name="temperature_c", value_type=t.FLOAT32),
        pb.Feature(name="mode", value_type=t.INT32),
        pb.Feature(name="humidity", value_type=t.FLOAT64),
    ],
)


def table(rows: int, entities: int) -> pa.Table:
    rng = np.random.default_rng(7)
    now = datetime.now(UTC).replace(microsecond=0)
    offsets = rng.integers(0, 86_400_000_000, rows)
    return pa.table(
        {
            "sensor_id": pa.array(np.arange(rows) % entities, pa.int64()),
            "event_ts": pa.array(
                (np.datetime64(int((now - timedelta(days=1)).timestamp() * 1e6), "us") + offsets).astype(
                    "datetime64[us]"
                ),
                pa.timestamp("us", "UTC"),
            ),
            "temperature_c": pa.array(rng.normal(20, 5, rows).astype(np.float32)),
            "mode": pa.array(rng.integers(1, 4, rows).astype(np.int32)),
            "humidity": pa.array(rng.random(rows)),
        }
    )


def one_run(data: pa.Table, entities: int, redis_url: str) -> float:
    with tempfile.TemporaryDirectory(prefix="aether-bench-") as home:
        engine = create_db_engine(f"sqlite:///{home}/aether.db")
        upgrade_to_head(engine)
        sessions = create_session_factory(engine)
        registry = FeatureRegistry(sessions)
        registry.create_entity(ENTITY)
        registry.create_feature_view(VIEW, pb.FeatureViewMetadata())
        client = redis.Redis.from_url(redis_url)
        client.flushall()
        service = IngestionService(sessions, registry, OfflineStore(f"{home}/offline"), client)
        chunks = [data.slice(i, PARQUET_BATCH_ROWS) for i in range(0, data.num_rows, PARQUET_BATCH_ROWS)]
        started = time.perf_counter()
        outcome = service.ingest("climate", 1, chunks)
        elapsed = time.perf_counter() - started
        assert (outcome.accepted, outcome.online_rows) == (data.num_rows, entities), outcome
        client.close()
        engine.dispose()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    data = table(args.rows, args.entities)
    server = RedisServer()
    server.start()
    try:
        times = [one_run(data, args.entities, server.url) for _ in range(args.repeat)]
    finally:
        server.close()
    print(f"{args.rows} rows, {args.entities} entities: " + ", ".join(f"{s:.2f} s" for s in times)
          + f"; best {min(times):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
