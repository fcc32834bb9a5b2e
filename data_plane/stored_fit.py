"""Whether the stored values a Predict reads fit the model's input: each block cast to the input's dtype,
the values it cannot hold found in the cast (not a whole number its integers hold; a finite number a
narrower float makes ±inf; NaN or ±inf for a model that refuses non-finite input), and refused with
FAILED_PRECONDITION naming the feature and the entity only where one reaches the model (after request-time
values are merged, :mod:`data_plane.feature_vector`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib import recfunctions

from clients.errors import FailedPrecondition
from data_plane.feature_columns import ColumnLayout, not_whole, replaced, whole_range
from data_plane.models.spec import ModelSpec
from data_plane.reader import BlockResult


@dataclass(frozen=True, slots=True)
class Unfit:
    """Stored values of one block that the model's input cannot hold (``mask``: [rows, block columns]),
    found in the cast. Refused only where one reaches the model (:func:`refuse_unfit`): a request-time
    value may replace it, and refusing then blamed data the model would never see."""

    block: BlockResult
    columns: list[npt.NDArray[Any]]  # the block's stored columns as read, in the order of the mask's
    mask: npt.NDArray[np.bool_]


def block_matrix(
    block: BlockResult, rows: Sequence[Mapping[str, str]], dtype: np.dtype[Any], finite_only: bool
) -> tuple[npt.NDArray[Any], Unfit | None]:
    """``finite_only``: the input is a float one of a model that refuses NaN and infinities (see
    :func:`takes_finite_only`)."""
    plan = block.plan
    raw = np.frombuffer(block.values, dtype=plan.out_dtype)
    bounds = whole_range(dtype)  # None for a float input, the common case
    if bounds is None:
        overflows = _may_overflow(plan.out_dtype, dtype)
        if not (overflows or finite_only):  # nothing to check
            return _cast(raw, len(rows), plan.column_count, dtype), None
        with np.errstate(over="ignore"):  # a value the input cannot hold is found just below
            cast = _cast(raw, len(rows), plan.column_count, dtype)
        if all_finite(cast):  # the usual answer: one reduction
            return cast, None
        columns = _columns(raw, len(rows), plan.column_count)
        if finite_only:
            # Every non-finite value reaching a model that refuses them: stored so, or made so by the cast.
            # Fed on, the model's input check answered INVALID_ARGUMENT, blaming the caller, naming neither
            # the feature nor the entity. (Missing values are zeros here, filled later.)
            mask = ~np.isfinite(cast)
        else:
            # Finite stored, infinite cast: an overflow. A stored inf or NaN stays so, as stored.
            mask = np.isinf(cast) & np.column_stack([np.isfinite(c) for c in columns])
        return cast, Unfit(block, columns, mask) if mask.any() else None
    # An integer (or bool) input: checked when some stored type is wider than it.
    names = raw.dtype.names
    if names is None:
        unsafe = not np.can_cast(raw.dtype, dtype)
    else:
        unsafe = not all(np.can_cast(raw.dtype[n], dtype) for n in names)
    if not unsafe:
        return _cast(raw, len(rows), plan.column_count, dtype), None
    columns = _columns(raw, len(rows), plan.column_count)
    mask = np.column_stack([not_whole(c, bounds) for c in columns])
    if not mask.any():
        return _cast(raw, len(rows), plan.column_count, dtype), None
    with np.errstate(invalid="ignore", over="ignore"):  # the garbage is refused or replaced after the merge
        cast = _cast(raw, len(rows), plan.column_count, dtype)
    return cast, Unfit(block, columns, mask)


def takes_finite_only(spec: ModelSpec, dtype: np.dtype[Any]) -> bool:
    """Whether the model's input check refuses NaN and infinities (``models.validation``): a float input of
    a model without ``allow_non_finite``."""
    return dtype.kind == "f" and not spec.allow_non_finite


def all_finite(values: npt.NDArray[Any]) -> bool:
    """Whether every value is finite: one reduction (a sum is finite exactly when no value is NaN or
    infinite, unless finite values overflow it; only then are they checked one by one)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.add.reduce(values, axis=None))
    return math.isfinite(total) or bool(np.isfinite(values).all())


def _cast(raw: npt.NDArray[Any], row_count: int, column_count: int, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """The block's values as a [rows, columns] matrix of the input's dtype (``raw`` itself when it is)."""
    if raw.dtype.names is None:
        return raw.reshape(row_count, column_count).astype(dtype, copy=False)
    return np.asarray(recfunctions.structured_to_unstructured(raw, dtype=dtype))


def _columns(raw: npt.NDArray[Any], row_count: int, column_count: int) -> list[npt.NDArray[Any]]:
    """The block's stored columns as read, in the order of :func:`_cast`'s."""
    if raw.dtype.names is None:
        matrix = raw.reshape(row_count, column_count)
        return [matrix[:, j] for j in range(column_count)]
    return [raw[name] for name in raw.dtype.names]


# (stored layout, float input dtype) -> whether a finite stored value can overflow to ±inf in the cast.
_OVERFLOWS: dict[tuple[np.dtype[Any], np.dtype[Any]], bool] = {}


def _may_overflow(stored: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """Whether a finite value of ``stored`` (a plain dtype or a record of them) can become ±inf in the
    float ``target``: a float64 in a float32 input, a float32 or a wide integer in a float16 one. Not
    the usual same-width read, which then costs one dictionary look-up."""
    known = _OVERFLOWS.get((stored, target))
    if known is None:
        fields = [stored] if stored.names is None else [stored[n] for n in stored.names]
        largest = float(np.finfo(target).max)
        known = any(_largest(f) > largest for f in fields)
        if len(_OVERFLOWS) > 1024:
            _OVERFLOWS.clear()
        _OVERFLOWS[(stored, target)] = known
    return known


def _largest(dtype: np.dtype[Any]) -> float:
    if dtype.kind == "f":
        return float(np.finfo(dtype).max)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(max(-int(info.min), int(info.max)))
    return 1.0  # bool


@dataclass(frozen=True, slots=True)
class UnfitColumns:
    """The unfit stored values of a request in reference order ([rows, stored columns]), and where each
    of those columns was read (its block's :class:`Unfit`, or None when the block had none, and the
    column in it)."""

    mask: npt.NDArray[np.bool_]
    sources: list[tuple[Unfit | None, int]]


def unfit_columns(
    built: Sequence[tuple[npt.NDArray[Any], Unfit | None]], order: npt.NDArray[np.intp] | None
) -> UnfitColumns | None:
    if all(unfit is None for _, unfit in built):  # the common case
        return None
    masks = [np.zeros(m.shape, np.bool_) if u is None else u.mask for m, u in built]
    sources = [(u, j) for m, u in built for j in range(m.shape[1])]
    mask = np.concatenate(masks, axis=1) if len(masks) > 1 else masks[0]
    if order is not None:
        mask, sources = mask[:, order], [sources[k] for k in order]
    return UnfitColumns(mask, sources)


def refuse_unfit(
    spec: ModelSpec,
    rows: Sequence[Mapping[str, str]],
    request_features: Sequence[Mapping[str, float]],
    layout: ColumnLayout,
    unfit: UnfitColumns,
    dtype: np.dtype[Any],
) -> None:
    """FAILED_PRECONDITION for the first unfit stored value (:func:`block_matrix`) that reaches the model,
    that is, that no request-time value replaced. A float input: a finite value that the cast made ±inf
    (fed on, a strict model answered INVALID_ARGUMENT, blaming the caller, and one that takes non-finite
    input got inf as if that were stored), and for a model that refuses non-finite input a stored NaN or
    ±inf too (the same INVALID_ARGUMENT otherwise). An integer (or bool) input: a value that is not a
    whole number it holds, as request-time ones must be (a cast fed the model 2 for 2.7 and INT64_MIN for
    NaN). Not INVALID_ARGUMENT: the caller asked for nothing wrong, the stored data does not fit this
    model."""
    over = replaced(layout, request_features, len(rows))
    stored_over = over if layout.stored_columns is None else over[:, layout.stored_columns]
    reaching = unfit.mask & ~stored_over
    if not reaching.any():
        return
    k = int(np.flatnonzero(reaching.any(axis=0))[0])  # reference order is the input's column order
    source, j = unfit.sources[k]
    assert source is not None  # a column without an unfit block has an all-False mask
    bounds = whole_range(dtype)
    bad = np.flatnonzero(reaching[:, k])
    if bounds is None and not np.isfinite(source.columns[j][bad[0]]):
        takes = f"{dtype} input does not take NaN or infinite values (allow_non_finite is off)"
    elif bounds is None:
        largest = float(np.finfo(dtype).max)
        takes = f"{dtype} input holds finite values from {-largest:g} to {largest:g}"
    else:
        takes = f"{dtype} input takes whole numbers from {bounds[0]} to {bounds[1]}"
    _refuse_stored(source.block, j, source.columns[j], bad, rows, spec, takes)


def _refuse_stored(
    block: BlockResult,
    j: int,
    column: npt.NDArray[Any],
    bad: npt.NDArray[np.intp],
    rows: Sequence[Mapping[str, str]],
    spec: ModelSpec,
    takes: str,
) -> None:
    """FAILED_PRECONDITION naming the first of the ``bad`` rows of stored column ``j``: its feature, its
    entity, its value, and what the model's input ``takes``."""
    view = block.plan.view
    row = int(bad[0])
    feature = view.columns[int(block.plan.column_positions[j])]
    raise FailedPrecondition(
        f"row {row}: stored feature {view.name}@{view.version}:{feature} of entity {dict(rows[row])} "
        f"is {column[row]}; model {spec.name} v{spec.version}'s {takes} ({bad.size} of {len(rows)} rows"
        " hold such a value)"
    )
