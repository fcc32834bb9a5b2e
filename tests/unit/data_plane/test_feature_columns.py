"""Column layout and request-time merge of Predict's model input against a brute-force reference: a loop
over the references that slices each one's stored columns, builds each request-time column row by row
and applies same-name overrides (the assembly the layout replaced). Request-time values for an integer or
bool input are whole numbers the input holds, or the request is refused naming the feature."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from data_plane.feature_columns import (
    column_layout,
    merge_request_features,
    not_whole,
    whole_range,
)
from data_plane.refs import REQUEST_PREFIX

STORED_REFS = ["v:a", "v:b", "v", "w@2:c"]
REQUEST_REFS = ["request:x", "request:y"]
NAMES = ["x", "y", "v:a", "v", "w@2:c", "z"]


def reference(
    refs: Sequence[str],
    counts: Sequence[int],
    stored: npt.NDArray[np.float32],
    stored_status: npt.NDArray[np.uint8],
    request_features: Sequence[Mapping[str, float]],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    rows = stored.shape[0]
    columns, statuses = [], []
    position = 0
    stored_counts = iter(counts)
    for ref in refs:
        if ref.startswith(REQUEST_PREFIX):
            name = ref[len(REQUEST_PREFIX) :]
            column = np.zeros((rows, 1), stored.dtype)
            for row in range(rows):
                features = request_features[row] if request_features else {}
                if name not in features:
                    raise InvalidArgument(f"row {row} has no request-time feature {name!r} ({ref})")
                column[row, 0] = features[name]
            columns.append(column)
            statuses.append(np.zeros((rows, 1), np.uint8))
            continue
        count = next(stored_counts)
        block = stored[:, position : position + count].copy()
        status = stored_status[:, position : position + count].copy()
        position += count
        if count == 1:
            for row in range(rows):
                if request_features and ref in request_features[row]:
                    block[row, 0] = request_features[row][ref]
                    status[row, 0] = 0
        columns.append(block)
        statuses.append(status)
    return np.concatenate(columns, axis=1), np.concatenate(statuses, axis=1)


@settings(max_examples=400, deadline=None)
@given(
    refs=st.lists(st.sampled_from(STORED_REFS + REQUEST_REFS), min_size=1, max_size=7),
    rows=st.integers(1, 4),
    data=st.data(),
)
def test_layout_and_merge_equal_the_reference_loop(refs: list[str], rows: int, data: st.DataObject) -> None:
    # One count per reference (a repeated reference resolves to the same columns each time).
    count_of = {ref: data.draw(st.sampled_from([1, 1, 2, 3])) for ref in STORED_REFS}
    counts = [count_of[ref] for ref in refs if not ref.startswith(REQUEST_PREFIX)]
    width = sum(counts)
    stored = np.arange(rows * width, dtype=np.float32).reshape(rows, width) + 100
    stored_status = np.array(
        data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=rows * width, max_size=rows * width)),
        dtype=np.uint8,
    ).reshape(rows, width)
    values = st.floats(-1e6, 1e6, width=32)
    request_features: list[dict[str, float]] = data.draw(
        st.one_of(
            st.just([]),
            st.lists(st.dictionaries(st.sampled_from(NAMES), values), min_size=rows, max_size=rows),
        )
    )
    frozen = stored.copy()
    stored.flags.writeable = False  # as when it is a view of the bytes Redis returned
    try:
        expected = reference(refs, counts, stored, stored_status, request_features)
    except InvalidArgument as exc:
        with pytest.raises(InvalidArgument) as raised:
            merge_request_features(column_layout(refs, counts), stored, stored_status, request_features)
        assert str(raised.value) == str(exc)
        return
    layout = column_layout(refs, counts)
    got_values, got_status = merge_request_features(layout, stored, stored_status, request_features)
    assert np.array_equal(got_values, expected[0])
    assert np.array_equal(got_status, expected[1])
    assert layout.width == expected[0].shape[1] and layout.stored_width == width
    assert np.array_equal(stored, frozen)  # the stored matrix is never written to


def test_without_request_time_features_the_stored_matrix_is_the_input() -> None:
    """No copy for the common case: a model whose inputs are all stored features."""
    stored = np.ones((2, 3), np.float32)
    status = np.zeros((2, 3), np.uint8)
    layout = column_layout(["v:a", "v"], [1, 2])
    values, statuses = merge_request_features(layout, stored, status, [])
    assert values is stored and statuses is status
    values, _ = merge_request_features(layout, stored, status, [{"unrelated": 1.0}, {}])
    assert values is stored


def test_counts_must_match_the_stored_references() -> None:
    with pytest.raises(ValueError, match="more column counts"):
        column_layout(["v:a"], [1, 1])


_WHOLE_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
# What each holds, written out (bool: 0 and 1).
_HOLDS = {
    np.int8: (-128, 127), np.int16: (-32768, 32767), np.int32: (-(2**31), 2**31 - 1),
    np.int64: (-(2**63), 2**63 - 1), np.uint8: (0, 255), np.uint16: (0, 65535), np.uint32: (0, 2**32 - 1),
    np.uint64: (0, 2**64 - 1), np.bool_: (0, 1),
}  # fmt: skip
_EDGES = sorted({float(v + d) for low, high in _HOLDS.values() for v in (low, high) for d in (-1, 0, 1)})
_REQUEST_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(_EDGES),
    st.integers(-(2**65), 2**65).map(float),
    st.integers(-300, 300).map(lambda v: v / 2),
)


@settings(max_examples=500, deadline=None)
@given(dtype=st.sampled_from(_WHOLE_DTYPES), value=_REQUEST_VALUES, override=st.booleans())
def test_an_integer_input_takes_request_time_whole_numbers_it_holds(
    dtype: type[np.generic], value: float, override: bool
) -> None:
    # As a request:x column, or as a same-name override of the stored single-feature reference v:a.
    refs, name = (["v:a"], "v:a") if override else (["v:a", "request:x"], "x")
    stored = np.zeros((2, 1), dtype)
    stored.flags.writeable = False
    features = [{name: 1.0}, {name: value}]
    low, high = _HOLDS[dtype]
    fits = math.isfinite(value) and math.floor(value) == value and low <= int(value) <= high
    layout = column_layout(refs, [1])
    if not fits:
        with pytest.raises(InvalidArgument) as info:
            merge_request_features(layout, stored, np.zeros((2, 1), np.uint8), features)
        assert f"row 1: request-time feature {name!r} is {value!r}" in info.value.message
        assert f"from {low} to {high}" in info.value.message
        return
    values, _ = merge_request_features(layout, stored, np.zeros((2, 1), np.uint8), features)
    column = 0 if override else 1
    assert values.dtype == dtype and int(values[1, column]) == int(value) and int(values[0, column]) == 1


def test_a_float_input_takes_request_time_values_as_they_are() -> None:
    """NaN and infinities reach the model input check (which names the input), fractions stay fractions."""
    stored = np.zeros((1, 0), np.float32)
    values, _ = merge_request_features(
        column_layout(["request:x", "request:y", "request:z"], []),
        stored,
        np.zeros((1, 0), np.uint8),
        [{"x": 2.5, "y": math.nan, "z": -math.inf}],
    )
    assert values[0, 0] == 2.5 and math.isnan(values[0, 1]) and values[0, 2] == -math.inf


@pytest.mark.parametrize("override", [False, True])
@pytest.mark.parametrize(
    ("dtype", "value"), [(np.float32, 1e39), (np.float32, -1e39), (np.float16, 65520.0), (np.float16, 1e5)]
)
def test_a_finite_request_time_value_a_float_input_cannot_hold_is_refused_naming_it(
    dtype: type[np.floating], value: float, override: bool
) -> None:
    """numpy's assignment made 1e39 inf in a float32 input: a model that takes non-finite input was fed
    inf, and a strict one answered "input 'input' holds NaN or infinite values", naming no feature."""
    refs, name = (["v:a"], "v:a") if override else (["v:a", "request:x"], "x")
    stored = np.zeros((2, 1), dtype)
    stored.flags.writeable = False
    largest = float(np.finfo(dtype).max)
    layout = column_layout(refs, [1])
    with pytest.raises(InvalidArgument) as info:
        merge_request_features(layout, stored, np.zeros((2, 1), np.uint8), [{name: 1.0}, {name: value}])
    assert info.value.message == (
        f"row 1: request-time feature {name!r} is {value!r}; the model's {np.dtype(dtype)} input holds "
        f"finite values from {-largest:g} to {largest:g}"
    )
    held = [{name: largest}, {name: -largest}]  # the largest it holds, and a double's NaN and inf, pass
    values, _ = merge_request_features(layout, stored, np.zeros((2, 1), np.uint8), held)
    column = 0 if override else 1
    assert values[:, column].tolist() == [largest, -largest]
    odd = [{name: math.nan}, {name: math.inf}]
    values, _ = merge_request_features(layout, stored, np.zeros((2, 1), np.uint8), odd)
    assert math.isnan(values[0, column]) and values[1, column] == math.inf


@pytest.mark.parametrize(
    ("stored", "dtype", "refused"),
    [
        (np.array([2.0**63, -(2.0**63), 2.0**62, 2.5, math.nan, -math.inf], np.float64), np.int64,
         [True, False, False, True, True, True]),  # 2**63 - 1 rounds to 2.0**63 as a float: not held
        (np.array([255, 256, -1, 0], np.float32), np.uint8, [False, True, True, False]),
        (np.array([2, 1, 0, -1], np.int64), np.bool_, [True, False, False, True]),
        (np.array([2**63 - 1, 0], np.uint64), np.int64, [False, False]),
        (np.array([2**63, 0], np.uint64), np.int64, [True, False]),
        (np.array([-(2**31) - 1, 2**31 - 1], np.int64), np.int32, [True, False]),
    ],
)  # fmt: skip
def test_stored_values_an_integer_input_cannot_hold_are_found(
    stored: npt.NDArray[np.generic], dtype: type[np.generic], refused: list[bool]
) -> None:
    bounds = whole_range(np.dtype(dtype))
    assert bounds is not None
    assert not_whole(stored, bounds).tolist() == refused
