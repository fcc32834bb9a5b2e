"""Writing prediction-log entries the way the data plane does: through its own writer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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
