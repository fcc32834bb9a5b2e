"""The agreement rate of a shadow variant with the served answers, from the prediction log.

A mirrored call's entry (``role = shadow``) carries the shadow's outputs under the served call's request
id; the served entry of a sampled request carries the served outputs. Every mirrored request is sampled
(see ``data_plane/prediction_log.py``), so pairs are found by request id. Two answers agree when the
derived predictions (as the monitor derives them) are equal for classifiers, or within ``tolerance`` ×
max(1, |served|) for regressors. A mirrored call the shadow failed (``ok = 0``) for a request the served
variant answered disagrees on every served row: skipping it would let a challenger that fails every call
leave no pair at all, and so never fail its phase. A request the served variant failed compares nothing.
Read-only ``XRANGE`` over the phase's time span.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import redis.asyncio

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.monitoring.performance import derive

_PAGE = 1000


def _first_output(fields: dict[bytes, bytes]) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    for key, value in fields.items():
        if key.startswith(b"output:") and not key.endswith((b":dtype", b":shape")):
            dtype = np.dtype(fields.get(key + b":dtype", b"float32").decode())
            shape = [int(p) for p in fields.get(key + b":shape", b"").decode().split(",") if p]
            array = np.frombuffer(value, dtype=dtype).astype(np.float64)
            return array.reshape(shape[0], -1) if shape else array.reshape(-1, 1)
    return None


async def agreement_rate(
    client: redis.asyncio.Redis,
    stream: str,
    deployment: str,
    shadow_variant: str,
    since_us: int,
    monitor: mpb.MonitorConfig,
    tolerance: float = 1e-3,
) -> tuple[float | None, int]:
    """(agreement rate, compared rows, the shadow's failed calls included); the rate is None when no
    request answered by the served variant was mirrored to the shadow."""
    served: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    shadowed: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    failed: set[str] = set()  # requests whose mirrored call the shadow failed
    start = f"{since_us // 1000}"
    while True:
        raw: Any = await client.xrange(stream, min=start, max="+", count=_PAGE)
        for _id, fields in raw:
            if fields.get(b"deployment", b"").decode() != deployment:
                continue
            request_id = fields.get(b"request_id", b"").decode()
            role = fields.get(b"role", b"served").decode()
            mine = role == "shadow" and fields.get(b"variant", b"").decode() == shadow_variant
            if fields.get(b"ok") == b"0":
                if mine:
                    failed.add(request_id)
                continue
            output = _first_output(fields)
            if output is None:
                continue
            if mine:
                shadowed[request_id] = output
            elif role == "served":
                served[request_id] = output
        if len(raw) < _PAGE:
            break
        start = "(" + raw[-1][0].decode()
    agree = total = 0
    for request_id, ours in shadowed.items():
        theirs = served.get(request_id)
        if theirs is None or theirs.shape[0] != ours.shape[0]:
            continue
        flags = np.zeros(ours.shape[0], dtype=np.bool_)
        a, _ = derive(monitor, ours.tolist(), flags)
        b, _ = derive(monitor, theirs.tolist(), flags)
        if monitor.task == mpb.TASK_TYPE_REGRESSION:
            same = np.abs(a - b) <= tolerance * np.maximum(1.0, np.abs(b))
        else:
            same = a == b
        agree += int(same.sum())
        total += int(same.shape[0])
    for request_id in failed:
        theirs = served.get(request_id)
        if theirs is not None:
            total += int(theirs.shape[0])
    return (agree / total if total else None), total
