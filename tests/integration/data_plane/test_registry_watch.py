"""The data plane learns schemas from the real control plane's WatchRegistry stream, persists them, keeps
serving through a control-plane outage (also across its own restart), and reconnects by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from clients.aether.v1 import feature_registry_pb2 as fr
from clients.errors import NotFound
from clients.value_types import value_type
from control_plane.features.online_writer import OnlineWriter
from control_plane.server import ControlPlaneServer
from control_plane.server import start_server as start_control_plane
from control_plane.settings import ControlPlaneSettings
from data_plane.catalog import RegistryState
from data_plane.reader import PRESENT
from data_plane.registry_watch import load_snapshot
from data_plane.server import DataPlaneHandle
from data_plane.server import start_server as start_data_plane
from data_plane.settings import DataPlaneSettings
from tests.support.ports import HeldPort
from tests.unit.data_plane.registry_builders import entity, writable

pytestmark = pytest.mark.integration


def _spec(features: list[tuple[str, str]]) -> fr.FeatureViewSpec:
    return fr.FeatureViewSpec(
        name="stats",
        entity="driver",
        features=[fr.Feature(name=n, value_type=value_type(t)) for n, t in features],  # type: ignore[arg-type]
        ttl_seconds=3600,
    )


async def _until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _has_version(state: RegistryState, version: int) -> bool:
    catalog = state.catalog
    return catalog is not None and version in catalog.views.get("stats", {})


async def test_watch_snapshot_persistence_outage_and_reconnect(redis_url: str, tmp_path: Path) -> None:
    # The control plane's port is held for the whole test: it stops and starts again on it (the outage),
    # and a port picked free and let go, or free while it is down, was another test worker's to take.
    with HeldPort() as held:
        cp_settings = ControlPlaneSettings(
            home=tmp_path / "cp", db_url=f"sqlite:///{tmp_path / 'cp.db'}", listen_addr=held.address
        )
        dp_settings = DataPlaneSettings(
            near_cache_mb=0.0,  # see tests/conftest.py
            listen="127.0.0.1:0",
            redis_url=redis_url,
            control_plane_addr=cp_settings.listen_addr,
            snapshot_path=tmp_path / "dp" / "registry_snapshot.pb",
            watch_backoff_max_s=0.2,
        )
        control: ControlPlaneServer = await start_control_plane(cp_settings)
        data: DataPlaneHandle = await start_data_plane(dp_settings)
        try:
            await asyncio.to_thread(control.registry.create_entity, entity())
            registered = await asyncio.to_thread(
                control.registry.create_feature_view,
                _spec([("a", "float32"), ("b", "float32")]),
                fr.FeatureViewMetadata(),
            )
            await _until(lambda: _has_version(data.registry, 1))

            # Bytes written with the control plane's fingerprint decode on the data plane.
            OnlineWriter(redis.Redis.from_url(redis_url)).write(
                writable(registered), [["1"]], np.array([[1.5, 2.5]], np.float32), time.time_ns() // 1000
            )
            result = await data.reader.read(["stats:b"], [{"driver_id": "1"}])
            assert np.frombuffer(result.blocks[0].values, "<f4").tolist() == [2.5]
            assert result.blocks[0].statuses == bytes([PRESENT])

            await asyncio.to_thread(
                control.registry.create_feature_view_version, _spec([("a", "float32"), ("c", "int64")])
            )
            await _until(lambda: _has_version(data.registry, 2))
            assert data.registry.require().latest["stats"] == 2
            await _until(
                lambda: (s := load_snapshot(dp_settings.snapshot_path)) is not None and len(s.views) == 2
            )

            await control.stop()  # outage: the data plane keeps what it has
            await _until(lambda: not data.watch.connected.is_set())
            result = await data.reader.read(["stats@1:a"], [{"driver_id": "1"}])
            assert np.frombuffer(result.blocks[0].values, "<f4").tolist() == [1.5]

            await data.stop(None)  # and a data plane started during the outage serves the persisted snapshot
            data = await start_data_plane(dp_settings)
            assert data.registry.require().latest["stats"] == 2
            result = await data.reader.read(["stats@1:a"], [{"driver_id": "1"}])
            assert np.frombuffer(result.blocks[0].values, "<f4").tolist() == [1.5]

            control = await start_control_plane(cp_settings)  # back on the same address: the watch reconnects
            await asyncio.wait_for(data.watch.connected.wait(), 10)
            await asyncio.to_thread(control.registry.deprecate_version, "stats", 1)
            await asyncio.to_thread(control.registry.retire_version, "stats", 1)
            await _until(lambda: not _has_version(data.registry, 1))
            with pytest.raises(NotFound, match="no servable version 1"):
                await data.reader.read(["stats@1:a"], [{"driver_id": "1"}])
        finally:
            await data.stop(None)
            await control.stop()
