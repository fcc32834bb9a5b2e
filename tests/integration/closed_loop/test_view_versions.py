"""A new version of a feature view, registered ACTIVE before anything has been written into it, must not
change what a deployed model reads: the model keeps reading the view version it was trained on until a
model trained on the new version is deployed. Real parts throughout: the control plane's feature and model
registries and deployments, a real Redis, and the data plane's Predict over gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import numpy as np
import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.sdk.deployments import variant
from clients.sdk.inference import build_predict_request, decode_predict_response
from clients.sdk.registry import FeatureRegistryClient
from data_plane.models.spec import dump_model_config
from data_plane.server import DataPlaneHandle
from data_plane.server import start_server as start_data_plane
from data_plane.settings import DataPlaneSettings
from tests.integration.closed_loop.conftest import FEATURE_VIEW, Stack, call, wait_serving
from tests.support import onnx_models

pytestmark = pytest.mark.integration

DEPLOYMENT = "eta-prod"


async def _predict(address: str, deployment: str, driver: int) -> np.ndarray:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        answer = await stub.Predict(build_predict_request(deployment, [{"driver_id": driver}]), timeout=10)
    return np.asarray(decode_predict_response(answer).outputs["y"])


async def _new_empty_version(stack: Stack) -> int:
    """Registers version 2 of the driver view (a new TTL: a versioned change) and writes nothing into it,
    as an operator does before the new version's backfill has run."""
    with FeatureRegistryClient(stack.control_plane.address) as registry:
        current = await call(registry.get_feature_view, FEATURE_VIEW)
        spec = type(current.spec)()
        spec.CopyFrom(current.spec)
        spec.ttl_seconds = 3600
        created = await call(registry.create_feature_view_version, spec)
    return int(created.version)


async def _catalog_has(data_plane: DataPlaneHandle, version: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        catalog = data_plane.registry.catalog
        if catalog is not None and version in catalog.views.get(FEATURE_VIEW, {}):
            return
        assert time.monotonic() < deadline, f"the data plane never saw {FEATURE_VIEW} version {version}"
        await asyncio.sleep(0.05)


async def test_a_new_empty_view_version_does_not_change_what_a_deployed_model_reads(stack: Stack) -> None:
    trained = await stack.register("eta", onnx_models.affine(), "blue.onnx")
    assert list((await call(stack.models.get_version, "eta", trained)).feature_refs) == [
        f"{FEATURE_VIEW}@1:f{i}" for i in range(4)
    ]
    created = await call(
        stack.deployments.create,
        DEPLOYMENT,
        [variant("eta", trained)],
        serving=dpb.ServingConfig(warmup_requests=2),
    )
    await stack.plans_at(created.plan_revision)
    before = await _predict(stack.data_plane_address, DEPLOYMENT, 7)

    assert await _new_empty_version(stack) == 2
    await _catalog_has(stack.data_plane, 2)

    after = await _predict(stack.data_plane_address, DEPLOYMENT, 7)
    np.testing.assert_array_equal(after, before)


@pytest.fixture
async def static_data_plane(stack: Stack, tmp_path: Path) -> AsyncIterator[DataPlaneHandle]:
    """A second data plane, on the same control plane and Redis, serving ``scorer`` from a static model
    config that names the driver view without a version (``driver_stats``, every feature)."""
    spec = onnx_models.save(
        onnx_models.affine(), tmp_path / "static" / "scorer.onnx", "scorer", feature_refs=(FEATURE_VIEW,)
    )
    config = tmp_path / "static" / "models.json"
    dump_model_config([spec], config)
    handle = await start_data_plane(
        DataPlaneSettings(
            near_cache_mb=0.0,  # see tests/conftest.py
            listen="127.0.0.1:0",
            redis_url=stack.redis_url,
            control_plane_addr=stack.control_plane.address,
            snapshot_path=tmp_path / "static" / "registry_snapshot.pb",
            model_config=config,
            watch_backoff_initial_s=0.05,
            watch_backoff_max_s=0.5,
            redis_timeout_s=5.0,
        )
    )
    try:
        await wait_serving(f"127.0.0.1:{handle.port}")
        yield handle
    finally:
        await handle.stop(0.5)


async def test_a_new_empty_view_version_does_not_change_what_a_static_model_reads(
    stack: Stack, static_data_plane: DataPlaneHandle
) -> None:
    address = f"127.0.0.1:{static_data_plane.port}"
    before = await _predict(address, "scorer", 7)

    assert await _new_empty_version(stack) == 2
    await _catalog_has(static_data_plane, 2)

    # Read at the newest version, the model's every entity was NOT_FOUND (nothing is stored under v2).
    after = await _predict(address, "scorer", 7)
    np.testing.assert_array_equal(after, before)
