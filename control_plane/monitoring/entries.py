"""Decoding the data plane's prediction-log entries (``data_plane/prediction_log.py``) for monitoring.

Fields relied on, as documented there: on every entry ``request_id``, ``deployment``, ``model``,
``version``, ``variant``, ``role`` and ``ts_us`` (``ok`` when present); on sampled entries ``features``
(raw row-major bytes) with ``features_dtype`` and ``features_shape`` (``"rows,cols"``), and per output
``output:<name>`` with ``output:<name>:dtype`` and ``output:<name>:shape``. Shadow entries (mirrored
calls; their request id is the served call's), failed requests and unsampled entries carry nothing to
monitor and decode to None. A sampled entry whose bytes do not match its declared dtype and shape is
malformed: also None, counted by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]
_OUTPUT = b"output:"


class MalformedEntry(ValueError):
    """A sampled entry whose arrays cannot be decoded."""


@dataclass(frozen=True)
class LoggedPrediction:
    request_id: str
    deployment: str
    model: str
    version: int
    variant: str
    ts_us: int
    #: ``[rows, features]`` as float64; None when the entry carries no features.
    features: FloatMatrix | None
    #: Output name → ``[rows, k]`` float64, in the entry's order.
    outputs: dict[str, FloatMatrix]
    #: Names of outputs whose logged dtype was an integer type (class codes, not scores).
    integer_outputs: frozenset[str]


def decode_entry(fields: Mapping[bytes, bytes]) -> LoggedPrediction | None:
    """The monitored content of one entry, or None when there is none (see the module doc). Raises
    :class:`MalformedEntry` for undecodable arrays or header fields."""
    if _text(fields, b"role") not in ("", "served"):
        return None
    if _text(fields, b"ok") == "0":
        return None
    deployment = _text(fields, b"deployment")
    request_id = _text(fields, b"request_id")
    if not deployment or not request_id:
        return None
    features = _array(fields, b"features") if b"features" in fields else None
    outputs: dict[str, FloatMatrix] = {}
    integers: set[str] = set()
    for key in fields:
        if key.startswith(_OUTPUT) and not key.endswith((b":dtype", b":shape")):
            name = key[len(_OUTPUT) :].decode()
            outputs[name] = _array(fields, key)
            if np.dtype(_text(fields, key + b":dtype")).kind in "iub":
                integers.add(name)
    if features is None and not outputs:
        return None
    try:
        version = int(_text(fields, b"version") or "0")
        ts_us = int(_text(fields, b"ts_us"))
    except ValueError as exc:
        raise MalformedEntry(f"bad version or ts_us: {exc}") from None
    return LoggedPrediction(
        request_id=request_id,
        deployment=deployment,
        model=_text(fields, b"model"),
        version=version,
        variant=_text(fields, b"variant"),
        ts_us=ts_us,
        features=features,
        outputs=outputs,
        integer_outputs=frozenset(integers),
    )


def _array(fields: Mapping[bytes, bytes], key: bytes) -> FloatMatrix:
    """``fields[key]`` decoded with its ``_dtype``/``_shape`` companions as ``[rows, cols]`` float64."""
    separator = b"_" if key == b"features" else b":"
    try:
        dtype = np.dtype(_text(fields, key + separator + b"dtype"))
        shape = tuple(int(part) for part in _text(fields, key + separator + b"shape").split(",") if part)
        flat = np.frombuffer(fields[key], dtype=dtype)
        array = flat.reshape(shape) if shape else flat
    except (TypeError, ValueError) as exc:
        raise MalformedEntry(f"cannot decode {key.decode()}: {exc}") from None
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array[:, np.newaxis]
    elif array.ndim > 2:
        array = array.reshape(array.shape[0], -1)
    return np.asarray(array, dtype=np.float64)


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    value = fields.get(name)
    return value.decode() if value is not None else ""
