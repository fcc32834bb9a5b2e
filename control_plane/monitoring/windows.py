"""Tumbling windows over the logged feature rows of one (deployment, model version): by count or by time.

* **Count**: every ``rows`` rows form a window, in the order the rows were read; a request whose rows
  straddle the boundary is split between two windows. The window's bounds are the earliest and the
  latest prediction time of its rows: rows are read in the order they reached the log, not in
  prediction time (a slow request logs after a faster one that started later; replicas' clocks
  differ), and bounded by its first and last rows a window could end before it started, or before rows
  it holds.
* **Time**: periods ``[k·W, (k+1)·W)`` of prediction time (aligned to the Unix epoch, so every process
  cuts the same windows). A window closes when a row of a later period arrives, or — with no traffic —
  once the clock passes its end plus ``grace_s`` (:meth:`TumblingWindows.flush_due`). A row older than
  the open window (its window has closed) is late: dropped, and so is one from before the end of the
  newest window closed, in windows re-cut by a config change (:meth:`TumblingWindows.adopt`) too, and in
  the fresh windows of a version forgotten when idle that serves again (:meth:`TumblingWindows.keep_closed`,
  :mod:`.versions`): either way a period is reported at most once.

Rows of another feature count than the window's are dropped (``"mismatched"``), so one malformed entry
cannot break a window's matrix. A window's count is the version's (its ``feature_refs``', else its
reference profile's ``n_features``: ``widths.expected_width``) once the
windows know it (``width=``, :meth:`TumblingWindows.expect_width`: the monitor tells them the version's
reference). Until then it is the window's own first row's, taken anew for every window; and should
batches (logged requests) of one other count come to outnumber the open window's, its rows are taken for
the strays: dropped as mismatched, the window starting over with the newest of those batches. So one
stray first entry costs itself and one good entry, never the version's later windows (a count window it
opened would otherwise never fill). When the windows learn the version's count, the open window's rows of
another count are the strays too, dropped the same way: kept, they held the open window to their count
while every good row after them was dropped, and a count window never filled. Outputs travel with their
feature rows; a batch without outputs (or with another row count, or of another output than the window's
first: the config came to name another ``prediction_output`` while the window was open) contributes
features only, so that a window's outputs are those of one output (:attr:`Window.output_name`): mixed,
their scores and class codes were scored, and learned as the prediction baseline, as one output.

Nothing is dropped silently: dropped rows are passed to ``on_drop(reason, rows)`` as they are dropped
(``"late"`` or ``"mismatched"``; the monitor counts them in Prometheus), counted in the totals
``late_rows`` and ``mismatched_rows``, and carried by the next window to close (``Window.late_rows``,
``Window.mismatched_rows``: rows dropped since the previous window closed), so that every row read is
either in exactly one window or counted as dropped by exactly one (rows dropped after the last window of
a version that stopped serving are counted by ``on_drop`` only: :meth:`TumblingWindows.close_open`).

Each batch may name the log entry it came from (``Batch.entry``); a window lists the entries it holds
rows of or carries a drop count of (``Window.entries``, :meth:`TumblingWindows.holds` for the open one),
so that the monitor acknowledges an entry only once every window counting it was reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]
WindowKindName = Literal["count", "time"]
DropReason = Literal["late", "mismatched"]
#: ``_closed_until_us`` before any time window closed: no row is late.
_NO_WINDOW_CLOSED = -(2**63)


@dataclass(frozen=True)
class Batch:
    """The rows of one logged request: ``features`` ``[n, f]``, ``outputs`` ``[n, k]`` or None."""

    ts_us: int
    features: FloatMatrix
    outputs: FloatMatrix | None = None
    entry: bytes = b""  # the log entry these rows came from; b"" = not tracked
    output_name: str = ""  # the output ``outputs`` are of

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class Window:
    start_us: int
    end_us: int
    features: FloatMatrix
    #: Output rows of the batches that had outputs (may be fewer rows than ``features``); None if none.
    outputs: FloatMatrix | None
    #: Rows dropped since the previous window of these windows closed: late, and of another width.
    late_rows: int = 0
    mismatched_rows: int = 0
    #: The log entries whose rows it holds or whose dropped rows it counts.
    entries: frozenset[bytes] = frozenset()
    #: The output ``outputs`` are of (the batches' first with outputs).
    output_name: str = ""

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])


@dataclass
class _Open:
    batches: list[Batch] = field(default_factory=list)
    features: list[FloatMatrix] = field(default_factory=list)
    outputs: list[FloatMatrix] = field(default_factory=list)
    earliest_ts_us: int = 0
    latest_ts_us: int = 0
    n_rows: int = 0
    width: int = -1
    output_width: int = -1
    output_name: str = ""
    late_rows: int = 0
    mismatched_rows: int = 0
    entries: set[bytes] = field(default_factory=set)  # those with rows here
    dropped: set[bytes] = field(default_factory=set)  # those with rows in late_rows / mismatched_rows
    rejected: dict[int, int] = field(default_factory=dict)  # mismatched batches by feature count

    def add(
        self, ts_us: int, features: FloatMatrix, outputs: FloatMatrix | None, entry: bytes, output_name: str
    ) -> None:
        if self.n_rows == 0:
            self.earliest_ts_us = self.latest_ts_us = ts_us
        if self.width == -1:
            self.width = features.shape[1]
        self.earliest_ts_us = min(self.earliest_ts_us, ts_us)
        self.latest_ts_us = max(self.latest_ts_us, ts_us)
        self.batches.append(Batch(ts_us, features, outputs, entry, output_name))
        if entry:
            self.entries.add(entry)
        self.features.append(features)
        self.n_rows += features.shape[0]
        first = not self.outputs
        if outputs is not None and (
            first or (self.output_width, self.output_name) == (outputs.shape[1], output_name)
        ):
            self.output_width, self.output_name = outputs.shape[1], output_name
            self.outputs.append(outputs)

    def close(self, start_us: int, end_us: int) -> Window:
        outputs = np.concatenate(self.outputs) if self.outputs else None
        features = np.concatenate(self.features)
        entries = frozenset(self.entries | self.dropped)
        return Window(
            start_us,
            end_us,
            features,
            outputs,
            self.late_rows,
            self.mismatched_rows,
            entries,
            self.output_name,
        )


class TumblingWindows:
    def __init__(
        self,
        kind: WindowKindName,
        rows: int = 1000,
        seconds: float = 3600.0,
        grace_s: float = 0.0,
        on_drop: Callable[[DropReason, int], None] | None = None,
        width: int | None = None,
    ):
        """``width``: the feature count every row must have (the version's: ``widths.expected_width``),
        when known; None takes each window's from its first row (see the module doc)."""
        if kind == "count" and rows < 1:
            raise ValueError(f"a count window needs at least one row, got {rows}")
        if kind == "time" and seconds <= 0:
            raise ValueError(f"a time window needs a positive length, got {seconds}")
        self.kind = kind
        self.rows = rows
        self.width_us = max(1, round(seconds * 1e6))
        self.grace_us = round(grace_s * 1e6)
        self.late_rows = 0
        self.mismatched_rows = 0
        self._on_drop = on_drop
        self._width = -1 if width is None else width
        self._open = _Open(width=self._width)
        self._period = -1  # index k of the open time window; -1 before the first row
        # The end of the newest time window already closed: rows before it are late from now on. A time
        # and not a period index, so that windows of another length that adopt these keep it.
        self._closed_until_us = _NO_WINDOW_CLOSED

    @property
    def pending_rows(self) -> int:
        return self._open.n_rows

    def pending(self) -> list[Batch]:
        """The rows of the open window, as added (to carry them over into re-configured windows)."""
        return list(self._open.batches)

    def holds(self, entry: bytes) -> bool:
        """Whether the open window holds rows of ``entry`` or counts rows of it as dropped."""
        return entry in self._open.entries or entry in self._open.dropped

    @property
    def closed_until_us(self) -> int | None:
        """The end of the newest time window closed (rows before it are late), None before any closed."""
        return None if self._closed_until_us == _NO_WINDOW_CLOSED else self._closed_until_us

    def keep_closed(self, until_us: int) -> None:
        """Counts the time windows ending by ``until_us`` as closed already: rows before it are late. For
        windows that take over from earlier ones of the same version (forgotten when it went idle), so that
        a period is reported at most once."""
        self._closed_until_us = max(self._closed_until_us, until_us)

    @property
    def width(self) -> int | None:
        """The feature count every row must have, once known (:meth:`expect_width`); else None."""
        return None if self._width == -1 else self._width

    def expect_width(self, width: int) -> None:
        """From now on a row of another feature count than ``width`` (the version's) is mismatched. The
        open window's rows of another count are the strays: dropped (``mismatched``), the window starting
        over. Kept, they held the window to their count, every good row after them was dropped, and a
        count window never filled (the version got no drift report again); and a request of their count
        filling it spilled its last rows into the next window, mixing counts there, which then failed every
        close."""
        self._width = width
        if self._open.n_rows and self._open.width != width:
            self._drop_open_as_strays()
        if self._open.n_rows == 0:
            self._open.width = width

    def adopt(self, previous: TumblingWindows) -> list[Window]:
        """Takes over the open window of ``previous`` (windows of another shape): its rows, as added (which
        may close some windows at once), its count of dropped rows, which the next window carries, and the
        feature count it expects, if known."""
        if previous._width != -1 and self._width == -1:
            self.expect_width(previous._width)
        # The windows closed already stay closed: a late row of one, taken by the new windows, reported its
        # period a second time.
        self._closed_until_us = max(self._closed_until_us, previous._closed_until_us)
        self._open.late_rows += previous._open.late_rows
        self._open.mismatched_rows += previous._open.mismatched_rows
        self._open.dropped |= previous._open.dropped
        closed: list[Window] = []
        for batch in previous.pending():
            closed.extend(self.add(batch))
        return closed

    def add(self, batch: Batch) -> list[Window]:
        """Adds one request's rows; returns the windows this closed (oldest first)."""
        features = np.asarray(batch.features, dtype=np.float64)
        outputs = (
            batch.outputs
            if batch.outputs is not None and batch.outputs.shape[0] == features.shape[0]
            else None
        )
        if features.shape[0] == 0:
            return []
        width = features.shape[1]
        if width != self._width_for(batch.ts_us, width) and not self._displaces(width):
            self._drop("mismatched", features.shape[0], batch.entry)
            return []
        if self.kind == "count":
            return self._add_counted(batch.ts_us, features, outputs, batch.entry, batch.output_name)
        return self._add_timed(batch.ts_us, features, outputs, batch.entry, batch.output_name)

    def flush_due(self, now_us: int) -> list[Window]:
        """Time windows: closes the open window once ``now_us`` is past its end plus the grace period."""
        if self.kind != "time" or self._open.n_rows == 0:
            return []
        end = (self._period + 1) * self.width_us
        if now_us < end + self.grace_us:
            return []
        return [self._close_period()]

    def close_open(self) -> list[Window]:
        """Closes the open window as it is (its version stopped serving): a count window spanning its
        rows' times, a time window its period. An open window holding no rows, only dropped ones, is let
        go: they were counted as they were dropped (``on_drop``), and no report is made of nothing."""
        if self._open.n_rows == 0:
            self._open = _Open(width=self._width)
            return []
        if self.kind == "time":
            return [self._close_period()]
        window = self._open.close(self._open.earliest_ts_us, self._open.latest_ts_us)
        self._open = _Open(width=self._width)
        return [window]

    def _add_counted(
        self, ts_us: int, features: FloatMatrix, outputs: FloatMatrix | None, entry: bytes, output_name: str
    ) -> list[Window]:
        closed: list[Window] = []
        offset = 0
        while offset < features.shape[0]:
            take = min(self.rows - self._open.n_rows, features.shape[0] - offset)
            part_outputs = outputs[offset : offset + take] if outputs is not None else None
            self._open.add(ts_us, features[offset : offset + take], part_outputs, entry, output_name)
            offset += take
            if self._open.n_rows == self.rows:
                closed.append(self._open.close(self._open.earliest_ts_us, self._open.latest_ts_us))
                self._open = _Open(width=self._width)
        return closed

    def _add_timed(
        self, ts_us: int, features: FloatMatrix, outputs: FloatMatrix | None, entry: bytes, output_name: str
    ) -> list[Window]:
        period = ts_us // self.width_us
        closed: list[Window] = []
        if period < self._period or ts_us < self._closed_until_us:
            self._drop("late", features.shape[0], entry)
            return closed
        if period > self._period and self._open.n_rows:
            closed.append(self._close_period())
        self._period = period
        self._open.add(ts_us, features, outputs, entry, output_name)
        return closed

    def _width_for(self, ts_us: int, width: int) -> int:
        """The feature count a row at ``ts_us`` must have: the open window's once it holds a row, unless
        this row opens a window of its own (a later time period); else the expected one when known; else
        the row's own (``width``)."""
        opens = self._open.n_rows == 0 or (self.kind == "time" and ts_us // self.width_us > self._period)
        if not opens:
            return self._open.width
        return width if self._width == -1 else self._width

    def _displaces(self, width: int) -> bool:
        """With no expected width: whether batches of ``width`` (this one included) now outnumber the
        open window's, whose rows are then taken for the strays: dropped (``mismatched``), the window
        starting over with this batch. Else counts this batch against ``width``."""
        if self._width != -1:
            return False
        rejected = self._open.rejected.get(width, 0) + 1
        if rejected <= len(self._open.batches):
            self._open.rejected[width] = rejected
            return False
        self._drop_open_as_strays()
        return True

    def _drop_open_as_strays(self) -> None:
        """Drops the open window's rows (``mismatched``), keeping its dropped counts: it starts over."""
        strays = self._open
        self._open = _Open(
            width=self._width,
            late_rows=strays.late_rows,
            mismatched_rows=strays.mismatched_rows,
            dropped=strays.dropped | strays.entries,
        )
        self._drop("mismatched", strays.n_rows, b"")

    def _drop(self, reason: DropReason, rows: int, entry: bytes) -> None:
        if entry:
            self._open.dropped.add(entry)
        if reason == "late":
            self.late_rows += rows
            self._open.late_rows += rows
        else:
            self.mismatched_rows += rows
            self._open.mismatched_rows += rows
        if self._on_drop is not None:
            self._on_drop(reason, rows)

    def _close_period(self) -> Window:
        start = self._period * self.width_us
        self._closed_until_us = start + self.width_us
        window = self._open.close(start, start + self.width_us)
        self._open = _Open(width=self._width)
        return window
