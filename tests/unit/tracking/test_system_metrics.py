"""GPU system metrics cover the GPUs the process may use (``CUDA_VISIBLE_DEVICES``), labelled by its own
CUDA index. NVML ignores that variable; NVML needs a driver, so the selection is tested over a stand-in for
the ``pynvml`` module (a 4-GPU host), and against the real NVML where a GPU is present."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

import pytest

from clients.sdk.system_metrics import _Nvml

UUIDS = ("GPU-0a1b", "GPU-1c2d", "GPU-2e3f", "GPU-3a4b")


class StandInNvml:
    """The ``pynvml`` calls the sampler makes, for a host of four GPUs; GPU i is 10*i % busy and uses
    i+1 GiB of 80. Handles are the NVML indices."""

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(UUIDS)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(UUIDS):
            raise ValueError(f"NVML_ERROR_INVALID_ARGUMENT: index {index}")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        if uuid not in UUIDS:
            raise ValueError(f"NVML_ERROR_NOT_FOUND: {uuid}")
        return UUIDS.index(uuid)

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return UUIDS[handle].encode()  # bytes, as older nvidia-ml-py gives it

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=10 * handle, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=(handle + 1) * 2**30, total=80 * 2**30)


def utilization(visible: str | None) -> dict[str, float]:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    sample = _Nvml(StandInNvml(), environ).sample()
    return {k: v for k, v in sample.items() if k.endswith("utilization_percent")}


def test_a_job_s_gpu_metrics_are_its_own_gpus_labelled_by_its_cuda_index() -> None:
    # The scheduler gave the job GPU 2 (its cuda:0): before, gpu0..gpu3 of the whole host were logged.
    assert utilization("2") == {"system/gpu0/utilization_percent": 20.0}
    assert _Nvml(StandInNvml(), {"CUDA_VISIBLE_DEVICES": "2"}).sample()["system/gpu0/memory_used_mb"] == 3072
    assert utilization("3,1") == {
        "system/gpu0/utilization_percent": 30.0,
        "system/gpu1/utilization_percent": 10.0,
    }
    # UUIDs, whole or a unique prefix, as CUDA takes them.
    assert utilization("GPU-3a4b,GPU-1") == {
        "system/gpu0/utilization_percent": 30.0,
        "system/gpu1/utilization_percent": 10.0,
    }


def test_entries_cuda_ignores_end_the_list_as_cuda_does() -> None:
    assert utilization("") == {}  # a CPU job
    assert utilization("1,7,2") == {"system/gpu0/utilization_percent": 10.0}  # 7: no such GPU
    assert utilization("1,-1,2") == {"system/gpu0/utilization_percent": 10.0}
    assert utilization("GPU-nope,1") == {}
    assert utilization("GPU-,1") == {}  # a prefix of every UUID names none
    assert utilization("2,2") == {"system/gpu0/utilization_percent": 20.0}


def test_without_cuda_visible_devices_every_gpu_is_sampled() -> None:
    assert utilization(None) == {f"system/gpu{i}/utilization_percent": 10.0 * i for i in range(4)}


def _real_nvml() -> Any:
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
        return nvml if nvml.nvmlDeviceGetCount() > 0 else None
    except Exception:
        return None


@pytest.mark.skipif(_real_nvml() is None, reason="no NVML GPU here (needs nvidia-ml-py and a driver)")
def test_the_real_nvml_samples_the_visible_gpu_by_index_and_by_uuid() -> None:
    nvml = _real_nvml()
    last = nvml.nvmlDeviceGetCount() - 1
    uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(last))
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    for visible in (str(last), uuid, uuid[:12]):
        sample = _Nvml(environ={"CUDA_VISIBLE_DEVICES": visible}).sample()
        assert {k.split("/")[1] for k in sample} == {"gpu0"}, (visible, sample)
        assert 0 <= sample["system/gpu0/memory_percent"] <= 100
    assert _Nvml(environ={"CUDA_VISIBLE_DEVICES": ""}).sample() == {}
    assert len(_Nvml(environ={}).sample()) == 3 * (last + 1)
