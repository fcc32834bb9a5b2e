"""Per-request input checks against a model's signature, done before a request joins a batch, so that a
malformed request is answered INVALID_ARGUMENT on its own and never fails the requests batched with it.

Every message names the input and the expected signature, so the caller can fix the request from the
error alone. The checks are compiled once per model version (:class:`InputValidator`): this runs on the
event loop for every request.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from clients.errors import InvalidArgument, ResourceExhausted
from data_plane.models.spec import DYNAMIC, ModelSpec
from data_plane.runtime.base import Array


@dataclass(frozen=True, slots=True)
class ValidInputs:
    arrays: dict[str, Array]  # in the model's dtype, C-contiguous
    rows: int  # size of the batch dimension (1 for models without one)
    group: Hashable  # requests with equal groups concatenate along the batch dimension


def batchable(spec: ModelSpec) -> bool:
    """Whether requests can be concatenated: every input and output has a dynamic first dimension."""
    tensors = (*spec.inputs, *spec.outputs)
    return bool(tensors) and all(t.shape and t.shape[0] == DYNAMIC for t in tensors)


def _differs(shape: tuple[int, ...], fixed: tuple[tuple[int, int], ...]) -> bool:
    for axis, size in fixed:  # noqa: SIM110 (a plain loop: any() over a generator costs more per call)
        if shape[axis] != size:
            return True
    return False


def _all_finite(array: Array) -> bool:
    """Whether every value is finite. A sum is finite exactly when no value is NaN or infinite, unless
    finite values overflow it; only then are the values checked one by one. One reduction instead of a
    boolean array and a second one: this runs per request."""
    total = float(np.add.reduce(array, axis=None))
    return math.isfinite(total) or bool(np.isfinite(array).all())


def output_row_bytes(spec: ModelSpec) -> int:
    """The fewest bytes one row of a batching model makes its runtime allocate: the sum of its outputs'
    rows, a dynamic size counted as 1. The sum, not the smallest row (what a caller asking for one output
    alone gets back): the runtime computes every output of the spec whichever ones are asked for, so a
    bound by the smallest let a [262000, 0] request allocate 780 MiB of a [b, 256] output before its answer
    was refused (32 GiB under the default limit)."""
    return sum(
        t.np_dtype.itemsize * math.prod(1 if d == DYNAMIC else d for d in t.shape[1:]) for t in spec.outputs
    )


#: The request id a ModelInfer answer echoes that :func:`answer_overhead_bytes` makes room for: ids are
#: short (a UUID is 36 characters); a longer one near the row limit makes the answer too large to send,
#: refused after the run as any answer over the limit is.
ID_ALLOWANCE_BYTES = 64

_FIELD = 1 + 10  # a field's tag and its length (or value) as a varint at its widest


def answer_overhead_bytes(spec: ModelSpec) -> int:
    """A bound on the bytes of a ModelInfer answer besides its outputs' values (see
    ``oip_tensors.encode_response``): the model's name and version, a request id of up to
    :data:`ID_ALLOWANCE_BYTES`, and each output's entry, name, datatype (at most 8 characters), shape (10
    bytes a dimension at most) and the tag and length of its contents. Without it the row limit advertised
    a number of rows whose answer, once the model had run, was refused as too large to send."""
    total = _FIELD + len(spec.name.encode()) + _FIELD + len(str(spec.version)) + _FIELD + ID_ALLOWANCE_BYTES
    for t in spec.outputs:
        total += (
            _FIELD + (_FIELD + len(t.name.encode())) + (_FIELD + 8) + (_FIELD + 10 * len(t.shape)) + _FIELD
        )
    return total


_Check = tuple[str, np.dtype[Any], tuple[int, ...], tuple[tuple[int, int], ...], bool]


class InputValidator:
    """``max_answer_bytes``: the most one answer may hold (the server's ``max_message_bytes``; None:
    unlimited), which gives :attr:`max_rows`, the most rows of a batching request whose outputs (all of
    them: the runtime computes them all, see :func:`output_row_bytes`) fit one answer beside its other
    fields (:func:`answer_overhead_bytes`), computed once per version. ModelInfer refuses
    more (:meth:`too_many_rows`) before the request runs: a zero-size input ([2**31-1, 0]) carries any
    number of rows in a few bytes, and the model's answer to it was allocated (gigabytes) before it was
    found too large to send. (Predict's rows are capped by ``max_rows_per_request`` already.)"""

    def __init__(self, spec: ModelSpec, max_answer_bytes: int | None = None) -> None:
        self.spec = spec
        self._label = f"model {spec.name} v{spec.version}"
        self._names = frozenset(t.name for t in spec.inputs)
        # Per input: name, dtype, declared shape, its fixed dimensions as (axis, size), and whether NaN
        # and infinities are refused. Plain loops over these beat generic ones: this runs per request.
        # Both rules are built: a deployment's own config may take non-finite values where the version's
        # spec (another deployment's config, see ``__call__``) does not, or the other way round.
        self._checks_by_rule = {allowed: self._build_checks(spec, allowed) for allowed in (False, True)}
        self._checks = self._checks_by_rule[spec.allow_non_finite]
        self._batch = batchable(spec)
        self._row_bytes = output_row_bytes(spec) if self._batch else 0
        self._max_answer_bytes = max_answer_bytes
        self.max_rows = (
            max(0, max_answer_bytes - answer_overhead_bytes(spec)) // self._row_bytes
            if max_answer_bytes is not None and self._row_bytes
            else sys.maxsize
        )

    @staticmethod
    def _build_checks(spec: ModelSpec, allow_non_finite: bool) -> list[_Check]:
        return [
            (
                t.name,
                t.np_dtype,
                t.shape,
                tuple((axis, size) for axis, size in enumerate(t.shape) if size != DYNAMIC),
                t.np_dtype.kind == "f" and not allow_non_finite,
            )
            for t in spec.inputs
        ]

    def too_many_rows(self, rows: int) -> ResourceExhausted:
        return ResourceExhausted(
            f"{self._label}: a request of {rows} rows makes the model compute outputs of at least "
            f"{rows * self._row_bytes} bytes, more than the {self._max_answer_bytes} this "
            f"server sends in one message (max_message_bytes); "
            + (
                f"send at most {self.max_rows} rows per call (with a request id of at most "
                f"{ID_ALLOWANCE_BYTES} bytes)"
                if self.max_rows
                else "not even one row fits"
            )
        )

    def _fail(self, message: str) -> InvalidArgument:
        return InvalidArgument(f"{self._label}: {message}; expected {self.spec.signature()}")

    def __call__(self, inputs: Mapping[str, Array], allow_non_finite: bool | None = None) -> ValidInputs:
        """``allow_non_finite``: the caller's own rule for NaN and infinities (a deployment's serving
        config, which may differ from the config this version's spec came from: the data plane holds one
        spec per version, so deployments that share it share its batching, not this rule); None: the
        spec's."""
        if len(inputs) != len(self._names) or not self._names.issuperset(inputs):
            unknown = sorted(set(inputs) - self._names)
            if unknown:
                raise self._fail(f"no input named {unknown[0]!r}")
        arrays: dict[str, Array] = {}
        rows = -1
        group: list[tuple[int, ...]] = []
        checks = self._checks if allow_non_finite is None else self._checks_by_rule[allow_non_finite]
        for name, dtype, expected, fixed, finite in checks:
            array = inputs.get(name)
            if array is None:
                raise self._fail(f"input {name!r} is missing")
            if array.dtype != dtype:
                raise self._fail(f"input {name!r} has dtype {array.dtype}, expected {dtype}")
            shape = array.shape
            if len(shape) != len(expected) or _differs(shape, fixed):
                dims = ", ".join(str(d) for d in expected)
                raise self._fail(f"input {name!r} has shape {list(shape)}, expected {name}: {dtype}[{dims}]")
            if finite and not _all_finite(array):
                raise InvalidArgument(
                    f"{self._label}: input {name!r} holds NaN or infinite values, which this model does "
                    "not accept"
                )
            if self._batch:
                if rows < 0:
                    rows = shape[0]
                elif shape[0] != rows:
                    raise self._fail(
                        f"input {name!r} has {shape[0]} rows but {self._checks[0][0]!r} has {rows}; "
                        "every input "
                        "must have the same batch size"
                    )
                if len(shape) > 1:
                    group.append(shape[1:])
            arrays[name] = array if array.flags.c_contiguous else np.ascontiguousarray(array)
        if self._batch and rows == 0:
            raise InvalidArgument(f"{self._label}: the request has no rows")
        return ValidInputs(arrays, rows if self._batch else 1, tuple(group))


def validate_inputs(spec: ModelSpec, inputs: Mapping[str, Array]) -> ValidInputs:
    return InputValidator(spec)(inputs)
