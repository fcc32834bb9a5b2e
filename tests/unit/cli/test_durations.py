"""Durations in definitions (``90``, ``45s``, ``1.5h``, ``1h30m``) against a brute-force reference, and the
CLI's durations and times built on them."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.cli.durations import MAX_DURATION_S, duration_s, time_us
from control_plane.cli.errors import UsageError
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


def test_cli_times_are_iso_or_durations_ago() -> None:
    now = 1_800_000_000_000_000
    assert time_us("2h", "--since", now) == now - 7_200_000_000
    assert time_us("1d", "--since", now) == now - 86_400_000_000
    assert time_us("1h30m", "--since", now) == now - 5_400_000_000
    midnight = int(dt.datetime(2026, 11, 24, tzinfo=dt.UTC).timestamp()) * 1_000_000
    assert time_us("2026-11-24", "--until", now) == midnight
    assert time_us("2026-11-24T00:00:00Z", "--until", now) == midnight
    assert time_us("2026-11-24T01:00:00+01:00", "--until", now) == midnight
    assert time_us("2026-11-24T00:00:00.000001", "--until", now) == midnight + 1  # exact to the microsecond
    with pytest.raises(UsageError, match="--since: invalid time 'last tuesday'"):
        time_us("last tuesday", "--since", now)


@pytest.mark.parametrize("text", ["99999999999d", "56000d", "1969-12-31T23:59:59Z", "9" * 60 + "d"])
def test_cli_times_before_the_epoch_are_refused_naming_the_flag(text: str) -> None:
    """A time before 1970 cannot be sent (int64 microseconds, or protobuf's "Value out of range")."""
    with pytest.raises(UsageError, match=r"--until: .* lies before 1970-01-01"):
        time_us(text, "--until", 1_800_000_000_000_000)


def test_cli_durations_name_the_flag_and_fit_in_microseconds() -> None:
    assert duration_s("1.5h", "--cooldown") == 5400
    assert duration_s(f"{MAX_DURATION_S // 86400}d", "--cooldown") <= MAX_DURATION_S
    for text in ["1w", "soon", "1.5.h", "-5", "nan", ""]:
        with pytest.raises(UsageError, match=re.escape(f"--cooldown: invalid duration {text!r}")):
            duration_s(text, "--cooldown")
    with pytest.raises(UsageError, match="--shadow: duration '99999999999999d' is too long"):
        duration_s("99999999999999d", "--shadow")
