"""Metric points: validation, packing into chunk rows, and the per-(run, key) summary (latest point,
minimum, maximum, count) kept current on every insert.

Points arrive as parallel arrays per key and stay arrays: numpy validates them in one pass, the chunk
row stores them as packed little-endian bytes, and the summary of a batch is a few vector reductions."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import Table, case, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement

from clients.errors import InvalidArgument
from clients.time_bounds import EARLIEST_TIME_US, LATEST_TIME_US
from clients.tracking_rules import check_key as check_key  # the SDK applies it at the call too
from clients.tracking_rules import metric_time_problem
from control_plane.tracking.tables import MetricChunkRow, MetricLatestRow

_STEP = np.dtype("<i8")
_VALUE = np.dtype("<f8")


@dataclass(frozen=True)
class Series:
    """Points of one metric: equal-length arrays, in logging order."""

    key: str
    steps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    timestamps_us: npt.NDArray[np.int64]

    @classmethod
    def of(
        cls,
        key: str,
        values: Sequence[float],
        steps: Sequence[int],
        timestamps_us: Sequence[int],
        now_us: int,
    ) -> Series:
        """Validates and converts; empty ``timestamps_us`` means every point happened ``now_us``."""
        check_key(key, "metric")
        value_array = np.asarray(values, dtype=_VALUE)
        step_array = np.asarray(steps, dtype=_STEP)
        if len(step_array) != len(value_array):
            raise InvalidArgument(
                f"metric {key!r}: {len(value_array)} values but {len(step_array)} steps (must be equal)"
            )
        if len(timestamps_us) == 0:
            time_array = np.full(len(value_array), now_us, dtype=_STEP)
        else:
            time_array = np.asarray(timestamps_us, dtype=_STEP)
            if len(time_array) != len(value_array):
                raise InvalidArgument(
                    f"metric {key!r}: {len(value_array)} values but {len(time_array)} timestamps "
                    "(must be equal)"
                )
            # Outside years 1 to 9999 no date holds it, and aetherctl could not print it.
            beyond = np.flatnonzero((time_array < EARLIEST_TIME_US) | (time_array > LATEST_TIME_US))
            if len(beyond):
                first = int(beyond[0])
                raise InvalidArgument(
                    f"metric {key!r} at step {int(step_array[first])}: "
                    f"{metric_time_problem(int(time_array[first]))} ({len(beyond)} such timestamp(s) in "
                    "this batch)"
                )
        bad = np.flatnonzero(~np.isfinite(value_array))
        if len(bad):
            first = int(bad[0])
            raise InvalidArgument(
                f"metric {key!r}: value {value_array[first]!r} at step {int(step_array[first])} is not a "
                f"finite number ({len(bad)} such value(s) in this batch)"
            )
        return cls(key, step_array, value_array, time_array)

    def __len__(self) -> int:
        return len(self.values)

    def chunk_columns(self) -> dict[str, object]:
        return {
            "key": self.key,
            "count": len(self.values),
            # The step range a history page finds the chunk by (never empty: empty series are not stored).
            "min_step": int(self.steps.min()),
            "max_step": int(self.steps.max()),
            "steps": self.steps.astype(_STEP, copy=False).tobytes(),
            "values": self.values.astype(_VALUE, copy=False).tobytes(),
            "timestamps_us": self.timestamps_us.astype(_STEP, copy=False).tobytes(),
        }


@dataclass(frozen=True)
class Summary:
    value: float
    step: int
    timestamp_us: int
    min_value: float
    max_value: float
    count: int

    @classmethod
    def of(cls, series: Series) -> Summary:
        # The latest point: highest step, then highest timestamp, then the last logged (lexsort is stable
        # and its last key is the primary one).
        order = np.lexsort((series.timestamps_us, series.steps))
        last = int(order[-1])
        return cls(
            value=float(series.values[last]),
            step=int(series.steps[last]),
            timestamp_us=int(series.timestamps_us[last]),
            min_value=float(series.values.min()),
            max_value=float(series.values.max()),
            count=len(series),
        )

    def merge(self, later: Summary) -> Summary:
        """Both summaries combined; ``later`` holds points logged after these (it wins ties)."""
        newer = (later.step, later.timestamp_us) >= (self.step, self.timestamp_us)
        head = later if newer else self
        return Summary(
            value=head.value,
            step=head.step,
            timestamp_us=head.timestamp_us,
            min_value=min(self.min_value, later.min_value),
            max_value=max(self.max_value, later.max_value),
            count=self.count + later.count,
        )


def upsert_summaries(session: Session, summaries: dict[tuple[int, str], Summary]) -> None:
    """Merges each summary into ``tracking_metric_latest`` in one statement (an upsert executed for many
    rows); ``summaries`` has one entry per (run, key), which PostgreSQL requires of one statement."""
    if not summaries:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise InvalidArgument(f"metric summaries need SQLite or PostgreSQL, not {dialect}")
    statement = _summary_upsert(dialect)
    rows = [
        {
            "run_pk": run_pk,
            "key": key,
            "value": summary.value,
            "step": summary.step,
            "timestamp_us": summary.timestamp_us,
            "min_value": summary.min_value,
            "max_value": summary.max_value,
            "count": summary.count,
        }
        for (run_pk, key), summary in sorted(summaries.items())  # one lock order for concurrent writers
    ]
    session.execute(statement, rows)


@functools.cache
def _summary_upsert(dialect: str) -> Any:
    """The upsert statement for ``dialect``, built once: building it costs ~1 ms, a third of writing a
    small batch (statements are immutable, so one object serves every call and thread)."""
    module = postgresql if dialect == "postgresql" else sqlite
    table = MetricLatestRow.__table__
    statement = module.insert(table)
    new = statement.excluded
    # The incoming point is newer when its (step, timestamp) is at least the stored one.
    newer: ColumnElement[bool] = (new.step > table.c.step) | (
        (new.step == table.c.step) & (new.timestamp_us >= table.c.timestamp_us)
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.run_pk, table.c.key],
        set_={
            "value": case((newer, new.value), else_=table.c.value),
            "step": case((newer, new.step), else_=table.c.step),
            "timestamp_us": case((newer, new.timestamp_us), else_=table.c.timestamp_us),
            "min_value": case((new.min_value < table.c.min_value, new.min_value), else_=table.c.min_value),
            "max_value": case((new.max_value > table.c.max_value, new.max_value), else_=table.c.max_value),
            "count": table.c.count + new.count,
        },
    )


def insert_chunks(session: Session, rows: list[dict[str, object]]) -> None:
    """One multi-row insert of chunk rows (each with ``run_pk`` plus :meth:`Series.chunk_columns`)."""
    if rows:
        session.execute(insert(cast(Table, MetricChunkRow.__table__)), rows)


def join_chunks(chunks: Iterable[tuple[bytes, bytes, bytes]], key: str) -> Series:
    """The points of stored chunks (in insertion order) as one series ordered by step, then timestamp,
    then insertion order."""
    parts = list(chunks)
    if not parts:
        empty_int = np.empty(0, dtype=_STEP)
        return Series(key, empty_int, np.empty(0, dtype=_VALUE), empty_int)
    steps = np.concatenate([np.frombuffer(part[0], dtype=_STEP) for part in parts])
    values = np.concatenate([np.frombuffer(part[1], dtype=_VALUE) for part in parts])
    times = np.concatenate([np.frombuffer(part[2], dtype=_STEP) for part in parts])
    order = np.lexsort((times, steps))
    return Series(key, steps[order], values[order], times[order])
