"""GetMetricHistory's pages: the points of one metric after a page token, read from only the stored chunks
that can hold them.

Points are stored in chunks (one per metric per logged batch, :mod:`control_plane.tracking.tables`), in
any step order, and a page is the next points in (step, timestamp, chunk id, index in the chunk) order.
A page decoded every chunk of the metric to answer; a metric of millions of points cost seconds and its
whole size in memory per page. Each chunk now carries its step range (``min_step``, ``max_step``,
indexed), and a page of ``size`` points after the token's key reads:

* only chunks whose range reaches the token's step (``max_step >= step``): no other holds a later point;
* in order of their lowest step, decoding a group of them at a time and keeping the first ``size + 1``
  later points (the one past the page says that another page follows);
* until the next chunk's lowest step is past the step of the last point kept: every point of it, and of
  every chunk after it, sorts after the points kept, which are then the first ones of all.

A training loop logs increasing steps, so a page reads the few chunks its points are in and the one
after; chunks whose ranges overlap (a resumed job logging steps again) are read where they overlap the
page. A chunk without a range (written by a control plane older than migration 0034, still running on the
database) is read by every page, as every chunk was. The pages and their tokens are exactly those of
decoding and sorting every point."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from control_plane.tracking.metrics import Series
from control_plane.tracking.tables import MetricChunkRow

#: The most points of one GetMetricHistory page: a point is at most 28 bytes on the wire (an 8-byte value,
#: step and timestamp varints of at most 10 bytes), so a full page stays near 2.7 MiB, under gRPC's
#: default 4 MiB receive limit that an unpaged reply of ~300,000 points exceeded.
MAX_HISTORY_PAGE = 100_000

#: Where a history page ends: (step, timestamp_us, chunk id, index in the chunk). The chunk id and
#: index (logging order) make the key unique, so pages neither repeat nor skip a point.
HistoryKey = tuple[int, int, int, int]

#: Chunk ranges read per query at first; doubled per query up to the most (a page usually needs a few).
_FIRST_RANGES, _MOST_RANGES = 16, 4096
#: The most chunks decoded per query: one parameter each, and drivers and SQLite builds bound a statement's
#: parameters (SQLite's default is 32,766), where a page of one-point chunks spans 100,001 of them.
_MOST_CHUNKS_READ = 1000

_STEP = np.dtype("<i8")
_VALUE = np.dtype("<f8")
_C = MetricChunkRow


@dataclass(frozen=True)
class HistoryPage:
    series: Series
    end: HistoryKey | None  # the key to continue from; None on the last page
    chunks_read: int  # chunks decoded to answer


@dataclass(frozen=True)
class _Points:
    """Points in page order (step, timestamp, chunk id, index), as parallel arrays."""

    steps: npt.NDArray[np.int64]
    times: npt.NDArray[np.int64]
    chunks: npt.NDArray[np.int64]
    indexes: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]

    @classmethod
    def empty(cls) -> _Points:
        no_int = np.empty(0, dtype=np.int64)
        return cls(no_int, no_int, no_int, no_int, np.empty(0, dtype=_VALUE))

    @classmethod
    def of_chunks(cls, rows: Sequence[tuple[int, bytes, bytes, bytes]]) -> _Points:
        """The points of chunk rows ``(id, steps, values, timestamps)``, in no particular order."""
        steps = [np.frombuffer(row[1], dtype=_STEP) for row in rows]
        counts = [len(part) for part in steps]
        return cls(
            np.concatenate([np.empty(0, dtype=_STEP), *steps]),
            np.concatenate([np.empty(0, dtype=_STEP), *(np.frombuffer(r[3], dtype=_STEP) for r in rows)]),
            np.repeat(np.array([row[0] for row in rows], dtype=np.int64), counts),
            np.concatenate([np.empty(0, dtype=np.int64), *(np.arange(count) for count in counts)]),
            np.concatenate([np.empty(0, dtype=_VALUE), *(np.frombuffer(r[2], dtype=_VALUE) for r in rows)]),
        )

    def __len__(self) -> int:
        return len(self.steps)

    def key_at(self, position: int) -> HistoryKey:
        return (
            int(self.steps[position]),
            int(self.times[position]),
            int(self.chunks[position]),
            int(self.indexes[position]),
        )

    def taken(self, kept: npt.NDArray[np.intp]) -> _Points:
        return _Points(
            self.steps[kept], self.times[kept], self.chunks[kept], self.indexes[kept], self.values[kept]
        )

    def after(self, key: HistoryKey | None) -> _Points:
        """The points that sort after ``key`` (all for None)."""
        if key is None:
            return self
        step, time, chunk, index = key
        steps, times, chunks = self.steps, self.times, self.chunks
        later = (steps > step) | (
            (steps == step)
            & (
                (times > time)
                | ((times == time) & ((chunks > chunk) | ((chunks == chunk) & (self.indexes > index))))
            )
        )
        return self.taken(np.flatnonzero(later))

    def merged(self, other: _Points, most: int) -> _Points:
        """These points and ``other`` in page order, the first ``most`` of them."""
        both = _Points(
            np.concatenate((self.steps, other.steps)),
            np.concatenate((self.times, other.times)),
            np.concatenate((self.chunks, other.chunks)),
            np.concatenate((self.indexes, other.indexes)),
            np.concatenate((self.values, other.values)),
        )
        order = np.lexsort((both.indexes, both.chunks, both.times, both.steps))
        return both.taken(order[:most])


@dataclass(frozen=True)
class _Range:
    """A stored chunk as a page finds it: its id, lowest step (None: unknown) and number of points."""

    id: int
    min_step: int | None
    count: int


def read_page(session: Session, run_pk: int, key: str, after: HistoryKey | None, size: int) -> HistoryPage:
    """Up to ``size`` points of metric ``key`` of run ``run_pk`` that sort after ``after`` (module doc)."""
    wanted = size + 1  # one past the page: whether another page follows
    kept = _Points.empty()
    chunks_read = 0
    ranges = _chunk_ranges(session, run_pk, key, None if after is None else after[0])
    upcoming = next(ranges, None)
    while upcoming is not None:
        # The step of the last point kept once there are enough: a chunk starting past it adds nothing.
        cutoff = int(kept.steps[-1]) if len(kept) >= wanted else None
        if cutoff is not None and upcoming.min_step is not None and upcoming.min_step > cutoff:
            break
        # A group of chunks holding about the points still missing (or, once there are enough, a page's
        # worth of the chunks that start within them), at least one chunk.
        group: list[int] = []
        points = 0
        budget = wanted if cutoff is not None else wanted - len(kept)
        while upcoming is not None and (not group or points < budget) and len(group) < _MOST_CHUNKS_READ:
            if cutoff is not None and upcoming.min_step is not None and upcoming.min_step > cutoff:
                break
            group.append(upcoming.id)
            points += upcoming.count
            upcoming = next(ranges, None)
        rows = session.execute(select(_C.id, _C.steps, _C.values, _C.timestamps_us).where(_C.id.in_(group)))
        decoded = _Points.of_chunks([(row[0], row[1], row[2], row[3]) for row in rows])
        kept = kept.merged(decoded.after(after), wanted)
        chunks_read += len(group)
    page = kept.taken(np.arange(min(size, len(kept))))
    series = Series(key, page.steps, page.values, page.times)
    return HistoryPage(series, kept.key_at(size - 1) if len(kept) > size else None, chunks_read)


def _chunk_ranges(session: Session, run_pk: int, key: str, from_step: int | None) -> Iterator[_Range]:
    """Each chunk of the metric that may hold a point at ``from_step`` or later (every chunk for None):
    chunks without a range first, then by lowest step (then highest step and id, so the order is total
    and the index gives it), a growing batch per query."""
    columns = (_C.id, _C.min_step, _C.max_step, _C.count)
    of_metric = (_C.run_pk == run_pk, _C.key == key)
    unknown = select(*columns).where(*of_metric, _C.min_step.is_(None)).order_by(_C.id)
    for row in session.execute(unknown):
        yield _Range(row[0], None, row[3])
    query = select(*columns).where(*of_metric, _C.min_step.is_not(None))
    if from_step is not None:
        query = query.where(_C.max_step >= from_step)
    query = query.order_by(_C.min_step, _C.max_step, _C.id)
    rows, last = _FIRST_RANGES, None
    while True:
        batch = (
            query if last is None else query.where(tuple_(_C.min_step, _C.max_step, _C.id) > tuple_(*last))
        )
        found = session.execute(batch.limit(rows)).all()
        for row in found:
            yield _Range(row[0], row[1], row[3])
        if len(found) < rows:
            return
        last = (found[-1][1], found[-1][2], found[-1][0])
        rows = min(rows * 2, _MOST_RANGES)
