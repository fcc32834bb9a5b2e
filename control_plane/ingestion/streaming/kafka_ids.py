"""Kafka message ids, ``"<partition>-<offset>"``, as the materializer orders and scores them: unique within
a topic and increasing within a partition, the only order Kafka has (see ``kafka_source``). Plain
arithmetic on the id text, so that ordering a batch needs no Kafka client."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

#: Bits of an offset in :func:`kafka_order` (the partition takes the 20 above them): 8.8 trillion records.
_OFFSET_BITS = 43
#: Scores of Kafka ids in the applied / rejected sets written before they were record times: partitions.
LEGACY_SCORES_BELOW = 1 << (63 - _OFFSET_BITS)


def kafka_order(ids: Sequence[str]) -> npt.NDArray[np.int64]:
    """``partition << 43 | offset`` of each ``PARTITION-OFFSET`` id. Read as a Redis stream id (the
    milliseconds shifted over a 20-bit sequence capped at 2^20 - 1), every offset past about a million
    had one order, so a redelivered older record of one entity and event time could replace a newer one's
    ``last`` value. Order across partitions is arbitrary (Kafka has none) but fixed."""
    order = np.empty(len(ids), dtype=np.int64)
    for index, message_id in enumerate(ids):
        partition, _, offset = message_id.partition("-")
        order[index] = (int(partition) << _OFFSET_BITS) | min(int(offset), (1 << _OFFSET_BITS) - 1)
    return order


def kafka_id_problems(ids: Sequence[str]) -> dict[int, str]:
    """The ids (by index) ``kafka_order`` cannot hold exactly (an offset from 2**43 on was capped, so
    later records tied; a partition from 2**20 on passed int64), each with the reason it is refused."""
    if not ids:
        return {}
    numbers = pa.array("-".join(ids).split("-"), pa.string()).cast(pa.int64()).to_numpy().reshape(-1, 2)
    bad = (numbers[:, 0] >= LEGACY_SCORES_BELOW) | (numbers[:, 1] >= 1 << _OFFSET_BITS)
    return {
        row: (
            f"Kafka record {ids[row]}: its partition or offset is past what the tie-break of `last` orders"
            f" exactly (partitions below {LEGACY_SCORES_BELOW}, offsets below {1 << _OFFSET_BITS}); not"
            " applied"
        )
        for row in np.flatnonzero(bad).tolist()
    }


def id_position(message_id: str) -> tuple[int, int]:
    """(partition, offset) of a ``PARTITION-OFFSET`` id."""
    partition, _, offset = message_id.partition("-")
    return int(partition), int(offset)
