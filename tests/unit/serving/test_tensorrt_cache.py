"""The native TensorRT engine cache (``tensorrt_engine.load_cached_plan``): a cached plan that does not
deserialize is removed and rebuilt once, and plans are written whole under unique temporary names. And the
engine wrapper's logic that needs no GPU, run over stand-ins for TensorRT's engine (tests/support).

TensorRT itself is not installed here (no GPU); the cache logic takes the build and the deserialization as
plain functions, so these tests give it real ones: a "plan" is bytes, and one that is not whole is refused
with ``UnreadablePlan`` exactly as ``TensorRTEngine`` refuses a plan ``deserialize_cuda_engine`` rejects."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from clients.errors import FailedPrecondition, InvalidArgument, Unavailable
from data_plane.models.manager import ModelManager
from data_plane.models.options import ManagerOptions
from data_plane.models.runner import run_batch
from data_plane.models.spec import ModelSpec, TensorSpec
from data_plane.models.validation import ValidInputs
from data_plane.models.version import ModelState
from data_plane.runtime.tensorrt_engine import (
    TensorRTEngine,
    UnreadablePlan,
    _profile_shapes,
    engine_cache_path,
    engine_signature,
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
INPUTS = [("features", (-1, 512))]


def deserialize(plan: bytes) -> bytes:
    if not (plan.startswith(b"PLAN") and plan.endswith(b"END")):
        raise UnreadablePlan(f"TensorRT could not deserialize the engine plan ({len(plan)} bytes)")
    return plan


def test_specs_that_size_a_dynamic_dimension_differently_get_engines_of_their_own(tmp_path: Path) -> None:
    """The spec's sizes fix the profile of a dimension the model leaves dynamic: an engine built for a
    sequence length of 128 cannot run 256, so the two must not share a cached plan."""

    def path(inputs: list[tuple[str, tuple[int, ...]]]) -> Path:
        return engine_cache_path(tmp_path, "NVIDIA H200", "10.9", "ab" * 32, 64, input_shapes=inputs)

    short = path([("ids", (-1, 128)), ("mask", (-1, 128))])
    assert path([("ids", (-1, 256)), ("mask", (-1, 256))]) != short
    assert path([("mask", (-1, 128)), ("ids", (-1, 128))]) == short  # the order of the inputs is no matter
    assert short.name.startswith("NVIDIA_H200-trt10.9-") and short.suffix == ".plan"


def test_a_torn_cached_plan_is_removed_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = engine_cache_path(tmp_path / "cache", "NVIDIA H200", "10.9", "ab" * 32, 64, input_shapes=INPUTS)
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


def test_the_engine_s_signature_is_what_the_manager_checks_the_spec_against(tmp_path: Path) -> None:
    """A native engine had no ``inputs``/``outputs``, so the manager skipped its check of the spec: a spec
    that did not match the model went READY and requests were cast to the engine's types."""
    engine = StandInTensorRTEngine(
        StandInTensor("y", TensorIOMode.OUTPUT, "float32", (-1, 1)),
        StandInTensor("x", TensorIOMode.INPUT, "float32", (-1, 8), ((1, 8), (32, 8), (32, 8))),
        StandInTensor("ids", TensorIOMode.INPUT, "int64", (-1, 2), ((1, 2), (32, 2), (32, 2))),
    )
    assert engine_signature(engine, StandInTensorRT(engine)) == (
        (TensorSpec("x", "float32", (-1, 8)), TensorSpec("ids", "int64", (-1, 2))),
        (TensorSpec("y", "float32", (-1, 1)),),
    )
    # The affine model's spec says x is float32[-1, 4]; this engine's x is [-1, 8].
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")
    one_input = StandInTensorRTEngine(*engine.tensors[:2])

    def native(data: bytes, spec: ModelSpec, options: ManagerOptions) -> TensorRTEngine:
        return TensorRTEngine(data, spec, trt=StandInTensorRT(one_input), torch=stand_in_torch())

    async def load() -> tuple[ModelState, str]:
        manager = ModelManager(ManagerOptions(), runtime_factory=native)
        try:
            with pytest.raises(FailedPrecondition, match="does not match its artifact"):
                await manager.ensure_loaded(spec)
            return manager.state("a", 1), manager.failure("a", 1)
        finally:
            await manager.close()

    state, failure = asyncio.run(load())
    assert state is ModelState.FAILED
    assert "tensor 'x' has shape [-1, 8] in the model, [-1, 4] in the spec" in failure


def test_a_shape_outside_the_engine_s_profile_is_invalid_argument(tmp_path: Path) -> None:
    """``set_input_shape`` answers False for a shape outside the optimisation profile; run() ignored it
    and executed with the context's previous shape."""
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")
    engine = TensorRTEngine(b"plan", spec, trt=StandInTensorRT(_affine_engine()), torch=stand_in_torch())
    with pytest.raises(InvalidArgument, match=r"shape \[33, 4\], outside .* \(\[1, 4\] to \[32, 4\]\)"):
        engine.run({"x": np.ones((33, 4), np.float32)})


def test_the_optimisation_profile_follows_the_model_s_dimensions() -> None:
    # A dynamic batch dimension spans 1..max_batch; fixed ones stay as they are.
    assert _profile_shapes((-1, 4), (-1, 4), 64) == ((1, 4), (64, 4), (64, 4))
    # A model that fixes its first dimension (the manager does not batch it): that size, not 1..64.
    assert _profile_shapes((1, -1), (1, 16), 64) == ((1, 16), (1, 16), (1, 16))
    # A dynamic dimension the spec fixes takes the spec's size, the batch included.
    assert _profile_shapes((-1, 4), (8, 4), 64) == ((8, 4), (8, 4), (8, 4))
    # Nothing dynamic: no profile (TensorRT wants none).
    assert _profile_shapes((1, 4), (1, 4), 64) is None
    with pytest.raises(FailedPrecondition, match="fixed non-batch dimensions"):
        _profile_shapes((-1, -1), (-1, -1), 64)
    with pytest.raises(FailedPrecondition, match=r"shape \[-1, 4\], the spec's \[-1\]"):
        _profile_shapes((-1, 4), (-1,), 64)
