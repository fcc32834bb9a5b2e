"""Writing prediction-log entries the way the data plane does: through its own writer; and a Redis that
refuses those writes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import redis

from data_plane.prediction_log import PredictionLog, PredictionRecord
from data_plane.redis_client import RedisClient


async def append_records(redis_url: str, stream: str, records: Sequence[PredictionRecord]) -> None:
    """Appends ``records`` in order to ``stream`` and returns once the writer has written them all."""
    client = RedisClient(redis_url)
    writer = PredictionLog(client, stream, sample_rate=1.0, maxlen=1000)
    writer.start()
    for item in records:
        writer.record(item)
    for _ in range(1000):  # let the writer's task drain: stop() cancels a batch still in flight
        if writer.written >= len(records):
            break
        await asyncio.sleep(0.01)
    await writer.stop()
    await client.close()


@contextmanager
def writes_refused(redis_url: str) -> Iterator[None]:
    """Redis answers every write with OOM (``maxmemory`` 1 byte under ``noeviction``: what a full Redis
    does to the data plane's XADDs) until the block ends, then takes writes again. Reads still work. The
    test server is shared, so the settings are put back whatever happens."""
    admin = redis.Redis.from_url(redis_url)
    policy = cast(dict[str, str], admin.config_get("maxmemory-policy"))["maxmemory-policy"]
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    try:
        yield
    finally:
        admin.config_set("maxmemory", 0)
        admin.config_set("maxmemory-policy", policy)
        admin.close()
