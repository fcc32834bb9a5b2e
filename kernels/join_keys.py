"""Join keys as int64 codes: the as-of join compares entities as int64, so string (or multi-column)
keys are first mapped to codes, consistently across the label side and every feature side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]


def as_int64(column: npt.ArrayLike, name: str) -> Int64Array:
    """A 1-D contiguous int64 view or copy of an integer column. Floats, bools and timestamps-as-objects
    are refused rather than cast: a silent cast would hide a wrong column."""
    array = np.asarray(column)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.shape[0] and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds values beyond the int64 range")
    return np.ascontiguousarray(array, dtype=np.int64)


def factorize_keys(*sides: Sequence[npt.ArrayLike]) -> list[Int64Array]:
    """Codes for the key tuples of several tables (e.g. labels, then each feature view).

    Each side is a sequence of key columns, the same number on every side, column ``c`` of every side
    holding comparable values (ints, or strings). Equal key tuples get equal codes on every side; codes
    are dense in ``[0, distinct tuples)``. Keys must not be null: map nulls before calling.
    """
    if not sides:
        return []
    n_columns = len(sides[0])
    if n_columns == 0 or any(len(side) != n_columns for side in sides):
        raise ValueError("every side needs the same, non-zero number of key columns")
    columns = [[np.asarray(side[c]) for side in sides] for c in range(n_columns)]
    lengths = [column.shape[0] for column in columns[0]]
    for c, per_side in enumerate(columns):
        for s, column in enumerate(per_side):
            if column.ndim != 1 or column.shape[0] != lengths[s]:
                raise ValueError(f"key column {c} of side {s} must be 1-D with {lengths[s]} rows")

    combined: Int64Array | None = None
    for per_side in columns:
        codes = _codes_of(np.concatenate(per_side))
        if combined is None:
            combined = codes
        else:
            # Re-factorize the pair after each column: codes stay below the row count, so the pair
            # key (combined * cardinality + codes) cannot overflow int64 for any realistic table.
            cardinality = int(codes.max()) + 1 if codes.shape[0] else 1
            combined = _codes_of(combined * cardinality + codes)
    assert combined is not None
    bounds = np.cumsum([0, *lengths])
    return [np.ascontiguousarray(combined[bounds[s] : bounds[s + 1]]) for s in range(len(sides))]


def _codes_of(values: npt.NDArray[np.generic]) -> Int64Array:
    _, inverse = np.unique(values, return_inverse=True)
    return np.ascontiguousarray(inverse.reshape(-1), dtype=np.int64)
