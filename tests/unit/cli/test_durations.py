"""Durations in definitions (``90``, ``45s``, ``1.5h``, ``1h30m``) against a brute-force reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.cli.output import duration as format_duration
from control_plane.features.definitions import parse_duration

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


@given(st.dictionaries(st.sampled_from(list(UNITS)), st.integers(0, 10_000), min_size=1), st.randoms())
def test_unit_sums_in_any_order(parts: dict[str, int], random: object) -> None:
    order = list(parts.items())
    random.shuffle(order)  # type: ignore[attr-defined]
    text = "".join(f"{amount}{unit}" for unit, amount in order)
    assert parse_duration(text) == sum(amount * UNITS[unit] for unit, amount in parts.items())


@given(st.integers(0, 10**9))
def test_plain_seconds_as_int_or_text(seconds: int) -> None:
    assert parse_duration(seconds) == seconds
    assert parse_duration(str(seconds)) == seconds


@given(st.integers(0, 10**6), st.sampled_from(["d", "h", "m"]))
def test_decimal_amounts_that_make_whole_seconds(tenths: int, unit: str) -> None:
    # Every unit above a second is a multiple of 10 s, so a tenth of it is whole.
    assert parse_duration(f"{tenths // 10}.{tenths % 10}{unit}") == tenths * UNITS[unit] // 10


@given(st.integers(1, 10**9))
def test_the_cli_prints_durations_the_parser_reads_back(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "text", ["", "h", "1x", "-5", "-5s", "1h1h", "0.5s", "1.25m3", "1 hour", "h1", "1h 30m junk", "1.5.2h"]
)
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_negative_integer_and_bool_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)
    with pytest.raises(ValueError):
        parse_duration(True)
