"""The per-request input checks' fast paths agree with the plain definitions: finiteness by one sum (with
the exact check when finite values overflow it), fixed dimensions by a loop over the fixed axes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from data_plane.models.spec import DYNAMIC
from data_plane.models.validation import _all_finite, _differs

_FLOATS = st.sampled_from([np.float16, np.float32, np.float64])


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(
        _FLOATS,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_all_finite_is_numpy_s_isfinite_all(array: np.ndarray) -> None:
    assert _all_finite(array) == bool(np.isfinite(array).all())


def test_finite_values_whose_sum_overflows_are_finite() -> None:
    big = np.full((1, 8), np.finfo(np.float32).max, np.float32)
    assert not np.isfinite(np.add.reduce(big, axis=None))  # the shortcut alone would refuse them
    assert _all_finite(big)


@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=4).flatmap(
        lambda shape: st.tuples(
            st.just(tuple(shape)),
            st.lists(
                st.one_of(st.just(DYNAMIC), st.integers(0, 5)), min_size=len(shape), max_size=len(shape)
            ),
        )
    )
)
def test_differs_is_a_mismatch_on_a_fixed_dimension(case: tuple[tuple[int, ...], list[int]]) -> None:
    shape, declared = case
    fixed = tuple((axis, size) for axis, size in enumerate(declared) if size != DYNAMIC)
    expected = any(want != DYNAMIC and got != want for got, want in zip(shape, declared, strict=True))
    assert _differs(shape, fixed) == expected
