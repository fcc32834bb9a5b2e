"""The native TensorRT engine cache (``tensorrt_engine.load_cached_plan``): a cached plan that does not
deserialize is removed and rebuilt once, and plans are written whole under unique temporary names. And the
engine wrapper's logic that needs no GPU, run over stand-ins for TensorRT's engine (tests/support).

TensorRT itself is not installed here (no GPU); the cache logic takes the build and the deserialization as
plain functions, so these tests give it real ones: a "plan" is bytes, and one that is not whole is refused
with ``UnreadablePlan`` exactly as ``TensorRTEngine`` refuses a plan ``deserialize_cuda_engine`` rejects."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from clients.errors import Unavailable
from data_plane.models.runner import run_batch
from data_plane.models.validation import ValidInputs
from data_plane.runtime.tensorrt_engine import (
    TensorRTEngine,
    UnreadablePlan,
    engine_cache_path,
    load_cached_plan,
)
from tests.support import onnx_models
from tests.support.tensorrt_stand_in import (
    StandInTensor,
    StandInTensorRT,
    StandInTensorRTEngine,
    TensorIOMode,
    stand_in_torch,
)

PLAN = b"PLAN" + bytes(range(256)) * 8 + b"END"


def deserialize(plan: bytes) -> bytes:
    if not (plan.startswith(b"PLAN") and plan.endswith(b"END")):
        raise UnreadablePlan(f"TensorRT could not deserialize the engine plan ({len(plan)} bytes)")
    return plan


def test_a_torn_cached_plan_is_removed_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = engine_cache_path(tmp_path / "cache", "NVIDIA H200", "10.9", "ab" * 32, 64)
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return PLAN

    assert load_cached_plan(path, build, deserialize) == PLAN and len(builds) == 1
    assert load_cached_plan(path, build, deserialize) == PLAN and len(builds) == 1  # from the cache
    path.write_bytes(PLAN[:300])  # what a crash after a rename without fsync, or a torn write, leaves
    with caplog.at_level(logging.WARNING, logger="aether.data_plane.tensorrt"):
        # Before: UnreadablePlan's RuntimeError on this and every later load; the file stayed.
        assert load_cached_plan(path, build, deserialize) == PLAN
    assert len(builds) == 2 and path.read_bytes() == PLAN
    assert "is unusable" in caplog.text and str(path) in caplog.text
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_a_rebuilt_plan_that_still_does_not_load_fails_without_building_again(tmp_path: Path) -> None:
    path = tmp_path / "engine.plan"
    path.write_bytes(b"garbage")
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return b"also garbage"

    with pytest.raises(UnreadablePlan):
        load_cached_plan(path, build, deserialize)
    assert len(builds) == 1  # rebuilt once, not in a loop


def test_a_failed_build_leaves_no_plan_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "engine.plan"

    def build() -> bytes:
        raise RuntimeError("TensorRT failed to build the engine")

    with pytest.raises(RuntimeError, match="failed to build"):
        load_cached_plan(path, build, deserialize)
    assert not path.parent.exists() or list(path.parent.iterdir()) == []


def _affine_engine() -> StandInTensorRTEngine:
    """What TensorRT makes of onnx_models.affine(): x float32[batch, 4] -> y float32[batch, 1]."""
    return StandInTensorRTEngine(
        StandInTensor("x", TensorIOMode.INPUT, "float32", (-1, 4), ((1, 4), (32, 4), (32, 4))),
        StandInTensor("y", TensorIOMode.OUTPUT, "float32", (-1, 1)),
    )


def test_a_batch_after_close_is_unavailable_not_internal(tmp_path: Path) -> None:
    """close() deleted the engine's attributes: a batch run afterwards (a shadow batch on the other
    executor, one after an unloaded version's grace ran out) failed with AttributeError, answered INTERNAL."""
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")
    engine = TensorRTEngine(b"plan", spec, trt=StandInTensorRT(_affine_engine()), torch=stand_in_torch())
    engine.close()
    with pytest.raises(Unavailable, match="unloaded"):
        engine.run({"x": np.ones((1, 4), np.float32)})
    rows = [ValidInputs({"x": np.ones((1, 4), np.float32)}, 1, ()) for _ in range(2)]
    results = run_batch(engine, spec, rows)
    assert [type(r) for r in results] == [Unavailable, Unavailable], results
    engine.close()  # twice: the manager may close a version that a failed load closed already
