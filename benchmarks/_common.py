"""Shared by the benchmarks: latency percentiles, the machine and versions a run was taken on, and the
results file each benchmark writes under ``benchmarks/results/``."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.targets import is_quick

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Where a run's JSON goes instead of RESULTS_DIR (a smoke run of a full benchmark, say).
RESULTS_DIR_VARIABLE = "AETHER_BENCH_RESULTS_DIR"


#: The variables that turn a data plane's token check on (``clients.server_auth.ServerTokens``). The data
#: planes the benchmarks start measure the default, tokenless configuration, and their load generators send
#: no token: a shell with auth set up must not turn every measured request into UNAUTHENTICATED.
SERVER_TOKEN_VARIABLES = frozenset(
    {"AETHER_ADMIN_TOKEN", "AETHER_ADMIN_TOKEN_FILE", "AETHER_READONLY_TOKEN", "AETHER_READONLY_TOKEN_FILE"}
)


def tokenless_environ() -> dict[str, str]:
    """This process's environment without :data:`SERVER_TOKEN_VARIABLES`, for a data plane to start."""
    return {name: value for name, value in os.environ.items() if name not in SERVER_TOKEN_VARIABLES}


def near_cache_counts(metrics_port: int) -> dict[str, float]:
    """A data plane's near-cache hit and miss counters (``hits``, ``misses``), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r"^aether_near_cache_(hits|misses)_total (\S+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in found}


def percentiles_ms(samples_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50 / p99 / p99.9 (and the sample count) of latencies given in seconds, in milliseconds."""
    array = np.asarray(samples_s, dtype=np.float64) * 1000.0
    p50, p99, p999 = np.percentile(array, [50, 99, 99.9])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "p99_9_ms": float(p999), "n": int(array.size)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def redis_server_version() -> str | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or None


def environment(packages: Sequence[str]) -> dict[str, Any]:
    """Machine (CPU model, cores, OS) and the versions of Python, redis-server and ``packages``."""
    return {
        "machine": {
            "cpu_model": cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
        },
        "versions": {
            "python": platform.python_version(),
            "redis-server": redis_server_version(),
            **{name: _package_version(name) for name in packages},
        },
    }


def results_dir(document: Mapping[str, Any]) -> Path:
    """``$AETHER_BENCH_RESULTS_DIR`` when set; else ``benchmarks/results/``, or its ``quick/`` folder
    (ignored by git, never rendered) for a quick run, which must not replace the committed figures."""
    chosen = os.environ.get(RESULTS_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    return RESULTS_DIR / "quick" if is_quick(document) else RESULTS_DIR


def write_results(name: str, payload: Mapping[str, Any]) -> Path:
    """Writes ``<name>.json`` (with the time of the run) under :func:`results_dir` and returns its path."""
    document = {"benchmark": name, "run_at": datetime.datetime.now(datetime.UTC).isoformat(), **payload}
    folder = results_dir(document)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(strict_json(document))
    return path


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a latency of a run with no answers, a ratio over
    zero) replaced by None, recursively: JSON has no NaN, and ``jq`` and most parsers refuse a bare one."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def strict_json(document: Any) -> str:
    """Indented, standard JSON (no NaN or Infinity), with a trailing newline."""
    return json.dumps(finite_or_none(document), indent=2, allow_nan=False) + "\n"
