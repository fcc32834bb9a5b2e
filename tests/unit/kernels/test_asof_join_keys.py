"""Key factorization: equal key tuples get equal codes on every side, different tuples different codes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.asof_join import asof_indices
from kernels.join_keys import as_int64, factorize_keys

_key_tuples = st.lists(st.tuples(st.sampled_from(["a", "b", "é", ""]), st.integers(-3, 3)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(_key_tuples, _key_tuples, _key_tuples)
def test_codes_are_equal_exactly_when_key_tuples_are_equal(
    labels: list[tuple[str, int]], view_a: list[tuple[str, int]], view_b: list[tuple[str, int]]
) -> None:
    sides = [labels, view_a, view_b]
    columns = [
        (np.array([k[0] for k in side], dtype=object), np.array([k[1] for k in side], dtype=np.int64))
        for side in sides
    ]
    codes = factorize_keys(*columns)
    flat_keys = [key for side in sides for key in side]
    flat_codes = np.concatenate(codes).tolist()
    assert [c.shape[0] for c in codes] == [len(side) for side in sides]
    for i, key_i in enumerate(flat_keys):
        for j, key_j in enumerate(flat_keys):
            assert (flat_codes[i] == flat_codes[j]) == (key_i == key_j)
    assert sorted(set(flat_codes)) == list(range(len(set(flat_keys))))


def test_string_keys_join_through_their_codes() -> None:
    label_codes, feat_codes = factorize_keys(
        [np.array(["bob", "alice", "carol"])], [np.array(["alice", "bob", "bob"])]
    )
    indices = asof_indices(label_codes, [10, 10, 10], feat_codes, [1, 2, 3], [0, 0, 0])
    assert indices.tolist() == [2, 0, -1]


def test_sides_with_different_column_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="same, non-zero number of key columns"):
        factorize_keys([np.array([1])], [np.array([1]), np.array([2])])


def test_as_int64_refuses_uint64_beyond_int64() -> None:
    with pytest.raises(ValueError, match="beyond the int64 range"):
        as_int64(np.array([2**63], dtype=np.uint64), "ids")
    assert as_int64(np.array([3], dtype=np.uint8), "ids").dtype == np.int64
