"""Kafka behind ``StreamSource`` (optional extra ``kafka``: confluent-kafka, the librdkafka client; the
source interface is synchronous, as librdkafka's consumer is).

How the interface maps:

* Each record's value is a JSON object of the event's fields, read by ``kafka_records`` (values turned
  to text, as on a Redis stream, and kept as JSON beside them for the quarantine, which a replay
  publishes as they came; a ``null`` is a field the event lacks; a value that is no JSON object is a
  message with the single field ``_raw``, which validation quarantines: it never stops the materializer
  and is never dropped; a JSON float or bool for a string join key, ``keys_as_text``, is flagged and its
  message quarantined).
* Message ids are ``"<partition>-<offset>"``: unique within the topic, so the materializer's
  idempotency set works unchanged, and increasing within a partition, the only order Kafka has.
* ``ack`` commits, per partition, the first offset not yet acknowledged (Kafka acknowledges positions,
  not messages): an acknowledged message after a gap is delivered again after a restart or a rebalance,
  and the idempotency set turns it into a duplicate. At least once, never lost.
* ``stream_times_ms`` gives, for each record read, its partition's stream time there: the greatest record
  time up to it, each record's taken at most at the clock plus the skew when it was read (the score of its
  id in the applied / rejected sets, which are trimmed by them; monotone along the partition, so a record
  at or after the committed offset, which a restart delivers again, always scores at or above the resume
  point, see ``resume_ms``); ``held_ids`` the records acknowledged behind a gap.
  Lateness is judged against another time (``arrival_times_ms``): the same greatest record time, less the
  records stamped more than ``max_future_skew_s`` ahead of the clock when read, which ``ahead_of_clock``
  names for the materializer to quarantine (``stream_time.py``): one record stamped years ahead made
  every later record of its partition late.
* ``reclaim`` returns nothing: Kafka reassigns the partitions of a dead consumer and redelivers from
  their committed offsets by itself.
* ``history`` reads every partition from the first record at or after the time (``offsets_for_times``;
  from the start of the retained log when the broker gives no answer, filtering by record time) up to
  the end offsets taken when it starts, on a consumer of its own outside the group.
* ``lag`` is the end offsets minus the group's committed offsets of the assigned partitions; its age is
  that of the oldest delivered, unacknowledged record. It asks the broker on a consumer of its own that
  never joins the group: on the group consumer's connections each request would wait behind the fetches
  in flight (up to ``fetch.wait.max.ms`` each), which stalled the materializer's loop for 1.5–2.5 s of
  every second it asked.
* ``resume_ms`` is the smallest, over the partitions, record time at the group's committed offset (the
  first record still to process; the retained log's first when nothing is committed, its last when the
  group is caught up), lowered to that record's score wherever it has one (``_resume_bounds``). Record
  times are the stream time: the rebuild after a restart reads back from them, so a record timestamped
  earlier than records before it in its partition counts as late.

``kafka_publish`` writes records the other way, in the form ``read`` decodes (the quarantine's replay puts
corrected events back on the topic with it); ``kafka_ids`` orders the ids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from control_plane.ingestion.streaming import kafka_records
from control_plane.ingestion.streaming.kafka_ids import (
    LEGACY_SCORES_BELOW,
    id_position,
    kafka_id_problems,
    kafka_order,
)
from control_plane.ingestion.streaming.kafka_publish import TIMEOUT_S as _TIMEOUT_S
from control_plane.ingestion.streaming.lateness import DEFAULT_MAX_FUTURE_SKEW_S, ahead_of_clock
from control_plane.ingestion.streaming.source import Lag, MessageBatch, RecordedScores
from control_plane.ingestion.streaming.stream_time import PartitionTimes, wall_clock_ms

_log = logging.getLogger("aether.ingestion.kafka")


def _position(record: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed record (both always set on one)."""
    partition, offset = record.partition(), record.offset()
    if partition is None or offset is None:
        raise ValueError("a Kafka record without a partition or offset")
    return partition, offset


def _message_id(record: Message) -> str:
    partition, offset = _position(record)
    return f"{partition}-{offset}"


class KafkaSource:
    acks_in_commit = False  # offsets are committed to Kafka after the batch's Redis commit
    # Until this version the applied / rejected sets scored a Kafka id by its partition (a number far
    # below any record time in ms): those members stay, as nothing tells how old they are.
    trim_floor_ms: int | None = LEGACY_SCORES_BELOW

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        consumer: str,
        config: Mapping[str, Any] | None = None,
        max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """``max_future_skew_s``: how far ahead of ``clock_ms``, when read, a record's time may be
        (``stream_time.py``)."""
        self.name = topic
        self.max_future_skew_s = max_future_skew_s
        self._clock_ms = clock_ms
        self._bootstrap = bootstrap
        self._extra = dict(config or {})
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": consumer,
                "enable.auto.commit": False,  # offsets move only through ack
                "auto.offset.reset": "earliest",  # a new group starts at the retained beginning
                **self._extra,
            }
        )
        # Per partition: offset → (delivered, acknowledged) of the records read and not yet committed.
        self._open: dict[int, dict[int, bool]] = {}
        # Of each open record: its partition's stream time there (ms), the greatest record time up to it
        # (see stream_times_ms); and how it was judged when read: its arrival time (lateness is judged
        # against it), and its own time and the limit it passed when it was ahead (``stream_time.py``).
        self._record_ms: dict[tuple[int, int], int] = {}
        self._judged: dict[tuple[int, int], tuple[int, tuple[int, int] | None]] = {}
        self._partitions = PartitionTimes()
        # The limit records are judged ahead by, and counted at most at in their scores: the clock plus the
        # skew, never lowered (a clock stepped back would let a record read later score below the bound
        # ``resume_ms`` gave before it was read).
        self._limit_ms = 0
        self._recorded_scores: RecordedScores | None = None  # see recorded_scores_from
        self._consumer.subscribe([topic], on_revoke=self._revoked, on_lost=self._revoked)
        self._group = group
        self._client_id = consumer
        self._lag_probe: Consumer | None = None  # dialed at the first lag()
        self._text_keys: tuple[str, ...] = ()  # see keys_as_text

    def keys_as_text(self, names: Collection[str]) -> None:
        """A record giving a JSON float or bool for one of ``names`` is flagged (``kafka_records``)."""
        self._text_keys = tuple(names)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Whatever was not committed goes to the partition's next owner, from the committed offset.
        for partition in partitions:
            for offset in self._open.pop(partition.partition, {}):
                self._record_ms.pop((partition.partition, offset), None)
                self._judged.pop((partition.partition, offset), None)

    def read(self, count: int, block_ms: int) -> MessageBatch:
        messages: list[tuple[str, bytes | None]] = []
        records = self._consumer.consume(num_messages=count, timeout=block_ms / 1000)
        limit_ms = self._limit()  # the clock when read, plus the skew
        for record in records:
            error = record.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _log.warning("Kafka consumer error on %s: %s", self.name, error)
                continue
            partition, offset = _position(record)
            self._open.setdefault(partition, {})[offset] = False
            record_ms = record.timestamp()[1]
            times = self._partitions.observe(partition, record_ms, limit_ms)
            self._record_ms[(partition, offset)] = times.score_ms
            self._judged[(partition, offset)] = (
                times.arrival_ms,
                (record_ms, limit_ms) if times.ahead else None,
            )
            messages.append((_message_id(record), record.value()))
        return kafka_records.messages(messages, self._text_keys)

    def _limit(self) -> int:
        """The clock now plus the skew, or the greatest such limit taken before if the clock went back."""
        self._limit_ms = max(self._limit_ms, self._clock_ms() + self.max_future_skew_s * 1000)
        return self._limit_ms

    def recorded_scores_from(self, scores: RecordedScores) -> None:
        """Where ``resume_ms`` finds the score a run stored for the record at a committed offset."""
        self._recorded_scores = scores

    def reclaim(self, min_idle_ms: int, count: int) -> MessageBatch:
        return MessageBatch([], {})  # Kafka redelivers a dead consumer's partitions itself (module doc)

    def ack(self, ids: list[str]) -> None:
        touched: set[int] = set()
        for message_id in ids:
            partition_text, _, offset_text = message_id.partition("-")
            partition, offset = int(partition_text), int(offset_text)
            records = self._open.get(partition)
            if records is not None and offset in records:
                records[offset] = True
                touched.add(partition)
        commits: list[tuple[int, list[int]]] = []
        for partition in touched:
            records = self._open[partition]
            done = []
            for offset in sorted(records):
                if not records[offset]:
                    break
                done.append(offset)
            if done:
                commits.append((partition, done))
        if not commits:
            return
        self._consumer.commit(
            offsets=[TopicPartition(self.name, p, done[-1] + 1) for p, done in commits], asynchronous=False
        )
        # Forgotten only once Kafka took the commit: a failed commit leaves them open (and held from
        # trims), as they will be delivered again.
        for partition, done in commits:
            records = self._open.get(partition, {})  # none when a rebalance took the partition meanwhile
            for offset in done:
                records.pop(offset, None)
                self._record_ms.pop((partition, offset), None)
                self._judged.pop((partition, offset), None)

    def _reader(self) -> Consumer:
        """A consumer outside the group, for reading at chosen offsets."""
        return Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"{self.name}-history",  # never subscribes or commits: assign() only
                "enable.auto.commit": False,
                **self._extra,
            }
        )

    def history(self, since_ms: int, page: int) -> Iterator[MessageBatch]:
        reader = self._reader()
        try:
            topic = reader.list_topics(self.name, timeout=_TIMEOUT_S).topics.get(self.name)
            partitions = [] if topic is None or topic.error is not None else list(topic.partitions)
            if not partitions:  # no such topic (yet): no history
                return
            bounds = {p: self._watermarks(reader, p) for p in partitions}
            found = reader.offsets_for_times(
                [TopicPartition(self.name, p, since_ms) for p in partitions], timeout=_TIMEOUT_S
            )
            # No answer (-1): from the start of the retained log, filtered by record time below.
            starts = {tp.partition: tp.offset if tp.offset >= 0 else bounds[tp.partition][0] for tp in found}
            pending = {p for p, start in starts.items() if start < bounds[p][1]}
            reader.assign([TopicPartition(self.name, p, starts[p]) for p in pending])
            ends = {p: bounds[p][1] for p in partitions}
            batch: list[tuple[str, bytes | None]] = []
            idle_since = time.monotonic()
            while pending:
                records = reader.consume(num_messages=page, timeout=1.0)
                if records:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > _TIMEOUT_S:
                    _log.warning("history of %s: partitions %s stopped answering", self.name, sorted(pending))
                    break
                for record in records:
                    if record.error() is not None:
                        continue
                    partition, offset = _position(record)
                    if offset < ends[partition] and record.timestamp()[1] >= since_ms:
                        batch.append((_message_id(record), record.value()))
                    if offset + 1 >= ends[partition]:
                        pending.discard(partition)
                if len(batch) >= page or (batch and not pending):
                    yield kafka_records.messages(batch, self._text_keys)
                    batch = []
            if batch:
                yield kafka_records.messages(batch, self._text_keys)
        finally:
            reader.close()

    def resume_ms(self) -> int:
        """The record time the group resumes from (module doc); 0 when the topic is empty or a partition
        does not answer in time (the rebuild then reads everything retained)."""
        topic = self._consumer.list_topics(self.name, timeout=_TIMEOUT_S).topics.get(self.name)
        if topic is None or topic.error is not None or not topic.partitions:
            return 0
        partitions = [TopicPartition(self.name, p) for p in topic.partitions]
        positions: dict[int, int] = {}
        for tp in self._consumer.committed(partitions, timeout=_TIMEOUT_S):
            low, high = self._watermarks(self._consumer, tp.partition)
            if high > low:  # an empty partition holds nothing to resume from
                positions[tp.partition] = min(max(tp.offset if tp.offset >= 0 else low, low), high - 1)
        times = self._record_times(positions)
        if not positions or len(times) != len(positions):
            return 0
        return min(self._resume_bounds(positions, times).values())

    def _resume_bounds(self, positions: Mapping[int, int], times: Mapping[int, int]) -> dict[int, int]:
        """Per partition, the record time at its resume position, lowered to every score that record has
        or will have: the one this consumer gave it when read, the one stored in the applied / rejected
        sets (a run that processed it and died before Kafka's commit), and at most the limit a read now
        would count it at. A trim point lies below this bound, and every record at or after the position
        scores at least the record there (``stream_time.py``, scores are monotone along a partition):
        Kafka may deliver them again, and none is trimmed. The record time alone was not a bound once a
        record ahead of the clock counts at its limit: stamped ten years ahead and processed by a run
        that died before Kafka's commit, its time made the bound the clock, and the records after it,
        which scored what the clock was when that run read them, fell below a trim an hour later and
        counted twice. One assumption remains, across runs: when the record there was stored by one run
        and read again (skipped) by a later one that died the same way, the later run's records after it
        score at least its limit then, which is at least the stored score unless its clock was set back
        from the earlier run's by more than the reach (longest window plus lateness plus skew,
        ``trim_reach``)."""
        limit = self._limit()
        ids = [f"{partition}-{offset}" for partition, offset in positions.items()]
        stored = self._recorded_scores(ids) if self._recorded_scores is not None else [None] * len(ids)
        bounds: dict[int, int] = {}
        for (partition, offset), score in zip(positions.items(), stored, strict=True):
            known = [times[partition], limit]
            if (partition, offset) in self._record_ms:
                known.append(self._record_ms[(partition, offset)])
            if score is not None and score >= LEGACY_SCORES_BELOW:  # a partition number says nothing
                known.append(int(score))
            bounds[partition] = min(known)
        return bounds

    def _record_times(self, positions: Mapping[int, int]) -> dict[int, int]:
        """The record time (ms) at each partition's offset, of the partitions that answer in time."""
        if not positions:
            return {}
        reader = self._reader()
        try:
            reader.assign([TopicPartition(self.name, p, offset) for p, offset in positions.items()])
            times: dict[int, int] = {}
            deadline = time.monotonic() + _TIMEOUT_S
            while len(times) < len(positions) and time.monotonic() < deadline:
                for record in reader.consume(num_messages=len(positions), timeout=1.0):
                    if record.error() is None:
                        partition, _offset = _position(record)
                        times.setdefault(partition, record.timestamp()[1])
            return times
        finally:
            reader.close()

    def _watermarks(self, consumer: Consumer, partition: int) -> tuple[int, int]:
        """(first, next) offset of a partition's retained log, asked of the broker."""
        marks = consumer.get_watermark_offsets(
            TopicPartition(self.name, partition), timeout=_TIMEOUT_S, cached=False
        )
        if marks is None:
            raise RuntimeError(f"Kafka gave no offsets for {self.name}[{partition}]")
        return int(marks[0]), int(marks[1])

    def order(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        return kafka_order(ids)

    def unorderable(self, ids: Sequence[str]) -> dict[int, str]:
        return kafka_id_problems(ids)

    def lag(self) -> Lag:
        """The group's lag over every partition of the topic (assigned here or not, as the Redis source
        reports its group's), with the age of this consumer's oldest unacknowledged record."""
        probe = self._probe()
        topic = probe.list_topics(self.name, timeout=_TIMEOUT_S).topics.get(self.name)
        if topic is None or topic.error is not None or not topic.partitions:
            return Lag(0, 0.0)  # no such topic (yet): nothing to be behind on
        partitions = [TopicPartition(self.name, p) for p in topic.partitions]
        behind = 0
        for tp in probe.committed(partitions, timeout=_TIMEOUT_S):
            low, high = self._watermarks(probe, tp.partition)
            behind += max(0, high - (tp.offset if tp.offset >= 0 else low))
        oldest = min(self._record_ms.values(), default=None)
        return Lag(behind, 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000))

    def stream_times_ms(self, ids: Sequence[str]) -> list[int]:
        """Each open record's partition stream time: the greatest record time of its partition up to it
        (read since this consumer started, which was at or before the committed offset), each taken at
        most at the limit it was read under (``stream_time.py``). Not its own record time: producers
        stamp records (CreateTime), and one stamped earlier than records before it could score below the
        trim point while still at or after its partition's committed offset, where a restart delivers it
        again; trimmed, it was applied twice. The partition's stream time there is at least the score of
        the record at the committed offset, so at least the resume point, which no trim reaches
        (``_resume_bounds``). The wall clock for an id this consumer no longer holds (after a rebalance
        took its partition): a later score, trimmed later, never early."""
        now_ms = int(time.time() * 1000)
        times = []
        for message_id in ids:
            partition, _, offset = message_id.partition("-")
            times.append(self._record_ms.get((int(partition), int(offset)), now_ms))
        return times

    def arrival_times_ms(self, ids: Sequence[str]) -> list[int]:
        """Each open record's arrival time when read (``stream_time.py``): its partition's stream time up to
        it, leaving out the records that were ahead of the clock. The wall clock for an id this consumer no
        longer holds, as ``stream_times_ms``."""
        now_ms = self._clock_ms()
        return [self._judged.get(id_position(message_id), (now_ms, None))[0] for message_id in ids]

    def ahead_of_clock(self, ids: Sequence[str]) -> dict[int, str]:
        """The records that were ahead of the clock when read (judged then, not now: their partition's
        stream time after them was set by that judgement)."""
        rows, times, limits = [], [], []
        for row, message_id in enumerate(ids):
            judged = self._judged.get(id_position(message_id))
            if judged is not None and judged[1] is not None:
                rows.append(row)
                times.append(judged[1][0])
                limits.append(judged[1][1])
        found = ahead_of_clock(times, limits, self.max_future_skew_s, "record time")
        return {rows[k]: reason for k, reason in found.items()}

    def held_ids(self) -> list[str]:
        return [
            f"{partition}-{offset}"
            for partition, records in self._open.items()
            for offset, acknowledged in records.items()
            if acknowledged
        ]

    def _probe(self) -> Consumer:
        """The consumer ``lag`` asks on (module doc): the group's id, to read its committed offsets, but
        never subscribed, so it is no member of the group."""
        if self._lag_probe is None:
            extra = {k: v for k, v in self._extra.items() if k != "group.instance.id"}
            self._lag_probe = Consumer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "group.id": self._group,
                    "client.id": f"{self._client_id}-lag",
                    "enable.auto.commit": False,
                    **extra,
                }
            )
        return self._lag_probe

    def close(self) -> None:
        """Leaves the group at once (the broker reassigns this consumer's partitions now, not after its
        session timeout) and closes the lag probe. A broker that cannot be reached is logged, not raised:
        the group then notices the consumer gone at its session timeout, as after a crash."""
        try:
            self._consumer.close()
        except KafkaException as exc:
            _log.warning("Kafka consumer of %s did not leave its group cleanly: %s", self.name, exc)
        if self._lag_probe is not None:
            try:
                self._lag_probe.close()
            except KafkaException as exc:
                _log.warning("Kafka lag probe of %s did not close cleanly: %s", self.name, exc)
