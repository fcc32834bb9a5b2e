"""The SDK's entity rows against a real data plane (its online-features servicer on 127.0.0.1) and a real
redis-server: a join-key value is text or a whole number. Anything else was sent as its ``str()``, so
``b"abc"``, ``7.0``, ``None`` or ``True`` read the entity "b'abc'", "7.0", "None" or "True": for a
string join key an entity that does not exist, answered MISSING as if the entity had no features."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
import numpy as np
import pytest
import redis

from clients.errors import InvalidArgument
from clients.sdk.inference import build_predict_request
from clients.sdk.online import MISSING, PRESENT, OnlineFeaturesClient
from control_plane.features.online_writer import OnlineWriter
from data_plane.api.online_features import OnlineFeaturesServicer, add_to_server
from data_plane.catalog import Catalog, RegistryState
from data_plane.reader import OnlineReader, ReadLimits
from data_plane.redis_client import RedisClient
from tests.unit.data_plane.registry_builders import entity, floats, snapshot, view, writable

pytestmark = pytest.mark.integration

ACCOUNT = entity("account", (("account_id", "string"), ("region", "int64")))
BALANCE = view("balance", floats(1), entity="account")


@pytest.fixture
async def target(redis_url: str) -> AsyncIterator[str]:
    OnlineWriter(redis.Redis.from_url(redis_url)).write(
        writable(BALANCE),
        [["abc", "7"], ["7", "7"]],
        np.array([[1.0], [2.0]], np.float32),
        time.time_ns() // 1000,
    )
    state = RegistryState()
    state.catalog = Catalog(snapshot(BALANCE, entities=[ACCOUNT]))
    client = RedisClient(redis_url)
    server = grpc.aio.server()
    add_to_server(
        OnlineFeaturesServicer(OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0))), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    await client.close()


async def test_text_and_whole_numbers_read_their_entities(target: str) -> None:
    rows: list[dict[str, Any]] = [
        {"account_id": "abc", "region": 7},
        {"account_id": "7", "region": np.int64(7)},
        {"account_id": np.str_("abc"), "region": "7"},
    ]
    with OnlineFeaturesClient(target) as client:
        got = await asyncio.to_thread(client.get_online_features, ["balance"], rows)
    block = got.block("balance")
    assert block.values["f0"].tolist() == [1.0, 2.0, 1.0]
    assert block.statuses[:, 0].tolist() == [PRESENT] * 3
    assert MISSING not in block.statuses


@pytest.mark.parametrize(
    ("value", "shown"),
    [(b"abc", "b'abc'"), (7.0, "7.0"), (None, "None"), (True, "True"), (np.float64(7), "np.float64(7.0)")],
)
async def test_a_join_key_value_neither_text_nor_a_whole_number_is_refused_naming_it(
    target: str, value: object, shown: str
) -> None:
    rows = [{"account_id": "abc", "region": 7}, {"account_id": value, "region": 7}]
    message = re.escape(f"rows[1]['account_id']: expected a string or a whole number, got {shown}")
    # Before, both calls went out and the answer was OK: MISSING for an entity nobody wrote.
    with OnlineFeaturesClient(target) as client, pytest.raises(InvalidArgument, match=f"^{message}$"):
        await asyncio.to_thread(client.get_online_features, ["balance"], rows)
    with pytest.raises(InvalidArgument, match=f"^{message}$"):
        build_predict_request("scorer", rows)
