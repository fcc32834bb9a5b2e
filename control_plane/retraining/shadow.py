"""The agreement rate of a shadow variant with the served answers, from the prediction log.

A mirrored call's entry (``role = shadow``) carries the shadow's outputs under the served call's request
id; the served entry of a sampled request carries the served outputs. Every mirrored request is sampled
(see ``data_plane/prediction_log.py``), so pairs are found by request id. Each side's prediction is read
from the output the monitor reads, typed as it types it (:mod:`control_plane.monitoring.outputs`). Two
answers agree when the derived predictions (as the monitor derives them) are equal for classifiers, or
within ``tolerance`` × max(1, |served|) for regressors. A mirrored call the shadow failed (``ok = 0``) for
a request the served variant answered disagrees on every served row: skipping it would let a challenger
that fails every call leave no pair at all, and so never fail its phase. A shadow entry whose outputs
cannot be decoded counts as such a failed call (logged); a request the served variant failed, or whose
served entry cannot be decoded, compares nothing. One bad entry never fails the whole phase's read.
Read-only ``XRANGE`` over the phase's time span.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import redis.asyncio

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.monitoring.entries import MalformedEntry, decode_outputs
from control_plane.monitoring.outputs import prediction_output
from control_plane.monitoring.performance import derive

_PAGE = 1000
_log = logging.getLogger("aether.control_plane.retraining")


class _Answer(NamedTuple):
    """One entry's prediction output: ``[rows, k]`` rows, and whether they are class codes."""

    rows: npt.NDArray[np.float64]
    class_codes: bool


def _answer(fields: dict[bytes, bytes], monitor: mpb.MonitorConfig) -> _Answer | None:
    """The entry's prediction output, chosen and typed as the monitor does (the output named by
    ``prediction_output``, else the first; integer outputs are class codes, so a shadow answering
    class 1 where the served variant said class 2 disagrees); None when the entry has no such output."""
    outputs, class_codes = decode_outputs(fields)
    name = prediction_output(monitor, outputs)
    rows = outputs.get(name)
    return None if rows is None else _Answer(rows, name in class_codes)


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
    served: dict[str, _Answer] = {}
    shadowed: dict[str, _Answer] = {}
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
            try:
                output = _answer(fields, monitor)
            except MalformedEntry as exc:
                # Raising would fail every later read of the phase too, and stall it for good.
                _log.warning("shadow comparison skips prediction-log entry %s: %s", _id.decode(), exc)
                if mine:
                    failed.add(request_id)
                continue
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
        if theirs is None or theirs.rows.shape[0] != ours.rows.shape[0]:
            continue
        a, _ = derive(monitor, ours.rows.tolist(), np.full(ours.rows.shape[0], ours.class_codes))
        b, _ = derive(monitor, theirs.rows.tolist(), np.full(theirs.rows.shape[0], theirs.class_codes))
        if monitor.task == mpb.TASK_TYPE_REGRESSION:
            same = np.abs(a - b) <= tolerance * np.maximum(1.0, np.abs(b))
        else:
            same = a == b
        agree += int(same.sum())
        total += int(same.shape[0])
    for request_id in failed:
        theirs = served.get(request_id)
        if theirs is not None:
            total += int(theirs.rows.shape[0])
    return (agree / total if total else None), total
