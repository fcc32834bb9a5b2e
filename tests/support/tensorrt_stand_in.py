"""Stand-ins for the ``tensorrt`` and ``torch`` modules as :class:`TensorRTEngine` uses them, for tests on
a machine without a GPU: a real TensorRT engine cannot be deserialized there, nor a CUDA stream made. They
give the TensorRT 10 calls the engine wrapper makes (name-based I/O tensors) and nothing more; no CUDA work
runs through them. The real thing is tested on a GPU (tests/integration/serving/test_gpu_execution.py)."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


@dataclass
class StandInTensor:
    name: str
    mode: TensorIOMode
    dtype: str  # numpy name; the stand-in's "TensorRT data type" is the numpy name itself
    shape: tuple[int, ...]  # -1 = dynamic, as ICudaEngine.get_tensor_shape gives it
    # (min, opt, max) of the engine's one optimisation profile, for inputs with a dynamic dimension
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None


@dataclass
class StandInExecutionContext:
    """IExecutionContext: set_input_shape answers False for a shape outside the input's profile."""

    engine: StandInTensorRTEngine
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        tensor = self.engine.tensor(name)
        low, _, high = tensor.profile or (tensor.shape, tensor.shape, tensor.shape)
        fits = len(shape) == len(low) and all(a <= d <= b for a, d, b in zip(low, shape, high, strict=True))
        if fits:
            self.shapes[name] = tuple(shape)
        return fits


class StandInTensorRTEngine:
    """Stands in for a deserialized ``tensorrt.ICudaEngine``, which cannot be created without a GPU."""

    def __init__(self, *tensors: StandInTensor) -> None:
        self.tensors = tensors
        self.num_io_tensors = len(tensors)

    def tensor(self, name: str) -> StandInTensor:
        return next(t for t in self.tensors if t.name == name)

    def get_tensor_name(self, index: int) -> str:
        return self.tensors[index].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.tensor(name).mode

    def get_tensor_dtype(self, name: str) -> str:
        return self.tensor(name).dtype

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.tensor(name).shape

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        profile = self.tensor(name).profile
        if profile is None or profile_index != 0:
            raise RuntimeError(f"no profile {profile_index} for {name}")
        return list(profile)

    def create_execution_context(self) -> StandInExecutionContext:
        return StandInExecutionContext(self)


class StandInLogger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


class StandInRuntime:
    """``tensorrt.Runtime``: deserializes any non-empty plan into the one stand-in engine it was given."""

    def __init__(self, engine: StandInTensorRTEngine, logger: StandInLogger) -> None:
        self.engine = engine

    def deserialize_cuda_engine(self, plan: bytes) -> StandInTensorRTEngine | None:
        return self.engine if plan else None  # TensorRT answers None for a plan it cannot read


class StandInTensorRT:
    """The ``tensorrt`` module, as far as TensorRTEngine uses it."""

    __version__ = "10.13.0"
    TensorIOMode = TensorIOMode
    Logger = StandInLogger

    def __init__(self, engine: StandInTensorRTEngine) -> None:
        self.Runtime = functools.partial(StandInRuntime, engine)

    @staticmethod
    def nptype(dtype: str) -> type[Any]:
        return np.dtype(dtype).type


def stand_in_torch() -> Any:
    """The ``torch`` module as far as TensorRTEngine's constructor goes (a stream, the device's name)."""
    return SimpleNamespace(cuda=SimpleNamespace(Stream=object, get_device_name=lambda *a: "NVIDIA H100"))
