"""The cron parser against brute-force minute enumeration of its written rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.errors import InvalidArgument
from control_plane.retraining.cron import CronSchedule, parse

MINUTE_US = 60_000_000
START = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000


def field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    single = st.one_of(
        st.just("*"),
        number.map(str),
        st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}"),
        st.tuples(number, st.integers(1, 15)).map(lambda p: f"{p[0]}/{p[1]}"),
        st.integers(1, 20).map(lambda n: f"*/{n}"),
    )
    return st.lists(single, min_size=1, max_size=3).map(",".join)


expressions = st.tuples(field(0, 59), field(0, 23), field(1, 31), field(1, 12), field(0, 7)).map(" ".join)


def reference_values(text: str, low: int, high: int) -> set[int]:
    """The field's values as the module doc writes them, enumerated value by value."""
    out: set[int] = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        every = int(step) if step else 1
        if base == "*":
            lo, hi = low, high
        elif "-" in base:
            lo, hi = (int(x) for x in base.split("-"))
        else:
            lo = int(base)
            hi = high if step else lo
        out |= {v for v in range(low, high + 1) if lo <= v <= hi and (v - lo) % every == 0}
    return out


def reference(expression: str) -> Callable[[int], bool]:
    """Whether the minute number ``m`` (minutes since the epoch) matches, by the written rules."""
    minute, hour, day, month, weekday = expression.split()
    minutes, hours = reference_values(minute, 0, 59), reference_values(hour, 0, 23)
    days, months = reference_values(day, 1, 31), reference_values(month, 1, 12)
    weekdays = {d % 7 for d in reference_values(weekday, 0, 7)}
    restricted = not day.startswith("*") and not weekday.startswith("*")

    def matches(m: int) -> bool:
        moment = dt.datetime.fromtimestamp(m * 60, dt.UTC)
        in_day, in_weekday = moment.day in days, (moment.isoweekday() % 7) in weekdays
        day_ok = (in_day or in_weekday) if restricted else (in_day and in_weekday)
        return moment.minute in minutes and moment.hour in hours and moment.month in months and day_ok

    return matches


@settings(max_examples=40, deadline=None)
@given(expressions, st.integers(0, 400 * 24 * 60), st.integers(1, 3 * 24 * 60))
def test_fires_between_is_brute_force_enumeration(expression: str, offset_min: int, span_min: int) -> None:
    schedule = parse(expression)
    after = START + offset_min * MINUTE_US + 17  # not on a minute boundary
    until = after + span_min * MINUTE_US
    matches = reference(expression)
    expected = any(matches(m) for m in range(after // MINUTE_US + 1, until // MINUTE_US + 1))
    assert schedule.fires_between(after, until) == expected


@settings(max_examples=40, deadline=None)
@given(expressions, st.integers(0, 400 * 24 * 60))
def test_next_after_is_the_first_enumerated_match(expression: str, offset_min: int) -> None:
    schedule = parse(expression)
    after = START + offset_min * MINUTE_US
    found = schedule.next_after(after)
    horizon = 10 * 24 * 60  # minutes enumerated
    matches = reference(expression)
    start = after // MINUTE_US + 1
    first = next((m * MINUTE_US for m in range(start, start + horizon) if matches(m)), None)
    if first is not None:
        assert found == first
    else:
        assert found is None or found > after + horizon * MINUTE_US


def test_known_schedules() -> None:
    nightly = parse("30 2 * * *")
    assert isinstance(nightly, CronSchedule)
    at = int(dt.datetime(2024, 5, 1, 2, 29, tzinfo=dt.UTC).timestamp()) * 1_000_000
    assert nightly.next_after(at) == at + MINUTE_US
    assert not nightly.fires_between(at, at + MINUTE_US - 1)
    assert nightly.fires_between(at, at + MINUTE_US)
    # 29 February on a Monday only (both day fields restricted: either matches, so any Monday too).
    either = parse("0 0 29 2 1")
    monday = dt.datetime(2024, 2, 5, tzinfo=dt.UTC)
    assert either.matches(monday) and either.matches(dt.datetime(2024, 2, 29, tzinfo=dt.UTC))
    assert parse("0 0 30 2 *").next_after(at) is None


@pytest.mark.parametrize(
    "bad",
    [
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "5-1 * * * *",
        "*/0 * * * *",
        "a * * * *",
        "0 \u00b2 * * *",  # superscript two: str.isdigit() said yes, int() raised ValueError (INTERNAL)
        "0 \u0663 * * *",  # Arabic-Indic three: int() read it as 3
        "*/\u00b9 * * * *",
        "1-\u00b2 * * * *",
        "5/ * * * *",  # an empty step read as no step at all
    ],
)
def test_invalid_expressions_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="cron"):
        parse(bad)
