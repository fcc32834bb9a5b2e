"""The range and category rules of a validation rule (``min_value``, ``max_value``, ``allowed_values``),
compared exactly in each column's own type (split from ``validation``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.ingestion.rejections import Reasons
from control_plane.ingestion.shown_values import number, show


def check_rule(
    cast: pa.Array,
    valid: npt.NDArray[np.bool_],
    rule: pb.ValidationRule,
    name: str,
    why: str,
    reasons: Reasons,
) -> None:
    """The range and categories of ``rule``; ``why`` ends each reason (whose rule it is, when not the
    column's own)."""
    if not valid.any():
        return
    if rule.HasField("min_value"):
        reasons.add(
            valid & _below(cast, rule.min_value),
            lambda row: f"{name}: {show(cast[row])} below min {number(rule.min_value)}{why}",
        )
    if rule.HasField("max_value"):
        reasons.add(
            valid & _above(cast, rule.max_value),
            lambda row: f"{name}: {show(cast[row])} above max {number(rule.max_value)}{why}",
        )
    if rule.allowed_values:
        listed = ", ".join(str(v) for v in sorted(set(rule.allowed_values)))
        reasons.add(
            valid & ~_allowed(cast, rule.allowed_values),
            lambda row: f"{name}: {show(cast[row])} not in allowed values [{listed}]{why}",
        )


# The rules' bounds are doubles, but an int64 value above 2**53 has no exact float64 (the cast refuses
# it), so integer columns are compared in their own type: v >= min is v >= ceil(min) and v <= max is
# v <= floor(max), and categories (int64) are matched as integers, exactly for every int64. A float32
# column compares with its bounds rounded to float32 too (see _float_operands); float64 and bool columns
# compare as float64, which holds every bool exactly.


def _below(values: pa.Array, bound: float) -> npt.NDArray[np.bool_]:
    """Where ``values < bound`` (False at nulls)."""
    if not pa.types.is_integer(values.type):
        return mask(pc.less(*_float_operands(values, bound)))
    lowest, highest = _integer_range(values.type)
    # Python compares an int with a float exactly, so these decide the bounds no value can cross.
    if math.isnan(bound) or bound <= lowest:
        return np.zeros(len(values), dtype=bool)
    if bound > highest:
        return np.ones(len(values), dtype=bool)
    return mask(pc.less(values, pa.scalar(math.ceil(bound), values.type)))


def _above(values: pa.Array, bound: float) -> npt.NDArray[np.bool_]:
    """Where ``values > bound`` (False at nulls)."""
    if not pa.types.is_integer(values.type):
        return mask(pc.greater(*_float_operands(values, bound)))
    lowest, highest = _integer_range(values.type)
    if math.isnan(bound) or bound >= highest:
        return np.zeros(len(values), dtype=bool)
    if bound < lowest:
        return np.ones(len(values), dtype=bool)
    return mask(pc.greater(values, pa.scalar(math.floor(bound), values.type)))


def _float_operands(values: pa.Array, bound: float) -> tuple[pa.Array, pa.Scalar]:
    """``values`` and ``bound`` in the precision the comparison is made in.

    A float32 column compares with the bound rounded to float32 (to nearest). Compared with the exact
    double instead, a value written as the bound itself failed it: 0.7 is stored as 0.699999988 in
    float32, which is below the double 0.7, so ``min: 0.7`` rejected 0.7. Once stored, a float32 value
    cannot tell the bound from any number that rounds to it, so a value equal to the rounded bound is
    accepted (the only float32 that lies beyond the exact bound yet passes is that one: no float32
    lies strictly between a number and its nearest float32). A finite bound beyond float32's range
    would round to an infinity, which no written infinity should pass for, so it is compared exactly,
    in float64, which holds every float32.
    """
    if pa.types.is_float32(values.type):
        with np.errstate(over="ignore"):
            rounded = float(np.float32(bound))
        if math.isfinite(rounded) or not math.isfinite(bound):
            return values, pa.scalar(rounded, pa.float32())
    return values.cast(pa.float64()), pa.scalar(bound, pa.float64())


def _allowed(values: pa.Array, allowed: Iterable[int]) -> npt.NDArray[np.bool_]:
    """Where a value is one of the (int64) categories ``allowed`` (False at nulls)."""
    if not pa.types.is_integer(values.type):
        return mask(pc.is_in(values.cast(pa.float64()), pa.array(sorted(set(allowed)), pa.float64())))
    lowest, highest = _integer_range(values.type)
    # A category outside the column's range equals none of its values (nor fits its type).
    members = sorted({v for v in allowed if lowest <= v <= highest})
    return mask(pc.is_in(values, pa.array(members, values.type)))


def _integer_range(arrow_type: pa.DataType) -> tuple[int, int]:
    info = np.iinfo(arrow_type.to_pandas_dtype())
    return int(info.min), int(info.max)


def mask(flags: pa.Array) -> npt.NDArray[np.bool_]:
    """Where ``flags`` (a comparison's result) is true, as a numpy mask: False at nulls."""
    return np.asarray(pc.fill_null(flags, False).to_numpy(zero_copy_only=False), dtype=bool)
