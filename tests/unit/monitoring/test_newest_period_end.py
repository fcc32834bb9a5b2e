"""``newest_period_end``: the end of a version's newest stored report of a time window of a given width.

Reports of a count window may span exactly that width by chance, at any offset. Before, the newest
report of that width was read and, when it was not aligned to the epoch (a count window's), the answer was
"none stored", though aligned time-window reports lay just before it: after a restart the monitor then
forgot the periods it had reported and reported a late row's period a second time."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.reports import newest_period_end, store_report

_WIDTH_US = 60_000_000


def _store(sessions: sessionmaker[Session], start_us: int, end_us: int, version: int = 1) -> None:
    report = pb.DriftReport(
        deployment="churn-prod",
        model_name="churn",
        version=version,
        window_start_us=start_us,
        window_end_us=end_us,
        n_rows=10,
    )
    store_report(sessions, report)


def _newest(sessions: sessionmaker[Session], version: int = 1) -> int | None:
    return newest_period_end(sessions, "churn-prod", "churn", version, _WIDTH_US)


def test_an_unaligned_newer_report_of_the_same_width_does_not_hide_the_aligned_ones(
    sessions: sessionmaker[Session],
) -> None:
    _store(sessions, 10 * _WIDTH_US, 11 * _WIDTH_US)  # a time window's period
    _store(sessions, 11 * _WIDTH_US + 7, 12 * _WIDTH_US + 7)  # a count window that spanned as long
    assert _newest(sessions) == 11 * _WIDTH_US


def test_the_newest_aligned_report_of_the_width_is_taken(sessions: sessionmaker[Session]) -> None:
    _store(sessions, 10 * _WIDTH_US, 11 * _WIDTH_US)
    _store(sessions, 12 * _WIDTH_US, 13 * _WIDTH_US)
    _store(sessions, 13 * _WIDTH_US, 13 * _WIDTH_US + 5)  # another width
    _store(sessions, 20 * _WIDTH_US, 21 * _WIDTH_US, version=2)  # another version
    assert _newest(sessions) == 13 * _WIDTH_US


def test_only_unaligned_reports_of_the_width_are_none(sessions: sessionmaker[Session]) -> None:
    _store(sessions, 11 * _WIDTH_US + 7, 12 * _WIDTH_US + 7)
    assert _newest(sessions) is None
