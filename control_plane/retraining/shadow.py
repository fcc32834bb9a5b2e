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

A classifier's answers are compared by class label, not by column: each entry names the model version that
answered it, and each version declares its classes in its ONNX metadata (``aether.classes``, one label per
score column; ``classes_of`` reads them, :mod:`control_plane.model_registry.model_classes`). When both
versions declare the same set of labels, the shadow's score columns (or class codes) are put in the served
version's order first; two models with the same classes in another order used to disagree on every row
they agreed on. When the two declare different label sets, or one declares labels while the other answers
several score columns without any (which column is which class is then unknown), the answers are *not
comparable*: :class:`Agreement` says why (``not_comparable``) and carries no rate, rather than a number
that measures the columns' order. Versions that declare no classes are compared as the monitor reads them:
an index or class code as the label it equals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import redis.asyncio

from clients.aether.v1 import monitoring_pb2 as mpb
from control_plane.model_registry.model_classes import DeclaredClasses
from control_plane.monitoring.entries import MalformedEntry, decode_outputs
from control_plane.monitoring.model_outputs import class_values
from control_plane.monitoring.outputs import prediction_output
from control_plane.monitoring.performance import Classes, derive

_PAGE = 1000
_log = logging.getLogger("aether.control_plane.retraining")

#: A model version: (model name, version).
Version = tuple[str, int]
#: The classes a model version declares (its ``aether.classes``), or None when it declares none.
ClassesOf = Callable[[str, int], DeclaredClasses | None]


class Agreement(NamedTuple):
    """The shadow's agreement with the served answers. ``rate``: the share of compared rows whose
    predictions agree (None when nothing could be compared); ``rows``: the rows compared, the shadow's
    failed calls included; ``not_comparable``: why the two models' answers cannot be compared at all
    (different classes, or columns without labels), empty when they can."""

    rate: float | None
    rows: int
    not_comparable: str = ""


class _Answer(NamedTuple):
    """One entry's prediction output: ``[rows, k]`` rows, whether they are class codes, and the model
    version that answered."""

    rows: npt.NDArray[np.float64]
    class_codes: bool
    version: Version


def _answer(fields: dict[bytes, bytes], monitor: mpb.MonitorConfig) -> _Answer | None:
    """The entry's prediction output, chosen and typed as the monitor does (the output named by
    ``prediction_output``, else the first; integer outputs are class codes, so a shadow answering
    class 1 where the served variant said class 2 disagrees); None when the entry has no such output."""
    outputs, class_codes = decode_outputs(fields)
    name = prediction_output(monitor, outputs)
    rows = outputs.get(name)
    if rows is None:
        return None
    try:
        version = (fields.get(b"model", b"").decode(), int(fields.get(b"version", b"0") or b"0"))
    except ValueError as exc:  # UnicodeDecodeError too
        raise MalformedEntry(f"bad model or version: {exc}") from None
    return _Answer(rows, name in class_codes, version)


def _labels(declared: DeclaredClasses) -> tuple[object, ...]:
    """Declared labels as comparable values: numbers when all are (1 and 1.0 are one label), else text."""
    numbers = class_values(declared)
    return numbers if numbers is not None else tuple(str(value) for value in declared)


def _several_columns(answer: _Answer) -> bool:
    return not answer.class_codes and answer.rows.shape[1] > 1


def _describe(version: Version) -> str:
    return f"{version[0]} v{version[1]}"


class _Aligned(NamedTuple):
    """A pair made comparable: the shadow's rows in the served version's column (or code) order, and
    the classes each side is derived with."""

    shadow_rows: npt.NDArray[np.float64]
    shadow_classes: Classes | None
    served_classes: Classes | None


def _align(
    ours: _Answer, theirs: _Answer, declared: Mapping[Version, DeclaredClasses | None]
) -> _Aligned | str:
    """The shadow answer ``ours`` made comparable with the served ``theirs`` by class label, or why it
    cannot be (module doc)."""
    mine, served = declared.get(ours.version), declared.get(theirs.version)
    if mine is None and served is None:  # as the monitor reads them: an index is the label it equals
        return _Aligned(ours.rows, None, None)
    if mine is None or served is None:
        lacking, having = (ours, theirs) if mine is None else (theirs, ours)
        labels: DeclaredClasses = served if served is not None else mine or ()
        if _several_columns(lacking):
            return (
                f"{_describe(lacking.version)} declares no classes (aether.classes) for its"
                f" {lacking.rows.shape[1]} score columns while {_describe(having.version)} declares"
                f" {list(labels)}, so which column is which class is unknown"
            )
        numbers = class_values(labels)
        return _Aligned(
            ours.rows, numbers if mine is not None else None, numbers if served is not None else None
        )
    if set(_labels(mine)) != set(_labels(served)):
        return (
            f"the shadow {_describe(ours.version)} declares the classes {list(mine)} and the primary"
            f" {_describe(theirs.version)} {list(served)}: their predictions are not of the same classes"
        )
    for answer, labels in ((ours, mine), (theirs, served)):
        if _several_columns(answer) and answer.rows.shape[1] != len(labels):
            return (
                f"{_describe(answer.version)} declares {len(labels)} classes (aether.classes) for its"
                f" {answer.rows.shape[1]} score columns"
            )
    # Each of the served version's labels at the shadow's column (or code) that holds it.
    served_order = _labels(served)
    position = {label: i for i, label in enumerate(_labels(mine))}
    order = np.array([position[label] for label in served_order])
    if ours.class_codes:
        codes = ours.rows[:, 0]
        known = np.isfinite(codes) & (codes >= 0) & (codes < len(order)) & (codes == np.round(codes))
        inverse = np.argsort(order)  # shadow code -> the served version's code of the same label
        rows = np.full_like(ours.rows, np.nan)
        rows[known, 0] = inverse[codes[known].astype(np.int64)]
    elif ours.rows.shape[1] > 1:
        rows = ours.rows[:, order]
    else:  # one score: the positive class's, whatever the order of the classes
        rows = ours.rows
    numbers = class_values(served)
    return _Aligned(rows, numbers, numbers)


async def agreement_rate(
    client: redis.asyncio.Redis,
    stream: str,
    deployment: str,
    shadow_variant: str,
    since_us: int,
    monitor: mpb.MonitorConfig,
    tolerance: float = 1e-3,
    classes_of: ClassesOf | None = None,
) -> Agreement:
    """The shadow's :class:`Agreement` with the served answers since ``since_us``; its rate is None when
    no request answered by the served variant was mirrored to the shadow, or when the answers are not
    comparable. ``classes_of``: the classes a model version declares (called in a thread, once per
    version met; None: no version declares any)."""
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
    pairs = [
        (ours, theirs)
        for request_id, ours in shadowed.items()
        if (theirs := served.get(request_id)) is not None and theirs.rows.shape[0] == ours.rows.shape[0]
    ]
    declared = await _declared(pairs, monitor, classes_of)
    agree = total = 0
    for ours, theirs in pairs:
        n = ours.rows.shape[0]
        if monitor.task == mpb.TASK_TYPE_REGRESSION:
            a, _ = derive(monitor, ours.rows.tolist(), np.full(n, ours.class_codes))
            b, _ = derive(monitor, theirs.rows.tolist(), np.full(n, theirs.class_codes))
            same = np.abs(a - b) <= tolerance * np.maximum(1.0, np.abs(b))
        else:
            aligned = _align(ours, theirs, declared)
            if isinstance(aligned, str):
                return Agreement(None, 0, aligned)
            shadow_codes, served_codes = np.full(n, ours.class_codes), np.full(n, theirs.class_codes)
            a, _ = derive(monitor, aligned.shadow_rows.tolist(), shadow_codes, [aligned.shadow_classes] * n)
            b, _ = derive(monitor, theirs.rows.tolist(), served_codes, [aligned.served_classes] * n)
            same = a == b
        agree += int(same.sum())
        total += int(same.shape[0])
    for request_id in failed:
        theirs = served.get(request_id)
        if theirs is not None:
            total += int(theirs.rows.shape[0])
    return Agreement(agree / total if total else None, total)


async def _declared(
    pairs: list[tuple[_Answer, _Answer]], monitor: mpb.MonitorConfig, classes_of: ClassesOf | None
) -> dict[Version, DeclaredClasses | None]:
    """The classes each version met in ``pairs`` declares (none for a regressor: not needed)."""
    if classes_of is None or monitor.task == mpb.TASK_TYPE_REGRESSION:
        return {}
    versions = sorted({answer.version for pair in pairs for answer in pair})
    found = await asyncio.gather(*(asyncio.to_thread(classes_of, *version) for version in versions))
    return dict(zip(versions, found, strict=True))
