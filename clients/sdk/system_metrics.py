"""System metrics for tracked runs: CPU utilisation and memory from ``/proc`` (Linux), and GPU
utilisation and memory through NVML when ``pynvml`` (nvidia-ml-py) is importable and finds a GPU, for
the GPUs the process may use (``CUDA_VISIBLE_DEVICES``).
Every key starts with ``system/`` so they never collide with a training loop's own metrics."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_log = logging.getLogger("aether.tracking")
PREFIX = "system/"


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, or None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(value) for value in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def _memory() -> dict[str, float]:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in lines if line.split()[1:]}
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if not total or available is None:
        return {}
    used = total - available
    return {f"{PREFIX}memory_used_mb": used / 2**20, f"{PREFIX}memory_percent": 100.0 * used / total}


def _process_rss_mb() -> dict[str, float]:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return {}
    return {f"{PREFIX}process_rss_mb": pages * os.sysconf("SC_PAGE_SIZE") / 2**20}


def visible_gpus(nvml: Any, cuda_visible_devices: str | None) -> list[Any]:
    """NVML handles of the GPUs this process may use, in its CUDA order (the job's ``cuda:0`` first).
    NVML ignores ``CUDA_VISIBLE_DEVICES``: enumerating its devices gave a job's run the metrics of every
    GPU of the host, other jobs' included, labelled by NVML's index. Entries are read as CUDA reads them:
    indices (NVML's, in PCI bus order: jobs get ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, as the scheduler's pool
    numbers GPUs that way), UUIDs or unique UUID prefixes; an empty, negative, unknown or out-of-range
    entry hides it and every one after it. Unset: every GPU NVML has."""
    count = int(nvml.nvmlDeviceGetCount())
    if cuda_visible_devices is None:
        return [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
    handles: list[Any] = []
    seen: set[str] = set()
    for entry in (part.strip() for part in cuda_visible_devices.split(",")):
        handle = _gpu_handle(nvml, entry, count)
        if handle is None:
            break
        if entry not in seen:
            seen.add(entry)
            handles.append(handle)
    return handles


def _gpu_handle(nvml: Any, entry: str, count: int) -> Any:
    if not entry:
        return None
    if entry.lstrip("-").isdigit():
        index = int(entry)
        return nvml.nvmlDeviceGetHandleByIndex(index) if 0 <= index < count else None
    try:
        return nvml.nvmlDeviceGetHandleByUUID(entry)  # "GPU-…" (or "MIG-…"), whole
    except Exception:  # not a whole UUID NVML knows: CUDA also takes a unique prefix of one
        handles = [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        matches = [h for h in handles if _uuid(nvml, h).startswith(entry)]
        return matches[0] if len(matches) == 1 else None


def _uuid(nvml: Any, handle: Any) -> str:
    uuid = nvml.nvmlDeviceGetUUID(handle)
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)  # bytes from older nvidia-ml-py


class _Nvml:
    """Utilisation and memory of each GPU this process may use (:func:`visible_gpus`), labelled by its
    CUDA index in the process (``gpu0`` is ``cuda:0``); absent (no metrics) when NVML or a GPU is
    unavailable. ``nvml``: the ``pynvml`` module, imported when not given (tests give a stand-in)."""

    def __init__(self, nvml: Any = None, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            if nvml is None:
                nvml = importlib.import_module("pynvml")
            nvml.nvmlInit()
            self._handles = visible_gpus(nvml, env.get("CUDA_VISIBLE_DEVICES"))
            self._nvml = nvml
        except Exception:  # not installed, no driver, no GPU: no GPU metrics
            self._nvml = None

    def sample(self) -> dict[str, float]:
        if self._nvml is None:
            return {}
        metrics: dict[str, float] = {}
        for index, handle in enumerate(self._handles):
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a device vanished or the driver failed: skip it this time
                _log.debug("NVML sample of GPU %d failed: %s", index, exc)
                continue
            metrics[f"{PREFIX}gpu{index}/utilization_percent"] = float(rates.gpu)
            metrics[f"{PREFIX}gpu{index}/memory_used_mb"] = memory.used / 2**20
            metrics[f"{PREFIX}gpu{index}/memory_percent"] = 100.0 * memory.used / memory.total
        return metrics


class SystemSampler:
    """Takes one sample per call; CPU % is the utilisation since the previous call (or since creation)."""

    def __init__(self) -> None:
        self._last_cpu = _cpu_times()
        self._gpu = _Nvml()

    def sample(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        now = _cpu_times()
        if now is not None and self._last_cpu is not None and now[1] > self._last_cpu[1]:
            busy = now[0] - self._last_cpu[0]
            metrics[f"{PREFIX}cpu_percent"] = 100.0 * busy / (now[1] - self._last_cpu[1])
        self._last_cpu = now
        metrics.update(_memory())
        metrics.update(_process_rss_mb())
        metrics.update(self._gpu.sample())
        return metrics


class SystemMetricsThread:
    """Calls ``log(sample, step)`` every ``interval_s`` seconds until :meth:`stop` (step = sample index)."""

    def __init__(self, log: Callable[[Mapping[str, float], int], object], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"system metrics interval must be positive, got {interval_s}")
        self._log = log
        self._interval_s = interval_s
        self._sampler = SystemSampler()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aether-system-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        step = 0
        while not self._stop.wait(self._interval_s):
            sample = self._sampler.sample()
            if sample:
                self._log(sample, step)
                step += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
