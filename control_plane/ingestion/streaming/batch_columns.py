"""The arrays a stream batch's window aggregation takes (``WindowAggregator.aggregate``): each event's
entity as a dense state index, and each event's input values in the plan's column order."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from control_plane.ingestion.online import key_texts
from control_plane.ingestion.streaming.plan import AggregationPlan


def entity_slots(
    slots: dict[str | tuple[str, ...], int], key_names: Sequence[str], accepted: pa.Table
) -> npt.NDArray[np.int64]:
    """Dense state index of each row's entity in ``slots`` (entity key -> index; new entities get the
    next free index, added to ``slots``)."""
    if len(key_names) == 1:
        # Map the batch's distinct keys only, then gather: one dict lookup per entity, not per event.
        column = accepted.column(key_names[0])
        distinct = pc.unique(column)
        keys = distinct.cast(pa.string()).to_pylist()
        index = list(map(slots.get, keys))  # a C loop; only entities new to the state take Python
        if None in index:
            index = [slots.setdefault(key, len(slots)) for key in keys]
        positions = pc.index_in(column, value_set=distinct).to_numpy(zero_copy_only=False)
        slot_of: npt.NDArray[np.int64] = np.asarray(index, dtype=np.int64)[positions]
        return slot_of
    return np.fromiter(
        (slots.setdefault(k, len(slots)) for k in key_texts(accepted, key_names)),
        dtype=np.int64,
        count=accepted.num_rows,
    )


def plan_values(
    plan: AggregationPlan, counted_only: Collection[str], accepted: pa.Table
) -> npt.NDArray[np.float64]:
    """The events' inputs, one column per ``plan.columns``."""
    n = accepted.num_rows
    values = np.empty((n, len(plan.columns)), dtype=np.float64)
    for j, name in enumerate(plan.columns):
        # Only counted (validation keeps such a field as a string of any kind, or it is a join key or the
        # timestamp field, which every accepted event has): presence is all that counts.
        if name in counted_only:
            values[:, j] = 1.0
        else:
            values[:, j] = accepted.column(name).to_numpy(zero_copy_only=False)
    return values
