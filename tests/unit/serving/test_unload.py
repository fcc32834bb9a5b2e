"""Unloading a model version that still has requests (a rollback or a promotion under load): it stops taking
new ones at once, answers every request it already holds, and only then releases its session; a grace
bounds how long it waits."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from clients.errors import NotFound, Unavailable
from data_plane.metrics import ServingMetrics
from data_plane.models.manager import ModelManager
from data_plane.models.options import ManagerOptions
from data_plane.models.spec import ModelSpec
from data_plane.models.version import ModelState
from tests.support import onnx_models

WIDTH = 256


def _slow_spec(tmp_path: Path, layers: int) -> ModelSpec:
    """One row at a time (max batch 1), a few milliseconds each: a queue builds up behind it."""
    model = onnx_models.slow(layers=layers, width=WIDTH, seed=2)
    return onnx_models.save(model, tmp_path / "slow.onnx", "m", version=2, max_batch_size=1)


def _row(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, WIDTH), value, np.float32)}


async def _outcome(manager: ModelManager, value: float) -> np.ndarray | BaseException:
    try:
        return (await manager.infer("m", 2, _row(value)))["y"]
    except Exception as exc:
        return exc


async def test_unloading_answers_every_request_the_version_holds_then_releases_it(tmp_path: Path) -> None:
    spec = _slow_spec(tmp_path, layers=60)
    manager = ModelManager()
    try:
        await manager.ensure_loaded(spec)
        expected = (await manager.infer("m", 2, _row(1.0)))["y"]
        calls = [asyncio.create_task(_outcome(manager, 1.0)) for _ in range(24)]
        await asyncio.sleep(0)  # every call has joined the version's queue
        assert manager.queue_depth("m", 2) > 10
        await manager.unload("m", 2)

        # From now on the version takes nothing new...
        assert manager.state("m", 2) is ModelState.UNLOADED
        with pytest.raises(NotFound):
            await manager.infer("m", 2, _row(1.0))
        # ...but every request it held is answered, by it.
        outcomes = await asyncio.gather(*calls)
        assert all(isinstance(o, np.ndarray) for o in outcomes), [
            o for o in outcomes if not isinstance(o, np.ndarray)
        ]
        assert all(np.allclose(o, expected) for o in outcomes if isinstance(o, np.ndarray))
        await asyncio.wait_for(manager.released(), 5)
    finally:
        await manager.close()


async def test_a_request_routed_before_the_unload_finishes_on_its_version(tmp_path: Path) -> None:
    """A request takes its lease when it is routed, before its features are fetched; an unload during the
    fetch must not take the version from under it."""
    spec = _slow_spec(tmp_path, layers=4)
    manager = ModelManager()
    try:
        await manager.ensure_loaded(spec)
        with manager.lease("m", 2) as lease:
            await manager.unload("m", 2)
            releasing = asyncio.create_task(manager.released())
            await asyncio.sleep(0.05)  # the feature fetch
            assert not releasing.done()  # the session waits for the lease
            outputs = await lease.run(lease.prepare(_row(0.5)), None)
        assert outputs["y"].shape == (1, WIDTH)
        await asyncio.wait_for(releasing, 5)
    finally:
        await manager.close()


async def test_the_grace_bounds_the_wait_and_what_is_still_queued_then_fails(tmp_path: Path) -> None:
    spec = _slow_spec(tmp_path, layers=400)
    manager = ModelManager(dataclasses.replace(ManagerOptions(), unload_grace_s=0.02))
    try:
        await manager.ensure_loaded(spec)
        calls = [asyncio.create_task(_outcome(manager, 1.0)) for _ in range(40)]
        await asyncio.sleep(0)
        await manager.unload("m", 2)
        await asyncio.wait_for(manager.released(), 5)
        outcomes = await asyncio.gather(*calls)
        answered = [o for o in outcomes if isinstance(o, np.ndarray)]
        refused = [o for o in outcomes if isinstance(o, Unavailable)]
        assert answered and refused and len(answered) + len(refused) == len(outcomes)
        assert all("unloaded" in o.message for o in refused)
    finally:
        await manager.close()


def _metrics_versions(metrics: ServingMetrics) -> set[str]:
    return {
        sample.labels["version"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "version" in sample.labels
    }


async def test_a_version_s_metrics_go_once_it_is_released_unless_it_was_loaded_again(tmp_path: Path) -> None:
    """Every unloaded version's series stayed on /metrics for ever. They stay while its requests finish
    (its grace), go once its session is released, and stay when it was loaded again meanwhile (a
    rollback undone): they are the new load's then."""
    spec = _slow_spec(tmp_path, layers=4)
    metrics = ServingMetrics(released_series_s=0.0)  # gone at the release, not kept to be scraped
    manager = ModelManager(observer=metrics)
    state = "aether_model_state"
    try:
        await manager.ensure_loaded(spec)
        await manager.infer("m", 2, _row(1.0))
        with manager.lease("m", 2):
            await manager.unload("m", 2)
            await manager.ensure_loaded(spec)  # loaded again before the old load is released
        await asyncio.wait_for(manager.released(), 5)
        labels = {"model": "m", "version": "2"}
        assert metrics.registry.get_sample_value(state, {**labels, "state": "READY"}) == 1
        assert metrics.registry.get_sample_value("aether_inference_queue_depth", labels) == 0
        assert metrics.registry.get_sample_value("aether_inference_batch_size_count", labels) == 1

        with manager.lease("m", 2):
            await manager.unload("m", 2)
            assert metrics.registry.get_sample_value(state, {**labels, "state": "UNLOADED"}) == 1
        await asyncio.wait_for(manager.released(), 5)
        assert _metrics_versions(metrics) == set()
    finally:
        await manager.close()
