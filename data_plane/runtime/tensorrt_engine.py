"""Native TensorRT engines built from a model's ONNX artifact, cached per GPU name and TensorRT version.

UNTESTED HERE: written against the TensorRT 10 Python API (name-based I/O tensors, ``execute_async_v3``)
on a machine without a GPU; it is only used when ``tensorrt`` and a CUDA ``torch`` are importable
(:func:`available`) and the manager is asked for native engines (``AETHER_NATIVE_TENSORRT=1``, which
the data plane refuses at start where they are not, :func:`require_native`). Device buffers and the
CUDA stream come from torch, which ``Dockerfile.gpu`` installs (a CUDA 13 build) for this; the engine
itself never touches torch's autograd.

The engine is built with one optimisation profile (for models with a dynamic dimension) whose dynamic
first dimension spans 1 … ``max_batch_size`` (optimal at the maximum, since the batcher fills batches under
load); dimensions the model fixes stay fixed (:func:`_profile_shapes`). The engine's inputs and outputs are
its ``inputs``/``outputs``, which the model manager checks the spec against. The serialized plan is cached as
``<cache_dir>/<gpu>-trt<version>-<artifact sha256>-b<max batch>-s<input shapes digest>.plan``: an engine is
only valid for the GPU model and TensorRT version that built it, and for the profile the spec's sizes gave
it, so all are in the name.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from clients.env_values import ConfigurationError
from clients.errors import FailedPrecondition, InvalidArgument, Unavailable
from clients.files import replace_when_done
from data_plane.models.spec import DYNAMIC, ModelSpec, TensorSpec
from data_plane.runtime.base import Array

_log = logging.getLogger("aether.data_plane.tensorrt")
T = TypeVar("T")


def unavailable_reason() -> str | None:
    """Why native engines cannot be built here, or None when they can: ``tensorrt`` and a CUDA build of
    ``torch`` (device buffers and the stream come from it) importable, and a CUDA device visible."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (the `gpu` extra)"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (native TensorRT takes its device buffers and CUDA stream from torch)"
    import torch

    if not torch.cuda.is_available():
        build = torch.version.cuda
        return (
            f"torch {torch.__version__} sees no CUDA device"
            if build
            else f"torch {torch.__version__} is a CPU-only build (it needs a CUDA build)"
        )
    return None


def available() -> bool:
    """Whether native engines can be built here (:func:`unavailable_reason`)."""
    return unavailable_reason() is None


def require_native(variable: str = "AETHER_NATIVE_TENSORRT") -> None:
    """ConfigurationError, at the data plane's start, when native TensorRT was asked for and cannot be
    used here. Before, every model fell back to ONNX Runtime with a warning per model, so a server
    configured for native engines served without them (the project's GPU image had no torch)."""
    reason = unavailable_reason()
    if reason is not None:
        raise ConfigurationError(f"{variable}=1 but native TensorRT cannot be used here: {reason}")


Shape = tuple[int, ...]


def engine_cache_path(
    cache_dir: Path,
    gpu_name: str,
    trt_version: str,
    sha256: str,
    max_batch: int,
    *,
    input_shapes: Sequence[tuple[str, Shape]],
) -> Path:
    """Where the plan for these inputs is cached. The spec's input shapes are part of the name (a digest):
    they size the profile of each dimension the model leaves dynamic (:func:`_profile_shapes`), so two
    specs of one artifact that declare other sizes need engines of their own; without it the second
    loaded the first one's plan and failed on its first request."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "_", gpu_name).strip("_")
    shapes = hashlib.sha256(repr(sorted(input_shapes)).encode()).hexdigest()[:8]
    return cache_dir / f"{gpu}-trt{trt_version}-{sha256[:16]}-b{max_batch}-s{shapes}.plan"


class UnreadablePlan(RuntimeError):
    """A serialized plan TensorRT cannot deserialize: torn, truncated, or from another build."""


def load_cached_plan(path: Path, build: Callable[[], bytes], load: Callable[[bytes], T]) -> T:
    """``load`` of the plan cached at ``path``, else of a plan ``build`` makes, which is cached first.

    A cached plan that ``load`` refuses as :class:`UnreadablePlan` (a crash or a torn write left it
    short) is logged, removed and built again, once: before, the load failed, the file stayed, and the
    model failed on every later load until someone deleted it. The plan is written through a unique
    temporary file (two workers building the same engine used one fixed ``.tmp`` name and could rename
    a mixture of both into place), fsynced, renamed, and the folder fsynced, so that what a later load
    finds under the name is a whole plan."""
    try:
        found = path.stat()
    except FileNotFoundError:
        found = None
    if found is not None:
        _log.info("loading cached TensorRT engine %s", path)
        try:
            return load(path.read_bytes())
        except UnreadablePlan as problem:
            _log.warning(
                "cached TensorRT engine %s is unusable (%s); removing it and building it again", path, problem
            )
            _remove_if_unchanged(path, found)
    plan = build()
    with replace_when_done(path, sync_folder=True) as file:
        file.write(plan)
    return load(plan)


def _remove_if_unchanged(path: Path, seen: os.stat_result) -> None:
    """Removes ``path`` if it is still the file that was read: another worker may have replaced the bad
    plan with a good one meanwhile, which is left alone."""
    with contextlib.suppress(FileNotFoundError):
        now = path.stat()
        if (now.st_ino, now.st_mtime_ns, now.st_size) == (seen.st_ino, seen.st_mtime_ns, seen.st_size):
            path.unlink()


def _profile_shapes(model: Shape, spec: Shape, max_batch: int) -> tuple[Shape, Shape, Shape] | None:
    """(min, opt, max) shapes of one input of the parsed network, whose ``model`` shape has -1 for a
    dynamic dimension; None for an input with none (it needs no profile). A dimension the model fixes
    stays fixed; a dynamic one takes the size the spec gives it, else (the first, the batch) spans
    1..max_batch. Before, the first dimension always spanned 1..max_batch, also for a model that fixes
    it (one the manager does not batch), and the spec's sizes were used in place of the model's."""
    if DYNAMIC not in model:
        return None
    if len(spec) != len(model):
        raise FailedPrecondition(f"the model's input has shape {list(model)}, the spec's {list(spec)}")
    low: list[int] = []
    high: list[int] = []
    for axis, (size, declared) in enumerate(zip(model, spec, strict=True)):
        if size != DYNAMIC or declared != DYNAMIC:
            fixed = size if size != DYNAMIC else declared
            low.append(fixed)
            high.append(fixed)
        elif axis == 0:
            low.append(1)
            high.append(max_batch)
        else:  # the sizes to build for are nowhere: the spec leaves the dimension free too
            raise FailedPrecondition(
                f"native TensorRT needs fixed non-batch dimensions; the model's input has shape "
                f"{list(model)} and the spec's {list(spec)}"
            )
    return tuple(low), tuple(high), tuple(high)


def engine_signature(engine: Any, trt: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The engine's inputs and outputs, in its order, as the model manager checks a spec against them
    (names, numpy dtypes, shapes with -1 for a dynamic dimension). Without them the manager skipped the
    check for native engines: a spec that did not match went READY and its inputs were cast."""
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        mode = engine.get_tensor_mode(name)
        trt_type = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_type)).name
        except (TypeError, ValueError):  # bfloat16, fp8, ...: no numpy type
            raise FailedPrecondition(
                f"tensor {name!r} has TensorRT type {trt_type}, which the data plane does not serve"
            ) from None
        shape = tuple(int(d) if int(d) >= 0 else DYNAMIC for d in engine.get_tensor_shape(name))
        tensor = TensorSpec(name=name, dtype=dtype, shape=shape)
        if mode == trt.TensorIOMode.INPUT:
            inputs.append(tensor)
        elif mode == trt.TensorIOMode.OUTPUT:
            outputs.append(tensor)
    return tuple(inputs), tuple(outputs)


class TensorRTEngine:
    def __init__(self, plan: bytes, spec: ModelSpec, *, trt: Any = None, torch: Any = None) -> None:
        """``trt`` and ``torch``: the ``tensorrt`` and ``torch`` modules, imported when not given (tests
        on a machine without a GPU give stand-ins; neither can deserialize an engine or make a CUDA
        stream there)."""
        trt = trt or importlib.import_module("tensorrt")
        torch = torch or importlib.import_module("torch")
        self._trt = trt
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise UnreadablePlan(f"TensorRT could not deserialize the engine plan ({len(plan)} bytes)")
        # The engine and its context, held together: close() drops both at once, and a run takes both
        # (a run already under way on another thread keeps them alive until it finishes).
        self._live: tuple[Any, Any] | None = (engine, engine.create_execution_context())
        stream_type: Any = torch.cuda.Stream
        self._stream = stream_type()
        # Checked by the model manager against the spec, as ONNX Runtime sessions' are.
        self.inputs, self.outputs = engine_signature(engine, trt)
        self._inputs = [t.name for t in self.inputs]
        self._outputs = [t.name for t in self.outputs]
        self._returned = [t.name for t in spec.outputs] or self._outputs
        self._dtypes = {t.name: t.np_dtype for t in (*self.inputs, *self.outputs)}
        self._spec = spec
        # The largest batch the engine's optimisation profile takes (the model manager refuses to raise a
        # loaded version's max_batch_size beyond it).
        self.max_batch_rows = spec.max_batch_size
        self.description = f"tensorrt {trt.__version__} native engine on {torch.cuda.get_device_name()}"

    @classmethod
    def from_onnx(cls, model: bytes, spec: ModelSpec, cache_dir: Path) -> TensorRTEngine:
        import tensorrt as trt
        import torch

        path = engine_cache_path(
            cache_dir,
            torch.cuda.get_device_name(),
            trt.__version__,
            spec.artifact_sha256,
            spec.max_batch_size,
            input_shapes=[(tensor.name, tensor.shape) for tensor in spec.inputs],
        )
        return load_cached_plan(path, lambda: build_plan(model, spec), lambda plan: cls(plan, spec))

    @property
    def waits_on_device(self) -> bool:
        return True

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        live = self._live
        if live is None:
            raise Unavailable("the model version was unloaded; its TensorRT engine is closed")
        engine, context = live
        torch = self._torch
        hosts = {name: np.ascontiguousarray(feeds[name], dtype=self._dtypes[name]) for name in self._inputs}
        for name, host in hosts.items():
            # False (and a line in TensorRT's log) for a shape outside the optimisation profile. It was
            # ignored: the run went on with the context's previous shape.
            if not context.set_input_shape(name, tuple(host.shape)):
                raise InvalidArgument(_outside_profile(engine, name, host.shape))
        keep: list[Any] = []  # device tensors must outlive the asynchronous execution
        with torch.cuda.stream(self._stream):
            for name, host in hosts.items():
                device = torch.from_numpy(host).to("cuda", non_blocking=False)
                context.set_tensor_address(name, device.data_ptr())
                keep.append(device)
            outputs: dict[str, Any] = {}
            for name in self._outputs:
                shape = tuple(context.get_tensor_shape(name))
                torch_dtype = torch.from_numpy(np.empty(0, dtype=self._dtypes[name])).dtype
                device = torch.empty(shape, dtype=torch_dtype, device="cuda")
                context.set_tensor_address(name, device.data_ptr())
                outputs[name] = device
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self._stream.synchronize()
        # Every output is computed (an execution needs an address for each), only the spec's come back:
        # an output the spec leaves out is no part of the answer (as ONNX Runtime sessions fetch only
        # the spec's, ``OnnxRuntimeSession``).
        return {name: outputs[name].cpu().numpy() for name in self._returned}

    def close(self) -> None:
        """Drops the engine and its context (their device memory goes once no run holds them). ``del``
        of both attributes made a later run (a shadow batch on the other executor, or one after an
        unloaded version's grace ran out) fail with AttributeError, answered as INTERNAL; it is
        UNAVAILABLE, as a closed ONNX Runtime session's run is."""
        self._live = None


def _outside_profile(engine: Any, name: str, shape: Shape) -> str:
    try:
        low, _, high = engine.get_tensor_profile_shape(name, 0)
    except Exception:  # an input without a profile (no dynamic dimension): its one shape is the spec's
        return f"input {name!r} has shape {list(shape)}, which this TensorRT engine does not take"
    return (
        f"input {name!r} has shape {list(shape)}, outside the shapes this TensorRT engine was built for "
        f"({list(low)} to {list(high)})"
    )


def build_plan(model: bytes, spec: ModelSpec, workspace_bytes: int = 1 << 30) -> bytes:
    """Parses the ONNX and builds a serialized engine (FP16 allowed where the GPU is fast at it)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    declared = {t.name: t.shape for t in spec.inputs}
    dynamic = False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if tensor.name not in declared:
            raise FailedPrecondition(f"the spec has no input {tensor.name!r}, which the model takes")
        shapes = _profile_shapes(tuple(tensor.shape), declared[tensor.name], spec.max_batch_size)
        if shapes is not None:
            profile.set_shape(tensor.name, *shapes)
            dynamic = True
    if dynamic:  # a model of static shapes needs (and takes) no profile
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log)")
    return bytes(serialized)
