"""A stream view's window aggregation: accepted events into the per-entity window state, and out of it
the history rows (one per applied event, as of its entity's newest event time) and the online blobs of the
entities a batch touched. The materializer (``materializer.py``) validates, commits and drains around it;
the rebuild after a restart re-applies events here without emitting anything."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.ingestion.casting import TIMESTAMP_TYPE
from control_plane.ingestion.online import feature_matrix, online_view_version
from control_plane.ingestion.streaming.batch_columns import entity_slots, plan_values
from control_plane.ingestion.streaming.lateness import older_than_windows
from control_plane.ingestion.streaming.online_keys import OnlineKeys
from control_plane.ingestion.streaming.plan import AggregationPlan, apply_fitting, output_columns, plan_for
from kernels.packed_blob import encode_rows


def wall_clock_us() -> int:
    """This host's clock, in microseconds since 1970: the ingestion (write) time of what is emitted."""
    return time.time_ns() // 1000


class WindowAggregator:
    """The window state of one view version's entities, with what it emits."""

    def __init__(
        self,
        view: pb.FeatureView,
        entity: pb.Entity,
        timestamp_column: str,
        clock_us: Callable[[], int] = wall_clock_us,
    ) -> None:
        self.plan: AggregationPlan = plan_for(view)
        self.state = self.plan.new_state()
        # Entity -> dense state index; keyed by the join value's text (one key) or the texts' tuple.
        self._slots: dict[str | tuple[str, ...], int] = {}
        self.key_names = [key.name for key in entity.join_keys]
        read = {a.column for a in view.spec.aggregations if a.function != "count"}
        self._counted_only = {a.column for a in view.spec.aggregations} - read
        self._online = online_view_version(view)
        self._online_keys = OnlineKeys(self._online.entity, self._online.name, self._online.version)
        self._last_ingested_us = 0
        self._clock_us = clock_us
        self._timestamp_column = timestamp_column  # named in the reason an event is not applied

    @property
    def last_ingested_us(self) -> int:
        """The ingestion time of the last history row emitted (or of a predecessor's: ``ingested_after``)."""
        return self._last_ingested_us

    def ingested_after(self, us: int) -> None:
        """Emits later rows at ingestion times after ``us``, a predecessor's last: rows of one entity and
        event time are ordered by ingestion time, online (a blob replaces one of the same event time only
        when written later) and in training sets, so a successor whose clock is behind must not write
        the newer value as the older one."""
        self._last_ingested_us = max(self._last_ingested_us, us)

    def warm(self) -> None:
        """Compiles (or loads from numba's cache) the window kernel now, not inside the first batch."""
        warm = self.plan.new_state(1)
        warm.apply(
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros((1, len(self.plan.columns))),
        )

    def aggregate(
        self, accepted: pa.Table, seq: npt.NDArray[np.int64]
    ) -> tuple[pa.Table, list[tuple[bytes, bytes]], int, dict[int, str]]:
        """Applies accepted events (``seq``: each one's place in the stream, the tie-breaker of ``last``)
        to the window state; returns the history rows, the online blobs of the entities touched (key,
        blob), the newest event time written, and the events not applied (by row of ``accepted``) with
        the reason why: an integer result that no longer fits its type (``apply_fitting``), or older
        than every window of its entity (``lateness.older_than_windows``)."""
        slots = entity_slots(self._slots, self.key_names, accepted)
        ts = accepted.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        values = plan_values(self.plan, self._counted_only, accepted)
        out, out_ts, exact, unfit, older = apply_fitting(self.state, self.plan, slots, ts, seq, values)
        plan, column = self.plan, self._timestamp_column
        refused = unfit | {
            row: older_than_windows(int(ts[row]), newest, plan.bucket_us, plan.n_buckets, column)
            for row, newest in older.items()
        }
        if refused:
            keep = np.ones(accepted.num_rows, dtype=bool)
            keep[list(refused)] = False
            accepted, slots = accepted.filter(pa.array(keep)), slots[keep]
        n = accepted.num_rows
        start = max(self._clock_us(), self._last_ingested_us + 1)
        # Strictly increasing ingestion times order the history rows of one entity that share an event
        # time (an out-of-order event re-emits as of the entity's newest time), as processing did.
        ingested = start + np.arange(n, dtype=np.int64)
        self._last_ingested_us = int(ingested[-1]) if n else self._last_ingested_us
        history = pa.table(
            {
                **{name: accepted.column(name) for name in self.key_names},
                "event_ts": pa.array(out_ts).cast(TIMESTAMP_TYPE),
                "ingested_ts": pa.array(ingested).cast(TIMESTAMP_TYPE),
                **output_columns(self.plan, out, exact),
            }
        )
        if n == 0:
            return history, [], 0, refused
        # The last emitted row of each entity in this batch is its current online value.
        reversed_first = np.unique(slots[::-1], return_index=True)[1]
        last = np.sort(n - 1 - reversed_first)
        latest = history.take(pa.array(last))
        matrix, nulls = feature_matrix(latest, self._online)
        latest_ts = out_ts[last]
        written = ingested[last]  # the history row's ingestion time: ties break as in training sets
        blobs = encode_rows(matrix, self._online.layout, self._online.fingerprint, latest_ts, written, nulls)
        keys = self._online_keys.of(latest, self.key_names)
        return history, list(zip(keys, blobs, strict=True)), int(latest_ts.max()), refused

    def replay(self, accepted: pa.Table, seq: npt.NDArray[np.int64]) -> int:
        """Re-applies events applied before (the rebuild), emitting nothing; returns the newest event
        time among them."""
        ts = accepted.column("event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        slots = entity_slots(self._slots, self.key_names, accepted)
        values = plan_values(self.plan, self._counted_only, accepted)
        self.state.apply(slots, ts, seq, values, emit=False)
        return int(ts.max())
