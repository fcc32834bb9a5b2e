"""Decoding the data plane's prediction-log entries (``data_plane/prediction_log.py``) for monitoring.

Fields relied on, as documented there: on every entry ``request_id``, ``deployment``, ``model``,
``version``, ``variant``, ``role`` and ``ts_us`` (``ok`` when present); on sampled entries ``features``
(raw row-major bytes) with ``features_dtype`` and ``features_shape`` (``"rows,cols"``), and per output
``output:<name>`` with ``output:<name>:dtype`` and ``output:<name>:shape``. Shadow entries (mirrored
calls; their request id is the served call's), failed requests and unsampled entries carry nothing to
monitor and decode to None, and so do the data plane's gap markers (``role`` = ``gap``: entries it
could not write; the canary controller reads them, the monitor counts them skipped like any entry
without a sample).

A sampled entry that cannot be decoded is *malformed*: :func:`decode_entry` raises
:class:`MalformedEntry` and nothing else for anything in its bytes — arrays that do not match their
declared dtype and shape, a dtype that is not numeric (bool, integer or float), text that is not UTF-8,
a version or time that is not an integer, or a value the prediction index cannot store (a request id
longer than its column, a name longer than a name column, a version or time out of its integer range).
The caller counts it and moves on: one entry's bytes never stop the reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from control_plane.db.models import NAME_LENGTH
from control_plane.monitoring.outputs import holds_class_codes
from control_plane.monitoring.tables import REQUEST_ID_LENGTH

FloatMatrix = npt.NDArray[np.float64]
_OUTPUT = b"output:"
_NUMERIC_KINDS = "biuf"
# The prediction index's integer columns: version is a 32-bit INTEGER, ts_us a 64-bit BIGINT.
_VERSION_RANGE = (-(2**31), 2**31 - 1)
_TS_RANGE = (-(2**63), 2**63 - 1)


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
    :class:`MalformedEntry`, and no other exception, for an entry it cannot decode or index."""
    if _text(fields, b"role") not in ("", "served"):  # a shadow's entry, or a gap marker
        return None
    if _text(fields, b"ok") == "0":
        return None
    deployment = _text(fields, b"deployment")
    request_id = _text(fields, b"request_id")
    if not deployment or not request_id:
        return None
    model, variant = _text(fields, b"model"), _text(fields, b"variant")
    _check_length("request_id", request_id, REQUEST_ID_LENGTH)
    for name, value in (("deployment", deployment), ("model", model), ("variant", variant)):
        _check_length(name, value, NAME_LENGTH)
    features = _array(fields, b"features") if b"features" in fields else None
    outputs, integers = decode_outputs(fields)
    if features is None and not outputs:
        return None
    try:
        version = int(_text(fields, b"version") or "0")
        ts_us = int(_text(fields, b"ts_us"))
    except ValueError as exc:
        raise MalformedEntry(f"bad version or ts_us: {exc}") from None
    if not _VERSION_RANGE[0] <= version <= _VERSION_RANGE[1] or not _TS_RANGE[0] <= ts_us <= _TS_RANGE[1]:
        raise MalformedEntry(f"version {version} or ts_us {ts_us} out of range")
    return LoggedPrediction(
        request_id=request_id,
        deployment=deployment,
        model=model,
        version=version,
        variant=variant,
        ts_us=ts_us,
        features=features,
        outputs=outputs,
        integer_outputs=integers,
    )


def decode_outputs(fields: Mapping[bytes, bytes]) -> tuple[dict[str, FloatMatrix], frozenset[str]]:
    """An entry's outputs (name → ``[rows, k]`` float64, in the entry's order) and the names of those
    holding class codes (:func:`.outputs.holds_class_codes` of the logged dtype), whatever the entry's
    role: the shadow agreement rate reads shadow entries with it too. Raises :class:`MalformedEntry`."""
    outputs: dict[str, FloatMatrix] = {}
    integers: set[str] = set()
    for key in fields:
        if key.startswith(_OUTPUT) and not key.endswith((b":dtype", b":shape")):
            name = _utf8(key[len(_OUTPUT) :], "an output name")
            outputs[name] = _array(fields, key)  # checks the dtype is numeric first
            if holds_class_codes(_text(fields, key + b":dtype")):
                integers.add(name)
    return outputs, frozenset(integers)


def _array(fields: Mapping[bytes, bytes], key: bytes) -> FloatMatrix:
    """``fields[key]`` decoded with its ``_dtype``/``_shape`` companions as ``[rows, cols]`` float64."""
    separator = b"_" if key == b"features" else b":"
    dtype_text = _text(fields, key + separator + b"dtype")
    shape_text = _text(fields, key + separator + b"shape")
    try:
        dtype = np.dtype(dtype_text)
        if dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"dtype {dtype_text!r} is not numeric")
        shape = tuple(int(part) for part in shape_text.split(",") if part)
        flat = np.frombuffer(fields[key], dtype=dtype)
        array = flat.reshape(shape) if shape else flat
        if array.ndim == 0:
            array = array.reshape(1, 1)
        elif array.ndim == 1:
            array = array[:, np.newaxis]
        elif array.ndim > 2:
            array = array.reshape(array.shape[0], -1)
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError, SyntaxError) as exc:
        # SyntaxError: numpy reads a dtype text holding a comma as a structured dtype's fields, through
        # ast.literal_eval (``,`` or ``f8,(1e9999,)f8``); it escaped, and the production holdout and the
        # shadow agreement, which skip MalformedEntry alone, failed on one such entry.
        raise MalformedEntry(f"cannot decode {key.decode(errors='replace')}: {exc}") from None


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    value = fields.get(name)
    return _utf8(value, name.decode(errors="replace")) if value is not None else ""


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise MalformedEntry(f"{what} is not UTF-8: {exc}") from None


def _check_length(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise MalformedEntry(f"{name} is {len(value)} characters, more than the {limit} the index stores")
