"""The drift windows of each (deployment, model, version) the monitor has read rows of, and when a version
is forgotten.

A version's windows are cut as its deployment's config says; when the window settings change, the open
window's rows move into windows of the new shape (which may close some at once), so a change read one tick
late loses no rows.

A version that stops serving (replaced by a retrained one, its deployment deleted) sends no more rows.
Its time window is closed by the clock (:meth:`.TumblingWindows.flush_due`), but its count window would
stay open for good: up to ``window_rows - 1`` rows in memory, their log entries pending in the consumer
group, in no report and no dropped count. So a version whose windows got no row for ``window_idle_s``
(measured on the monotonic clock: a wall clock stepped back would hold it, one stepped forward cut it
short) has its open count window closed as it is (:meth:`.TumblingWindows.close_open`): reported like
any other, with the rows it has (fewer than 30 per feature score as insufficient data), and its entries
acknowledged with that report. Its open time window is left to the clock: closed early, a version quiet
for ``window_idle_s`` inside a longer period (a day's window, a quiet night hour) had the period reported
with the rows before the quiet spell, and the rows after it made a second report of the same period. Once
nothing of it is open and none of its windows waits for a report, the version is forgotten;
should it serve again, it starts afresh (its prediction baseline learned again, as after a restart) except
for the end of the newest time window it closed, which is remembered (one number per forgotten version):
a late row of a period already reported is dropped as late, where fresh windows took it, opened that
period again and reported it a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass

from prometheus_client import Counter

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.scoring import Key, Profile
from control_plane.monitoring.windows import Batch, TumblingWindows, Window, WindowKindName


@dataclass
class VersionWindows:
    """Windows of one (deployment, model, version) and the window settings they were cut with."""

    windows: TumblingWindows
    shape: tuple[int, int, float]
    output_name: str = ""
    output_baseline: Profile | None = None
    #: When it last got a row, on the monotonic clock.
    last_row_at: float = 0.0


class Versions:
    def __init__(
        self, grace_s: float, idle_s: float, rows_dropped: Counter, monotonic: Callable[[], float]
    ) -> None:
        self._grace_s = grace_s
        self._idle_s = idle_s
        self._rows_dropped = rows_dropped
        self._monotonic = monotonic
        self._versions: dict[Key, VersionWindows] = {}
        #: Forgotten versions: the end of the newest time window they closed (see the module doc).
        self._closed_until_us: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._versions)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._versions))

    def get(self, key: Key) -> VersionWindows | None:
        return self._versions.get(key)

    def add(
        self, key: Key, config: pb.MonitorConfig, batch: Batch, output_name: str, width: int | None = None
    ) -> list[Window]:
        """Adds one entry's rows to the windows of ``key``; returns the windows that closed. ``width``: the
        feature count of the version's reference profile, when known (every row must have it)."""
        version, closed = self.windows_for(key, config)
        if width is not None and version.windows.width != width:
            version.windows.expect_width(width)
        if output_name:
            version.output_name = output_name
        version.last_row_at = self._monotonic()
        closed.extend(version.windows.add(batch))
        return closed

    def remember_closed(self, key: Key, until_us: int) -> None:
        """Counts the time windows of ``key`` ending by ``until_us`` as reported (a stored report's, read
        back after a start: :mod:`.stored_periods`), for its windows once they are made."""
        self._closed_until_us[key] = max(self._closed_until_us.get(key, until_us), until_us)

    def windows_for(self, key: Key, config: pb.MonitorConfig) -> tuple[VersionWindows, list[Window]]:
        """The windows of ``key`` cut as ``config`` says, and the windows a change of shape closed."""
        shape = (config.window_kind, int(config.window_rows), float(config.window_seconds))
        version = self._versions.get(key)
        if version is not None and version.shape == shape:
            return version, []
        kind: WindowKindName = "time" if config.window_kind == pb.WINDOW_KIND_TIME else "count"
        dropped = self._rows_dropped
        windows = TumblingWindows(
            kind,
            int(config.window_rows),
            config.window_seconds,
            self._grace_s,
            on_drop=lambda reason, rows: dropped.labels(key[0], reason).inc(rows),
        )
        fresh = VersionWindows(windows, shape, last_row_at=self._monotonic())
        closed: list[Window] = []
        remembered = self._closed_until_us.pop(key, None)
        if remembered is not None:
            windows.keep_closed(remembered)
        if version is not None:
            fresh.output_name, fresh.output_baseline = version.output_name, version.output_baseline
            fresh.last_row_at = version.last_row_at
            closed = windows.adopt(version.windows)
        self._versions[key] = fresh
        return fresh, closed

    def due(self, now_us: int, reporting: Container[Key]) -> list[tuple[Key, Window]]:
        """Time windows past their end and grace (``now_us``, wall clock), and the open windows of versions
        idle for ``idle_s``; forgets idle versions with nothing open and no window in ``reporting``."""
        closed: list[tuple[Key, Window]] = []
        now = self._monotonic()
        for key, version in list(self._versions.items()):
            flushed = version.windows.flush_due(now_us)
            if now - version.last_row_at >= self._idle_s:
                if version.windows.kind == "count":  # a time window is closed by the clock, at its end
                    flushed.extend(version.windows.close_open())
                # Kept while a window of it is open or waits for its report, which reads its output name
                # and baseline; forgotten on a later pass.
                if not flushed and key not in reporting and version.windows.pending_rows == 0:
                    closed_until = version.windows.closed_until_us
                    if closed_until is not None:
                        self._closed_until_us[key] = closed_until
                    del self._versions[key]
            closed.extend((key, window) for window in flushed)
        return closed
