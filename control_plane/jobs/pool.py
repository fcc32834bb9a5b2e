"""The device pool the scheduler hands out: GPUs found through NVML, or logical slots from configuration.

``AETHER_GPUS`` wins when set, so that scheduling is fully testable on machines without GPUs (and so an
operator can keep some GPUs of a host away from jobs): a count (``AETHER_GPUS=4`` -> devices ``0``..``3``)
or a comma-separated list of names (``AETHER_GPUS=gpu0,gpu1``; on a GPU host these should be CUDA indices
or UUIDs, since they become the job's ``CUDA_VISIBLE_DEVICES``). Unset: NVML (the ``pynvml`` module of
``nvidia-ml-py``) when it imports and sees GPUs, as CUDA indices; else an empty pool (CPU jobs only).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clients.errors import InvalidArgument

GPUS_VARIABLE = "AETHER_GPUS"


@dataclass(frozen=True)
class DevicePool:
    devices: tuple[str, ...]
    #: Where the devices came from: "config", "nvml" or "none".
    source: str

    @property
    def size(self) -> int:
        return len(self.devices)

    @classmethod
    def from_config(cls, value: str) -> DevicePool:
        text = value.strip()
        if text.isdigit():
            return cls(tuple(str(index) for index in range(int(text))), "config")
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        if not names or len(set(names)) != len(names):
            raise InvalidArgument(
                f"{GPUS_VARIABLE}={value!r}: expected a count or distinct comma-separated names"
            )
        return cls(names, "config")

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> DevicePool:
        env = os.environ if environ is None else environ
        configured = env.get(GPUS_VARIABLE)
        if configured is not None and configured.strip():
            return cls.from_config(configured)
        count = nvml_device_count()
        if count:
            return cls(tuple(str(index) for index in range(count)), "nvml")
        return cls((), "none")


def nvml_device_count() -> int:
    """GPUs NVML reports, or 0 when nvidia-ml-py is not installed or no driver/GPU is present."""
    try:
        nvml: Any = importlib.import_module("pynvml")  # optional: the `gpu` extra
    except ImportError:
        return 0
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError: no driver, no GPU, container without the device files
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception:
        return 0
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
