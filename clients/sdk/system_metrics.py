"""System metrics for tracked runs: CPU utilisation and memory from ``/proc`` (Linux), and GPU
utilisation and memory through NVML when ``pynvml`` (nvidia-ml-py) is importable and finds a GPU.
Every key starts with ``system/`` so they never collide with a training loop's own metrics."""

from __future__ import annotations

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


class _Nvml:
    """GPU utilisation and memory per device; absent (no metrics) when NVML or a GPU is unavailable."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml  # type: ignore[import-not-found, unused-ignore]

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
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
