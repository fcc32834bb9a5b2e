"""Round trips of the online store's packed-blob codec, against numpy's own view of the values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.packed_blob import (
    HEADER_SIZE,
    SUPPORTED_DTYPES,
    CorruptBlob,
    FingerprintMismatch,
    decode,
    encode,
    encode_rows,
    layout_dtype,
)

_SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, 3.4e38]


@st.composite
def rows_of_schema(draw: st.DrawFn) -> tuple[list[str], list[list[object]], np.ndarray]:
    """A schema (dtype list), some rows of values for it (with NaN/inf for floats) and a null mask."""
    dtypes = draw(st.lists(st.sampled_from(SUPPORTED_DTYPES), min_size=1, max_size=12))
    n_rows = draw(st.integers(1, 5))
    rows = []
    for _ in range(n_rows):
        row: list[object] = []
        for d in dtypes:
            if d.startswith("float"):
                finite = st.floats(width=32) if d == "float32" else st.floats(width=64)
                row.append(draw(st.one_of(st.sampled_from(_SPECIAL_FLOATS), finite)))
            elif d == "bool":
                row.append(draw(st.booleans()))
            else:
                info = np.iinfo(d)
                row.append(draw(st.integers(int(info.min), int(info.max))))
        rows.append(row)
    nulls = np.array(draw(st.lists(st.lists(st.booleans(), min_size=len(dtypes), max_size=len(dtypes)),
                                   min_size=n_rows, max_size=n_rows)), dtype=bool)  # fmt: skip
    return dtypes, rows, nulls


def _as_array(dtypes: list[str], rows: list[list[object]]) -> np.ndarray:
    layout = layout_dtype(dtypes)
    if layout.names:
        return np.array([tuple(r) for r in rows], dtype=layout)
    return np.array(rows, dtype=layout)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.tobytes() == b.tobytes()  # NaN != NaN, so compare bytes


@settings(max_examples=150, deadline=None)
@given(rows_of_schema(), st.integers(0, 2**64 - 1), st.integers(-(2**62), 2**62))
def test_decode_inverts_encode_and_encode_rows_equals_encode(
    case: tuple[list[str], list[list[object]], np.ndarray], fingerprint: int, event_ts: int
) -> None:
    dtypes, rows, nulls = case
    layout = layout_dtype(dtypes)
    array = _as_array(dtypes, rows)
    batch = encode_rows(array, layout, fingerprint, event_ts, 7, nulls)
    for i, row in enumerate(rows):
        one_row: object = row if layout.names else array[i]
        single = encode(one_row, layout, fingerprint, event_ts, 7, nulls[i])  # type: ignore[arg-type]
        assert batch[i] == single
        decoded = decode(single, layout, fingerprint, len(dtypes))
        assert decoded.event_ts_us == event_ts and decoded.write_ts_us == 7
        expected = array[i : i + 1] if layout.names else array[i]
        assert _same_bits(decoded.values, expected)
        if nulls[i].any():
            assert decoded.nulls is not None and decoded.nulls.tolist() == nulls[i].tolist()
        else:
            assert decoded.nulls is None


@given(rows_of_schema(), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_a_blob_of_another_schema_is_refused(
    case: tuple[list[str], list[list[object]], np.ndarray], a: int, b: int
) -> None:
    dtypes, rows, _ = case
    layout = layout_dtype(dtypes)
    blob = encode_rows(_as_array(dtypes, rows), layout, a, 0, 0)[0]
    if a != b:
        with pytest.raises(FingerprintMismatch):
            decode(blob, layout, b, len(dtypes))
    with pytest.raises(CorruptBlob):
        decode(blob[: HEADER_SIZE - 1], layout, a, len(dtypes))
    with pytest.raises(CorruptBlob):
        decode(blob + b"\x00", layout, a, len(dtypes))
    with pytest.raises(CorruptBlob):
        decode(b"XX" + blob[2:], layout, a, len(dtypes))


@given(rows_of_schema(), st.integers(1, 3))
def test_a_blob_whose_count_differs_from_the_schema_is_corrupt(
    case: tuple[list[str], list[list[object]], np.ndarray], extra: int
) -> None:
    # A homogeneous layout is one plain dtype, which does not say how many features a row has: the count
    # in the header must be checked against the schema's, not trusted.
    dtypes, rows, _ = case
    blob = encode_rows(_as_array(dtypes, rows), layout_dtype(dtypes), 5, 0, 0)[0]
    schema = dtypes + [dtypes[0]] * extra  # what the reader holds: more features than were written
    with pytest.raises(CorruptBlob, match=f"holds {len(dtypes)} values, the schema has {len(schema)}"):
        decode(blob, layout_dtype(schema), 5, len(schema))
