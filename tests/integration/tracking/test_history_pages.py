"""GetMetricHistory pages on the real store, on each supported database: a page reads and decodes only
the stored chunks (one per logged batch) that can hold its points, found by each chunk's step range,
where it decoded every point of the metric for every page (a metric of millions of points cost seconds
and its whole size in memory per page). The pages are what they were: against a brute-force ordering
of every stored point, for random batches (steps out of order, ties of step and timestamp inside and
across batches, batches whose step ranges overlap) and page sizes, each page and each page token is
exactly the one the whole sort gives, page boundaries falling inside stored batches included."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from clients.aether.v1 import tracking_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, keyset, read_session, upgrade_to_head
from control_plane.tracking.history import read_page
from control_plane.tracking.store import TrackingStore
from control_plane.tracking.tables import MetricChunkRow, RunRow

ACTOR = "history-test"
Point = tuple[int, int, int, int, float]  # step, timestamp, chunk id, index in the chunk, value


class Stored:
    def __init__(self, db_url: str) -> None:
        self.engine = create_db_engine(db_url)
        upgrade_to_head(self.engine)
        self.sessions = create_session_factory(self.engine)
        self.store = TrackingStore(self.sessions)
        self.experiment_id = self.store.create_experiment("history", actor=ACTOR).experiment_id

    def run_with(self, batches: list[list[tuple[int, int]]]) -> str:
        run_id = self.store.create_run(self.experiment_id, actor=ACTOR).run_id
        value = 0.0
        for batch in batches:
            values = [value + index for index in range(len(batch))]
            value += len(batch)
            series = pb.MetricSeries(
                key="loss",
                values=values,
                steps=[step for step, _ in batch],
                timestamps_us=[stamp for _, stamp in batch],
            )
            self.store.log_batch([pb.RunBatch(run_id=run_id, metrics=[series])], actor=ACTOR)
        return run_id

    def every_point(self, run_id: str) -> list[Point]:
        """Every stored point of the run's "loss", in the order the pages promise, from the rows."""
        points: list[Point] = []
        with read_session(self.sessions) as session:
            rows = session.execute(
                select(
                    MetricChunkRow.id,
                    MetricChunkRow.steps,
                    MetricChunkRow.timestamps_us,
                    MetricChunkRow.values,
                )
                .join(RunRow, RunRow.id == MetricChunkRow.run_pk)
                .where(RunRow.run_id == run_id, MetricChunkRow.key == "loss")
            ).all()
        for chunk_id, steps, stamps, values in rows:
            decoded = zip(
                np.frombuffer(steps, "<i8"),
                np.frombuffer(stamps, "<i8"),
                np.frombuffer(values, "<f8"),
                strict=True,
            )
            points += [(int(s), int(t), chunk_id, index, float(v)) for index, (s, t, v) in enumerate(decoded)]
        return sorted(points, key=lambda point: point[:4])

    def run_pk(self, run_id: str) -> int:
        with read_session(self.sessions) as session:
            return session.scalars(select(RunRow.id).where(RunRow.run_id == run_id)).one()


@pytest.fixture
def stored(db_url: str) -> Iterator[Stored]:
    stored = Stored(db_url)
    yield stored
    stored.engine.dispose()


def _pages(store: TrackingStore, run_id: str, size: int) -> list[tuple[list[Point], str]]:
    pages: list[tuple[list[Point], str]] = []
    token = ""
    while True:
        page, token = store.metric_history(run_id, "loss", page_size=size, page_token=token)
        rows = zip(page.steps, page.timestamps_us, page.values, strict=True)
        pages.append(([(int(s), int(t), 0, 0, float(v)) for s, t, v in rows], token))
        if not token:
            return pages


def _expected(points: list[Point], run_id: str, size: int) -> list[tuple[list[Point], str]]:
    expected: list[tuple[list[Point], str]] = []
    for start in range(0, max(len(points), 1), size):
        page = points[start : start + size]
        more = start + size < len(points)
        token = keyset.encode("GetMetricHistory", f"{run_id}/loss", list(page[-1][:4])) if more else ""
        expected.append(([(s, t, 0, 0, v) for s, t, _, _, v in page], token))
    return expected


batches_strategy = st.lists(
    st.lists(st.tuples(st.integers(-3, 12), st.integers(0, 3)), min_size=1, max_size=12),
    min_size=0,
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=batches_strategy, size=st.integers(1, 20))
def test_pages_equal_the_whole_ordering_with_the_same_tokens(
    stored: Stored, batches: list[list[tuple[int, int]]], size: int
) -> None:
    run_id = stored.run_with(batches)
    points = stored.every_point(run_id)
    assert _pages(stored.store, run_id, size) == _expected(points, run_id, size)
    whole, token = stored.store.metric_history(run_id, "loss")  # unpaged: every point, no token
    assert (list(whole.values), token) == ([point[4] for point in points], "")


def test_pages_of_increasing_steps_split_inside_batches(stored: Stored) -> None:
    """The usual shape, a training loop's: steps increase over batches of ten; pages of 7 and 25 cut
    through batches, and a page of 10 ends exactly on their edges."""
    batches = [[(10 * batch + step, 5) for step in range(10)] for batch in range(30)]
    run_id = stored.run_with(batches)
    points = stored.every_point(run_id)
    for size in (7, 10, 25, 300, 301):
        assert _pages(stored.store, run_id, size) == _expected(points, run_id, size)


def test_a_page_reads_only_the_batches_that_can_hold_its_points(stored: Stored) -> None:
    """200 batches of ten increasing steps, and a batch that went back to steps 500-509 (a resumed job
    logging a step range again) logged last: a page of 25 points in the middle reads the 3 or 4 batches
    its points are in (plus the next one, which shows that more pages follow, and the batch whose range
    overlaps), not the 201 batches of the metric."""
    batches = [[(10 * batch + step, 5) for step in range(10)] for batch in range(200)]
    batches.append([(500 + step, 9) for step in range(10)])
    run_id = stored.run_with(batches)
    points = stored.every_point(run_id)
    run_pk = stored.run_pk(run_id)
    after = points[494][:4]  # step 494: the page holds steps 495-499, then 500-509 twice over
    with read_session(stored.sessions) as session:
        page = read_page(session, run_pk, "loss", after, 25)  # type: ignore[arg-type]
    assert list(page.series.values) == [point[4] for point in points[495:520]]
    assert page.end == points[519][:4]
    assert page.chunks_read <= 6, page.chunks_read
    with read_session(stored.sessions) as session:
        last = read_page(session, run_pk, "loss", points[-3][:4], 25)  # type: ignore[arg-type]
    assert (list(last.series.values), last.end) == ([point[4] for point in points[-2:]], None)
    assert last.chunks_read <= 2, last.chunks_read


def test_a_page_over_tens_of_thousands_of_one_point_batches(stored: Stored) -> None:
    """A loop logging one point per flush leaves a chunk per point: a full page then spans more chunks
    than one statement may name on some builds (SQLite's default bound is 32,766 parameters), so they are
    read in groups."""
    count = 40_000
    batches = [
        pb.RunBatch(run_id="", metrics=[pb.MetricSeries(key="loss", values=[float(step)], steps=[step])])
        for step in range(count)
    ]
    run_id = stored.store.create_run(stored.experiment_id, actor=ACTOR).run_id
    for batch in batches:
        batch.run_id = run_id
    stored.store.log_batch(batches, actor=ACTOR)
    page, token = stored.store.metric_history(run_id, "loss", page_size=100_000)
    assert (list(page.steps), token) == (list(range(count)), "")
    page, token = stored.store.metric_history(run_id, "loss", page_size=count - 1)
    assert list(page.steps) == list(range(count - 1)) and token
    page, token = stored.store.metric_history(run_id, "loss", page_token=token)
    assert (list(page.steps), token) == ([count - 1], "")
