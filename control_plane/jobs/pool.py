"""The device pool the scheduler hands out: GPUs found through NVML, or logical slots from configuration.

``AETHER_GPUS`` wins when set, so that scheduling is fully testable on machines without GPUs (and so an
operator can keep some GPUs of a host away from jobs): a count (``AETHER_GPUS=4`` -> devices ``0``..``3``)
or a comma-separated list of names (``AETHER_GPUS=gpu0,gpu1``; on a GPU host these should be CUDA indices
or UUIDs, since they become the job's ``CUDA_VISIBLE_DEVICES``). Unset: NVML (the ``pynvml`` module of
``nvidia-ml-py``) when it imports and sees GPUs; else an empty pool (CPU jobs only).

NVML's devices are those the control plane may use: when the control plane itself runs with
``CUDA_VISIBLE_DEVICES`` set (``2,3``, or GPU UUIDs), the pool is exactly those entries (before, it was
every GPU of the host, ``0``..``N-1``, handing jobs GPUs outside the restriction); otherwise the indices
``0``..``N-1``. Indices are NVML's, in PCI bus order, which is not CUDA's default order (fastest first):
every job therefore gets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (``launch_env.py``), so that an index the pool
hands out names the same GPU to CUDA as to NVML and ``nvidia-smi``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clients.env_values import ConfigurationError

GPUS_VARIABLE = "AETHER_GPUS"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


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
            raise ConfigurationError(  # the AETHER_GPUS setting: one line and exit 2, as any other
                f"{GPUS_VARIABLE}={value!r}: expected a count or distinct comma-separated names"
            )
        return cls(names, "config")

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> DevicePool:
        env = os.environ if environ is None else environ
        configured = env.get(GPUS_VARIABLE)
        if configured is not None and configured.strip():
            return cls.from_config(configured)
        return cls.from_nvml(nvml_device_count(), env.get(CUDA_VISIBLE_DEVICES))

    @classmethod
    def from_nvml(cls, count: int, cuda_visible_devices: str | None) -> DevicePool:
        """The pool of a host where NVML sees ``count`` GPUs, for a control plane started with
        ``CUDA_VISIBLE_DEVICES`` = ``cuda_visible_devices`` (None: unset). Entries are read as CUDA reads
        them: up to the first that hides the rest (``-1`` or any negative index), and an index NVML does
        not have ends the list too (CUDA ignores it and all after it); an empty value is no GPU."""
        if count <= 0:
            return cls((), "none")
        if cuda_visible_devices is None:
            return cls(tuple(str(index) for index in range(count)), "nvml")
        devices: list[str] = []
        for entry in (part.strip() for part in cuda_visible_devices.split(",")):
            if not entry:
                break
            if entry.lstrip("-").isdigit() and not 0 <= int(entry) < count:
                break
            if entry not in devices:
                devices.append(entry)
        return cls(tuple(devices), "nvml" if devices else "none")


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
