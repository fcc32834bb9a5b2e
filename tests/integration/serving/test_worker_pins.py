"""The workers of a ``--workers N`` data plane agree on feature pins through one shared file
(:mod:`data_plane.feature_pins`), but each follows the registry on a watch stream of its own: a worker
whose snapshot lags behind the one a sibling pinned from answered NOT_FOUND for the pinned view version
until its own stream caught up. Both workers here are real data planes in this process, sharing the pins
file and the snapshot file as the workers of one data plane do; the lag is real too: the one started
first holds an older revision of the registry than the snapshot file the other started from (what the
sibling's watch wrote there)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2
from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.sdk.inference import build_predict_request, decode_predict_response
from control_plane.features.online_writer import OnlineWriter
from data_plane.catalog import RegistryState
from data_plane.feature_pins import open_shared_pins
from data_plane.registry_watch import RegistryWatch, save_snapshot
from data_plane.server import DataPlaneHandle, start_server
from tests.integration.serving.conftest import FEATURES, NOW_US, serving_settings
from tests.support.ports import refused_address
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import floats, snapshot, view, writable

pytestmark = pytest.mark.integration

NEWER = view("driver_stats", floats(8), version=2)


async def _predict(handle: DataPlaneHandle) -> tuple[int, list[float]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        request = build_predict_request("scorer", [{"driver_id": 1}])
        result = decode_predict_response(await stub.Predict(request, timeout=5))
    return result.model_version, result.outputs["output"].ravel().tolist()


async def test_a_worker_behind_its_siblings_pin_catches_up_instead_of_answering_not_found(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [["1"]], np.ones((1, 8), np.float32), NOW_US)
    writer.write(writable(NEWER), [["1"]], np.full((1, 8), 3.0, np.float32), NOW_US)
    pins = open_shared_pins()
    settings = serving_settings(tmp_path, own_redis.url, feature_pins_fd=pins)
    assert settings.snapshot_path is not None
    save_snapshot(settings.snapshot_path, snapshot(FEATURES, revision=1).SerializeToString())
    behind = await start_server(settings)
    # The sibling's watch brought revision 2 (driver_stats v2) and wrote it to the workers' snapshot file.
    save_snapshot(settings.snapshot_path, snapshot(FEATURES, NEWER, revision=2).SerializeToString())
    ahead = await start_server(settings)
    try:
        answered = await _predict(ahead)  # "scorer" names "driver_stats" without a version: pinned to v2
        assert await _predict(behind) == answered  # it answered NOT_FOUND for driver_stats v2
    finally:
        await ahead.stop(None)
        await behind.stop(None)
        os.close(pins)


STORE_A = "0b5cbd47-2b8e-4b5e-a4a2-0c7b1b0f0a11"
STORE_B = "6f1d2c3e-9a8b-4c7d-8e6f-5a4b3c2d1e0f"


async def test_the_catch_up_takes_only_a_newer_snapshot_of_the_same_database(tmp_path: Path) -> None:
    """What a worker takes from the shared snapshot file: a newer revision of the database it follows;
    never an older or equal one, nor another database's (as its stream would refuse it), and the file is
    read again only once it changed."""
    path = tmp_path / "registry_snapshot.pb"

    def put(revision: int, store_id: str, *views: feature_registry_pb2.FeatureView) -> None:
        message = snapshot(FEATURES, *views, revision=revision)
        message.store_id = store_id
        save_snapshot(path, message.SerializeToString())

    put(2, STORE_A)
    state = RegistryState()
    watch = RegistryWatch(state, refused_address(), path)  # never started: no stream
    assert await watch.load_persisted()
    assert not await watch.catch_up()  # the file holds what is served
    put(1, STORE_A)
    assert not await watch.catch_up() and state.require().revision == 2  # older
    put(3, STORE_B, NEWER)
    assert not await watch.catch_up() and state.require().revision == 2  # another database's
    put(3, STORE_A, NEWER)
    assert await watch.catch_up() and state.require().revision == 3
    assert state.require().view_version("driver_stats", 2).version == 2
    assert not await watch.catch_up()  # unchanged since: not read again
