"""Predict over a real data plane with its near cache on (the default; the other serving tests turn it
off, see tests/conftest.py): a repeated entity is served without a Redis round trip, the cache's counters
show in its metrics, and a changed feature is served once its invalidation has arrived."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import grpc.aio
import numpy as np
import pytest
import redis

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.sdk.inference import build_predict_request, decode_predict_response
from control_plane.features.online_writer import OnlineWriter
from data_plane.server import DataPlaneHandle, start_server
from tests.integration.serving.conftest import FEATURES, NOW_US, STORED, serving_settings
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import writable

pytestmark = pytest.mark.integration


@pytest.fixture
async def cached_plane(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[DataPlaneHandle]:
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [[str(k)] for k in STORED], np.stack(list(STORED.values())), NOW_US)
    handle = await start_server(serving_settings(tmp_path, own_redis.url, near_cache_mb=64.0))
    yield handle
    await handle.stop(None)


def _mget_calls(client: redis.Redis) -> int:
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return stats.get("cmdstat_mget", {}).get("calls", 0)


async def test_a_repeated_entity_is_served_from_the_near_cache_and_a_change_once_invalidated(
    cached_plane: DataPlaneHandle, own_redis: RedisServer
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cached_plane.port}") as channel:
        stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        request = build_predict_request("scorer", [{"driver_id": 1}])
        first = decode_predict_response(await stub.Predict(request, timeout=5))
        calls = _mget_calls(client)
        again = decode_predict_response(await stub.Predict(request, timeout=5))
        assert _mget_calls(client) == calls  # no round trip for the features
        np.testing.assert_array_equal(first.outputs["output"], again.outputs["output"])
        text = cached_plane.metrics.render().decode()  # what /metrics serves
        assert "aether_near_cache_hits_total 1.0" in text

        OnlineWriter(client).write(writable(FEATURES), [["1"]], np.full((1, 8), 9.0, np.float32), NOW_US + 1)
        await cached_plane.redis.sync(5.0)
        changed = decode_predict_response(await stub.Predict(request, timeout=5))
        assert not np.array_equal(changed.outputs["output"], first.outputs["output"])
        assert _mget_calls(client) == calls + 1  # the invalidated entry was read again
    client.close()
