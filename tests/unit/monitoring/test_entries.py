"""Decoding entries the data plane's own prediction-log writer appended to a real Redis Stream."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import redis

from control_plane.monitoring.entries import MalformedEntry, decode_entry
from data_plane.prediction_log import PredictionLog, PredictionRecord
from data_plane.redis_client import RedisClient

STREAM = "test:entries"


def record(**overrides: object) -> PredictionRecord:
    values: dict[str, object] = {
        "request_id": "r1",
        "deployment": "churn",
        "model": "churn-model",
        "version": 3,
        "variant": "primary",
        "role": "served",
        "routing_key": "",
        "ts_us": 1_700_000_000_000_000,
        "entities": [{"id": "1"}, {"id": "2"}],
        "features": np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32),
        "outputs": {
            "probabilities": np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32),
            "label": np.array([1, 0]),
        },
    }
    values.update(overrides)
    return PredictionRecord(**values)  # type: ignore[arg-type]


async def logged_fields(redis_url: str, records: Sequence[PredictionRecord]) -> list[dict[bytes, bytes]]:
    client = RedisClient(redis_url)
    writer = PredictionLog(client, STREAM, sample_rate=1.0, maxlen=1000)
    writer.start()
    for item in records:
        writer.record(item)
    for _ in range(1000):  # let the writer's task drain: stop() cancels a batch still in flight
        if writer.written >= len(records):
            break
        await asyncio.sleep(0.01)
    await writer.stop()
    await client.close()
    reader = redis.Redis.from_url(redis_url)
    entries: Any = reader.xrange(STREAM)
    reader.close()
    return [dict(fields) for _, fields in entries]


async def test_a_sampled_served_entry_decodes_to_float_matrices(redis_url: str) -> None:
    (fields,) = await logged_fields(redis_url, [record()])
    logged = decode_entry(fields)
    assert logged is not None
    assert (logged.request_id, logged.deployment, logged.model, logged.version) == (
        "r1",
        "churn",
        "churn-model",
        3,
    )
    assert logged.features is not None and logged.features.shape == (2, 3) and np.isnan(logged.features[0, 1])
    assert list(logged.outputs) == ["probabilities", "label"]
    np.testing.assert_allclose(logged.outputs["probabilities"], [[0.2, 0.8], [0.9, 0.1]], rtol=1e-6)
    assert logged.outputs["label"].shape == (2, 1) and logged.integer_outputs == {"label"}


async def test_shadow_failed_and_unsampled_entries_carry_nothing_to_monitor(redis_url: str) -> None:
    entries = await logged_fields(
        redis_url,
        [
            record(role="shadow"),
            record(ok=False, error_code="INTERNAL", outputs=None),
            record(entities=None, features=None, outputs=None),
        ],
    )
    assert [decode_entry(fields) for fields in entries] == [None, None, None]


async def test_bytes_that_do_not_match_their_shape_are_malformed(redis_url: str) -> None:
    (fields,) = await logged_fields(redis_url, [record()])
    fields[b"features_shape"] = b"5,3"
    with pytest.raises(MalformedEntry):
        decode_entry(fields)
