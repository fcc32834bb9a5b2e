"""A small 5-field cron parser (``minute hour day-of-month month day-of-week``, always UTC).

Each field is ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n`` (or ``a/n``: from ``a`` to the
field's maximum), or a comma-separated list of those. Day of week is 0-7 with both 0 and 7 meaning
Sunday. Month and weekday names are not supported. As in Vixie cron, when both day-of-month and
day-of-week are restricted (neither starts with ``*``), a day matches when *either* does.

A schedule matches minutes: :meth:`CronSchedule.fires_between` tells whether a matching minute start
lies in ``(after_us, until_us]``, which is how the trigger step decides that the schedule fired since its
previous tick.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clients.errors import InvalidArgument

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_MINUTE_US = 60_000_000
#: Years searched for a next match: a schedule that needs a 29 February on a given weekday can wait 28.
_SEARCH_YEARS = 29


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    day_restricted: bool
    weekday_restricted: bool

    def matches(self, moment: dt.datetime) -> bool:
        """Whether the minute holding ``moment`` (UTC) matches."""
        moment = moment.astimezone(dt.UTC)
        return moment.minute in self.minutes and moment.hour in self.hours and self._day_matches(moment)

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, after_us: int) -> int | None:
        """The start (µs) of the first matching minute strictly after ``after_us``; None when there is
        none within the search horizon (e.g. ``0 0 30 2 *``)."""
        first_minute = after_us // _MINUTE_US + 1  # minute starts are multiples of _MINUTE_US
        start = dt.datetime.fromtimestamp(first_minute * 60, dt.UTC)
        day = start.date()
        last_day = day + dt.timedelta(days=366 * _SEARCH_YEARS)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        while day <= last_day:
            if self._day_matches(day):
                for hour in hours:
                    for minute in minutes:
                        candidate = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
                        if candidate >= start:
                            return int(candidate.timestamp()) * 1_000_000
            day += dt.timedelta(days=1)
        return None

    def fires_between(self, after_us: int, until_us: int) -> bool:
        """Whether a matching minute starts in ``(after_us, until_us]``."""
        if until_us <= after_us:
            return False
        found = self.next_after(after_us)
        return found is not None and found <= until_us


def parse(expression: str) -> CronSchedule:
    """The schedule of ``expression``; ``InvalidArgument`` naming the faulty field."""
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidArgument(
            f"cron expression {expression!r} needs 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    values = [_field(text, bounds, name) for text, bounds, name in zip(fields, _BOUNDS, _NAMES, strict=True)]
    weekdays = frozenset(day % 7 for day in values[4])
    return CronSchedule(
        expression=" ".join(fields),
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        day_restricted=not fields[2].startswith("*"),
        weekday_restricted=not fields[4].startswith("*"),
    )


def _field(text: str, bounds: tuple[int, int], name: str) -> frozenset[int]:
    low, high = bounds
    out: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = _number(step_text, name) if slash else 1  # "5/" has an empty step: not a number
        if step < 1:
            raise InvalidArgument(f"cron {name}: step must be at least 1 in {part!r}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(first, name), _number(last, name)
        else:
            start = _number(base, name)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high):
            raise InvalidArgument(f"cron {name}: {part!r} is outside {low}-{high}")
        if start > end:
            raise InvalidArgument(f"cron {name}: range {part!r} runs backwards")
        out.update(range(start, end + 1, step))
    return frozenset(out)


def _number(text: str, name: str) -> int:
    # ASCII digits only: str.isdigit() is true for "²", which int() refuses (an INTERNAL error), and
    # for "٣", which int() reads as 3 while the stored expression kept the foreign digit.
    if not (text.isascii() and text.isdigit()):
        raise InvalidArgument(f"cron {name}: {text!r} is not a number")
    return int(text)
