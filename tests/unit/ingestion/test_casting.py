"""Text parsed to floats: an overflow is a lossy cast, an infinity literal is not (hypothesis, against an
exact decimal reference)."""

from __future__ import annotations

import math
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.int64 import INT64_MAX, INT64_MIN
from control_plane.ingestion.casting import TIMESTAMP_TYPE, lossless_cast

# Round to nearest, ties to even: a value rounds to infinity from the midpoint between the largest
# finite value (odd significand, all ones) and the next power of two on.
OVERFLOW_AT = {pa.float64(): Decimal(2**1024 - 2**970), pa.float32(): Decimal(2**128 - 2**103)}


def numbers_near(limit: Decimal) -> st.SearchStrategy[str]:
    """Decimal texts just around ``limit`` (in the last digits of 40)."""
    return st.integers(-(10**5), 10**5).map(lambda d: f"{limit + d * limit.scaleb(-40):E}")


signs = st.sampled_from(["", "+", "-"])
mantissas = st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,6})?\Z")
exponents = st.integers(-400, 400).map(lambda e: f"e{e}")
plain_numbers = st.builds(lambda s, m, e: s + m + e, signs, mantissas, st.one_of(st.just(""), exponents))
near_limits = st.builds(
    lambda s, text: s + text,
    signs,
    st.one_of(numbers_near(OVERFLOW_AT[pa.float64()]), numbers_near(OVERFLOW_AT[pa.float32()])),
)
infinities = st.builds(
    lambda s, word, upper: s + "".join(c.upper() if u else c for c, u in zip(word, upper, strict=False)),
    signs,
    st.sampled_from(["inf", "infinity"]),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
texts = st.one_of(plain_numbers, near_limits, infinities)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(texts, min_size=1, max_size=20), wide=st.booleans())
def test_text_beyond_the_float_range_fails_and_an_infinity_literal_stays_infinite(
    values: list[str], wide: bool
) -> None:
    target = pa.float64() if wide else pa.float32()
    cast, failed = lossless_cast(pa.array(values, pa.string()), target)
    for text, value, refused in zip(values, cast.to_pylist(), failed.tolist(), strict=True):
        exact = Decimal(text)  # exact: Decimal reads any text of these forms without rounding
        if exact.is_infinite():
            assert not refused and value == (math.inf if exact > 0 else -math.inf), text
        elif abs(exact) >= OVERFLOW_AT[target]:
            assert refused and value is None, text
        else:
            assert not refused and value is not None and math.isfinite(value), text


@settings(max_examples=200, deadline=None)
@given(
    nanos=st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=20),
    zone=st.sampled_from(["UTC", "America/New_York"]),
)
def test_nanosecond_times_are_floored_to_the_microsecond_before_1970_too(nanos: list[int], zone: str) -> None:
    # The cast alone truncated toward zero: a time before 1970 with sub-microsecond digits went one
    # microsecond up, while the same instant as text (digits dropped from its fraction) and the offline
    # store's and the join's label times went down.
    values = pa.array(nanos, pa.timestamp("ns", tz=zone))
    cast, failed = lossless_cast(values, pa.timestamp("us", tz="UTC"))
    assert not failed.any()
    assert cast.cast(pa.int64()).to_pylist() == [n // 1000 for n in nanos]  # floor division: the reference


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_a_timestamp_whose_microseconds_overflow_int64_fails_instead_of_wrapping_around(unit: str) -> None:
    """The cast to microseconds was unchecked: 18448444073709 s (year ~586,000) wrapped around to a
    2023 time and was accepted, and -10**16 s became some year near -57,000. Each fails now, as the
    offline store refuses the same value; the bounds themselves still cast."""
    factor = 1_000 if unit == "ms" else 1_000_000
    limit = INT64_MAX // factor
    values = [1_700_000_000, 18_448_444_073_709, -(10**16), limit, -limit, limit + 1, -limit - 1]
    values += [INT64_MAX, INT64_MIN, None]
    cast, failed = lossless_cast(pa.array(values, pa.timestamp(unit, tz="UTC")), TIMESTAMP_TYPE)
    beyond = [v is not None and abs(v) > limit for v in values]
    assert failed.tolist() == beyond
    assert cast.cast(pa.int64()).to_pylist() == [
        None if v is None or out else v * factor for v, out in zip(values, beyond, strict=True)
    ]


@pytest.mark.parametrize(
    ("text", "target", "expected"),
    [
        ("1.0", pa.int64(), 1),
        ("3e0", pa.int64(), 3),
        ("+7", pa.int64(), 7),
        ("-0.0", pa.int64(), 0),
        ("9007199254740993.0", pa.int64(), 9007199254740993),  # exact: a float would round it
        (str(INT64_MAX) + ".0", pa.int64(), INT64_MAX),
        (str(INT64_MIN) + ".0", pa.int64(), INT64_MIN),
        ("2147483647.0", pa.int32(), 2**31 - 1),
        ("1.5", pa.int64(), None),
        ("2147483648.0", pa.int32(), None),
        (str(INT64_MAX + 1) + ".0", pa.int64(), None),
        ("1e999999999", pa.int64(), None),  # refused by its bounds, never made into an int
        ("1e999999999999999999999", pa.int64(), None),  # past Decimal's exponent range: it raised
        ("0e-999999999999999999999", pa.int64(), None),
        (" 1.0", pa.int64(), None),
        ("1.0.0", pa.int64(), None),
        ("true", pa.int64(), None),
        ("nan", pa.int64(), None),
    ],
)
def test_text_is_an_integer_when_its_decimal_number_is_whole_and_in_range(
    text: str, target: pa.DataType, expected: int | None
) -> None:
    """A stream's fields are text: a Kafka JSON ``1.0`` arrives as ``"1.0"``, which Arrow's integer parser
    refused where a batch's 1.0 was accepted."""
    cast, failed = lossless_cast(pa.array([text, None], pa.string()), target)
    assert cast.to_pylist() == [expected, None]
    assert failed.tolist() == [expected is None, False]


@pytest.mark.parametrize("target", [pa.int64(), pa.int32(), pa.float64(), pa.float32()])
def test_a_bool_is_no_number(target: pa.DataType) -> None:
    for values in (pa.array([True, None, False]), pa.array([True, None, False]).dictionary_encode()):
        cast, failed = lossless_cast(values, target)
        assert cast.to_pylist() == [None, None, None]
        assert failed.tolist() == [True, False, True]


@pytest.mark.parametrize("text", ["\u0663", "\uff13", "1\u0660", "\u0661.0", "\u0967e0"])
def test_text_of_digits_other_than_ascii_is_no_integer(text: str) -> None:
    """Arrow's number parsers read ASCII digits only (the Arabic-Indic ``"٣"`` is no float), but the
    regular expression of whole numbers had ``\\d``, which takes every Unicode digit, and ``Decimal`` reads
    them: ``"٣"`` or the full-width ``"３"`` named entity 3 of an int64 key, while a float feature refused
    the same text."""
    for target in (pa.int64(), pa.int32(), pa.float64()):
        cast, failed = lossless_cast(pa.array([text, "3"], pa.string()), target)
        assert cast.to_pylist() == [None, 3]
        assert failed.tolist() == [True, False]
