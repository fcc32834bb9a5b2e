"""The stream source interface the materializer reads from.

A ``StreamSource`` delivers messages at least once to one consumer of a consumer group: ``read`` returns
new messages, ``reclaim`` takes over messages delivered to a consumer that died (or to this one before a
reconnect) and not acknowledged within ``min_idle_ms``, ``ack`` acknowledges. ``history`` re-reads the
retained stream from a point in time, which the materializer uses to rebuild its window state after a
restart. ``lag`` reports how far the group is behind.

Kafka fits behind the same interface (``aiokafka``, optional extra, not built yet): ``read`` is
``getmany`` on a consumer of the group; ``ack`` commits offsets (per partition, the highest contiguous
processed offset + 1, since Kafka acknowledges positions rather than single messages); ``reclaim``
returns nothing, as Kafka reassigns the partitions of a dead consumer on rebalance and redelivers from
the committed offsets; ``history`` seeks every partition with ``offsets_for_times``; ``lag`` is the end
offsets minus the committed offsets, with the age of the first uncommitted record. Message ids become
``"<partition>-<offset>"``, which keeps them unique for the idempotency set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamMessage:
    id: str  # unique within the stream, e.g. a Redis stream id "1700000000000-0"
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Lag:
    messages: int  # delivered to nobody in the group yet
    seconds: float  # age of the oldest such message (0 when none)


class StreamSource(Protocol):
    name: str

    def read(self, count: int, block_ms: int) -> list[StreamMessage]: ...

    def reclaim(self, min_idle_ms: int, count: int) -> list[StreamMessage]: ...

    def ack(self, ids: list[str]) -> None: ...

    def history(self, since_ms: int, page: int) -> Iterator[list[StreamMessage]]: ...

    def lag(self) -> Lag: ...


def id_sequence(message_id: str) -> int:
    """A stream id as one increasing int64 (milliseconds << 20 | sequence), the tie-breaker of ``last``."""
    ms, _, seq = message_id.partition("-")
    return (int(ms) << 20) | min(int(seq or 0), (1 << 20) - 1)


def id_millis(message_id: str) -> int:
    return int(message_id.partition("-")[0])
