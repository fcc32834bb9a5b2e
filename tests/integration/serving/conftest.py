"""A real data plane serving real ONNX models (built by tests.support.onnx_models) from a static model
config, with a registry snapshot of one 8-feature view and a real redis-server of its own (so a test can
stop it)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import redis

from control_plane.features.online_writer import OnlineWriter
from data_plane.models.spec import ModelSpec, dump_model_config
from data_plane.registry_watch import save_snapshot
from data_plane.server import DataPlaneHandle, start_server
from data_plane.settings import DataPlaneSettings
from tests.support import onnx_models
from tests.support.ports import refused_address
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import floats, snapshot, view, writable

FEATURES = view("driver_stats", floats(8))
NOW_US = time.time_ns() // 1000
# Stored features of drivers 1 and 2 (driver 3 has none).
STORED = {1: np.arange(8, dtype=np.float32), 2: np.arange(8, dtype=np.float32) * -0.5}
DEFAULTS = tuple(float(i) / 10 for i in range(8))


def model_specs(root: Path) -> list[ModelSpec]:
    return [
        onnx_models.save(onnx_models.affine(), root / "affine.onnx", "affine", max_queue_delay_us=2000),
        onnx_models.save(onnx_models.two_inputs(), root / "two.onnx", "two_inputs"),
        onnx_models.save(onnx_models.failing(), root / "failing.onnx", "failing", max_queue_delay_us=20_000),
        onnx_models.save(
            onnx_models.mlp(input_size=8, hidden=(4,)), root / "scorer.onnx", "scorer",
            feature_refs=("driver_stats",),
        ),
        onnx_models.save(
            onnx_models.mlp(input_size=8, hidden=(4,), seed=5), root / "scorer2.onnx", "scorer", version=2,
            feature_refs=("driver_stats",),
        ),
        onnx_models.save(
            onnx_models.mlp(input_size=8, hidden=(4,)), root / "scorer.onnx", "lenient",
            feature_refs=("driver_stats",), missing_entity_policy="defaults", feature_defaults=DEFAULTS,
        ),
        onnx_models.save(
            onnx_models.mlp(input_size=3, hidden=(4,)), root / "mixed.onnx", "mixed",
            feature_refs=("driver_stats:f7", "request:hour", "driver_stats:f0"),
        ),
    ]  # fmt: skip


async def load_as_static(handle: DataPlaneHandle, spec: ModelSpec) -> None:
    """Loads ``spec`` as a version of the static model config is (loaded, then kept by the deployment
    watch), so that Predict reaches it by its model name; a version loaded alone (as a plan's canary or
    shadow is) answers only through a plan."""
    await handle.manager.ensure_loaded(spec)
    handle.deployments.keep_loaded([spec])


def serving_settings(tmp_path: Path, redis_url: str, **overrides: object) -> DataPlaneSettings:
    specs = model_specs(tmp_path / "models")
    config = tmp_path / "models.json"
    dump_model_config(specs, config)
    snapshot_path = tmp_path / "registry_snapshot.pb"
    save_snapshot(snapshot_path, snapshot(FEATURES).SerializeToString())
    settings = DataPlaneSettings(
        near_cache_mb=0.0,  # see tests/conftest.py
        listen="127.0.0.1:0",
        redis_url=redis_url,
        control_plane_addr=refused_address(),  # nothing listens there
        snapshot_path=snapshot_path,
        model_config=config,
        metrics_listen="127.0.0.1:0",
        redis_timeout_s=0.3,
        prediction_log_sample_rate=1.0,
    )
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def data_plane(own_redis: RedisServer, tmp_path: Path) -> AsyncIterator[DataPlaneHandle]:
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [[str(k)] for k in STORED], np.stack(list(STORED.values())), NOW_US)
    handle = await start_server(serving_settings(tmp_path, own_redis.url))
    yield handle
    await handle.stop(None)
