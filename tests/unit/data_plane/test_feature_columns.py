"""Column layout and request-time merge of Predict's model input against a brute-force reference: a loop
over the references that slices each one's stored columns, builds each request-time column row by row
and applies same-name overrides (the assembly the layout replaced)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from data_plane.feature_columns import REQUEST_PREFIX, column_layout, merge_request_features

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
