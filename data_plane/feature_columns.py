"""Where a model's feature references land in its input matrix, and the merge of request-time features.

Pure data, computed once per model version and block layout (:func:`column_layout`) and applied per
request (:func:`merge_request_features`). Why not a loop over the references per request: a model that
lists its 500 features one by one made that loop slice and concatenate 500 single columns on every
Predict (~0.9 ms hot); with a layout a request costs one fancy-index assignment at most, and nothing at
all for a model without request-time features.

Rules (see :mod:`data_plane.feature_vector`): references written ``request:NAME`` are filled from each
row's request-time features (every row must carry NAME); a request-time feature named exactly like a
single-feature stored reference replaces the stored value in the rows that carry it, and that value then
counts as present. Any other request-time feature is INVALID_ARGUMENT naming it and the names the model
accepts (:func:`refuse_unknown`): dropping it answered a typo, an unknown name, an override of a feature
a whole-view reference reads, or a ``request:``-prefixed key with the stored values as if it had
applied. The accepted names are part of the layout, so the check is one set comparison per row, and none
for a request without request-time features. Into an integer (or bool) model input a request-time value
must be a whole number the input's dtype holds (see :func:`_whole`), and so must a stored one
(:func:`not_whole`). Into a float16 or float32 input a finite request-time value must be one the dtype
holds (see :func:`_too_large`). NaN and infinities pass as they are into the input of a model that takes
them (``allow_non_finite``); for one that refuses them they are INVALID_ARGUMENT naming the row and the
feature (:func:`_not_finite`), where the model's input check named neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clients.errors import InvalidArgument
from data_plane.reader import PRESENT
from data_plane.refs import REQUEST_PREFIX

# The whole numbers each integer input dtype holds (bool: 0 and 1).
_WHOLE_RANGE: dict[np.dtype[Any], tuple[int, int]] = {
    np.dtype(t): (int(np.iinfo(t).min), int(np.iinfo(t).max))
    for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
} | {np.dtype(np.bool_): (0, 1)}


# The largest finite value of each float input dtype narrower than a double (request-time values are
# doubles on the wire; a float64 input holds them all).
_FLOAT_LIMIT: dict[np.dtype[Any], float] = {
    np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32)
}


def whole_range(dtype: np.dtype[Any]) -> tuple[int, int] | None:
    # Float inputs, the common case, take request-time values as they are: one attribute read per request.
    return None if dtype.kind == "f" else _WHOLE_RANGE.get(dtype)


def not_whole(values: npt.NDArray[Any], bounds: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Where stored values are not whole numbers from ``bounds`` (see :func:`whole_range`): numpy's cast
    would truncate them (2.7 -> 2) or turn them into garbage (NaN, 1e19 -> INT64_MIN) without a word."""
    low, high = bounds
    if values.dtype.kind == "f":
        # ``< high + 1``: a power of two, exact in a float, where ``<= high`` would round high up (2**63 - 1
        # is 2.0**63 as a float) and let 2**63 through. NaN fails every comparison.
        whole: npt.NDArray[np.bool_] = (
            (values >= low) & (values < float(high + 1)) & (np.floor(values) == values)
        )
        return ~whole
    bad = np.zeros(values.shape, np.bool_)
    if values.dtype.kind in "iu":  # compare only with bounds inside the stored type's own range
        info = np.iinfo(values.dtype)
        if low > info.min:
            bad |= values < low
        if high < info.max:
            bad |= values > high
    return bad


def _whole(value: float, bounds: tuple[int, int], dtype: np.dtype[Any], row: int, name: str) -> int:
    """A request-time value (a double on the wire) for an integer input. numpy's assignment raises on NaN
    and infinities (ValueError, OverflowError: an INTERNAL error) and silently wraps, truncates or (bool)
    rounds anything else it cannot hold; the request is refused instead, naming the feature."""
    low, high = bounds
    if not (low <= value <= high and float(value).is_integer()):  # NaN fails the comparison
        raise InvalidArgument(
            f"row {row}: request-time feature {name!r} is {value!r}; the model's {dtype} input takes whole "
            f"numbers from {low} to {high}"
        )
    return int(value)


def _too_large(value: float, limit: float, dtype: np.dtype[Any], row: int, name: str) -> InvalidArgument:
    """A finite request-time value beyond what a float input holds: numpy's assignment made it ±inf without
    a word, fed as such to a model that takes non-finite input, and refused by a strict model's input check
    as "holds NaN or infinite values", naming neither the row nor the feature."""
    return InvalidArgument(
        f"row {row}: request-time feature {name!r} is {value!r}; the model's {dtype} input holds finite "
        f"values from {-limit:g} to {limit:g}"
    )


def _not_finite(value: float, dtype: np.dtype[Any], row: int, name: str) -> InvalidArgument:
    """A NaN or infinite request-time value for a model that refuses non-finite input: its input check
    refused the whole input ("holds NaN or infinite values"), naming neither the row nor the feature."""
    return InvalidArgument(
        f"row {row}: request-time feature {name!r} is {value!r}; the model's {dtype} input does not take NaN "
        "or infinite values (allow_non_finite is off)"
    )


@dataclass(frozen=True, slots=True)
class ColumnLayout:
    width: int  # columns of the model input
    stored_width: int  # of them, columns read from the online store
    # Input column of each stored column (stored columns come in reference order); None when the stored
    # columns are the whole input, in order (no request-time references).
    stored_columns: npt.NDArray[np.intp] | None
    request_columns: tuple[tuple[int, str, str], ...]  # (input column, feature name, reference)
    # Single-feature stored references that a request-time feature of the same name replaces.
    overridable: Mapping[str, tuple[int, ...]]
    # Every request-time feature name this model reads: its ``request:`` names and ``overridable``.
    accepted: frozenset[str]


def column_layout(feature_refs: Sequence[str], counts: Sequence[int]) -> ColumnLayout:
    """``counts``: the number of columns of each stored reference (those not ``request:``), in order."""
    stored_columns: list[int] = []
    request_columns: list[tuple[int, str, str]] = []
    overridable: dict[str, tuple[int, ...]] = {}
    column = 0
    stored = iter(counts)
    for ref in feature_refs:
        if ref.startswith(REQUEST_PREFIX):
            request_columns.append((column, ref[len(REQUEST_PREFIX) :], ref))
            column += 1
            continue
        count = next(stored)
        if count == 1:
            overridable[ref] = (*overridable.get(ref, ()), column)
        stored_columns.extend(range(column, column + count))
        column += count
    if next(stored, None) is not None:
        raise ValueError("more column counts than stored references")
    return ColumnLayout(
        width=column,
        stored_width=len(stored_columns),
        stored_columns=np.asarray(stored_columns, dtype=np.intp) if request_columns else None,
        request_columns=tuple(request_columns),
        overridable=overridable,
        accepted=frozenset(name for _, name, _ in request_columns) | frozenset(overridable),
    )


def request_names(feature_refs: Sequence[str]) -> frozenset[str]:
    """The request-time feature names a model with ``feature_refs`` may read, without its layout: its
    ``request:`` names and every stored reference (one that proves to be a whole view of several
    features is not overridable, so this may name more than :attr:`ColumnLayout.accepted`, never fewer).
    What the other variants of a deployment read: a request's features are sent for all of them."""
    return frozenset(ref.removeprefix(REQUEST_PREFIX) for ref in feature_refs)


def refuse_unknown(
    layout: ColumnLayout,
    request_features: Sequence[Mapping[str, float]],
    model: str,
    also_read: frozenset[str] = frozenset(),
) -> None:
    """INVALID_ARGUMENT for the first request-time feature that ``model`` (its name and version, for the
    message) does not read, nor any other variant of its deployment (``also_read``, see
    :func:`request_names`): the caller sends one set of features for whichever variant the routing key
    picks, so a feature only a canary or a shadow reads is not an error when the primary serves. Not
    checked for a shadow's input: the request's features are aimed at the served model, and a shadow
    that reads fewer is fed what it reads."""
    accepted = layout.accepted | also_read if also_read else layout.accepted
    for row, features in enumerate(request_features):
        if not accepted.issuperset(features):
            name = min(set(features) - accepted)  # the same name whatever the map's order
            takes = ", ".join(repr(a) for a in sorted(accepted)) if accepted else "none"
            reader = f"model {model}" + (" or any other variant of its deployment" if also_read else "")
            raise InvalidArgument(
                f"row {row}: {reader} reads no request-time feature {name!r}; accepted: {takes} (the names "
                "of request: references, without the prefix, and of single-feature stored references; a "
                "feature read through a whole-view reference cannot be replaced)"
            )


def merge_request_features(
    layout: ColumnLayout,
    stored: npt.NDArray[Any],
    stored_status: npt.NDArray[np.uint8],
    request_features: Sequence[Mapping[str, float]],
    finite_only: bool = False,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8]]:
    """The model input and its statuses: ``stored`` ([rows, stored_width], reference order) with the
    request-time columns placed and overrides applied. Without either, ``stored`` itself comes back.
    ``finite_only``: the model refuses NaN and infinities in its (float) input."""
    rows = stored.shape[0]
    values, status = stored, stored_status
    if layout.request_columns:
        values = np.zeros((rows, layout.width), stored.dtype)
        status = np.full((rows, layout.width), PRESENT, np.uint8)  # request-time values are present
        values[:, layout.stored_columns] = stored
        status[:, layout.stored_columns] = stored_status
        bounds = whole_range(values.dtype)
        limit = _FLOAT_LIMIT.get(values.dtype, math.inf)  # inf: nothing finite is too large
        for column, name, ref in layout.request_columns:
            for row in range(rows):
                value = request_features[row].get(name) if request_features else None
                if value is None:
                    raise InvalidArgument(f"row {row} has no request-time feature {name!r} ({ref})")
                if bounds is not None:
                    value = _whole(value, bounds, values.dtype, row, name)
                elif limit < abs(value) < math.inf:  # NaN fails the comparison
                    raise _too_large(value, limit, values.dtype, row, name)
                elif finite_only and not math.isfinite(value):
                    raise _not_finite(value, values.dtype, row, name)
                values[row, column] = value
    overridable = layout.overridable
    if request_features and overridable:
        copied = values is not stored
        bounds = whole_range(values.dtype)
        limit = _FLOAT_LIMIT.get(values.dtype, math.inf)
        for row, features in enumerate(request_features):
            for name, value in features.items():
                columns = overridable.get(name)
                if columns is None:
                    continue
                if bounds is not None:
                    value = _whole(value, bounds, values.dtype, row, name)
                elif limit < abs(value) < math.inf:
                    raise _too_large(value, limit, values.dtype, row, name)
                elif finite_only and not math.isfinite(value):
                    raise _not_finite(value, values.dtype, row, name)
                if not copied:  # ``stored`` may be a read-only view of Redis's bytes
                    values, status, copied = values.copy(), status.copy(), True
                for column in columns:
                    values[row, column] = value
                    status[row, column] = PRESENT
    return values, status


def replaced(
    layout: ColumnLayout, request_features: Sequence[Mapping[str, float]], rows: int
) -> npt.NDArray[np.bool_]:
    """Where in the model input ([rows, width]) a request-time value replaces the stored one, as
    :func:`merge_request_features` places them: the stored values there never reach the model."""
    mask = np.zeros((rows, layout.width), np.bool_)
    if request_features and layout.overridable:
        for row, features in enumerate(request_features):
            for name in features:
                columns = layout.overridable.get(name)
                if columns is not None:
                    mask[row, list(columns)] = True
    return mask
