"""The stream source interface the materializer reads from.

A ``StreamSource`` delivers messages at least once to one consumer of a consumer group, a read at a
time as a ``MessageBatch``: ``read`` returns new messages, ``reclaim`` takes over messages delivered to
a consumer that died (or to this one before a reconnect) and not acknowledged within ``min_idle_ms``,
``ack`` acknowledges. ``history`` re-reads the retained stream from a point in stream time, and
``resume_ms`` says where in stream time the group's unprocessed messages begin: the materializer uses both
to rebuild its window state after a restart. ``lag`` reports how far the group is behind.

Stream time is the time a message carries as its position: a Redis stream id's milliseconds, a Kafka
record's timestamp.

Two sources: Redis Streams (``redis_source``, built in) and Kafka (``kafka_source``, the ``kafka``
extra), whose module docstring says how the interface maps onto consumer groups and offsets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from control_plane.ingestion.shown_values import SHOWN_CHARACTERS


@dataclass(frozen=True, slots=True)
class StreamMessage:
    id: str  # unique within the stream, e.g. a Redis stream id "1700000000000-0"
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """The messages of one read, column by column: message ``i`` is ``ids[i]`` with, per field name,
    ``columns[name][i]`` (None where it lacks that field). Columnar because the materializer works on
    columns, and building a dict per message cost more than everything else it does per event."""

    ids: list[str]
    columns: dict[str, list[str | None]]
    # Why a message is malformed beyond what its fields show, by row (a field its entry named twice):
    # validation rejects those rows with these reasons first (``utf8_checked`` passes them on).
    flagged: dict[int, list[str]] = field(default_factory=dict)
    # The JSON values a message's fields were read from, by row, where not all are text (a Kafka
    # record's numbers, bools, nested values; ``kafka_records``): what its quarantined copy keeps, so a
    # replay publishes them with their types and the reader judges them as it did.
    values: dict[int, dict[str, Any]] = field(default_factory=dict)
    # The quarantined copy, by row, of a message its fields cannot show as it came: one that named a
    # field twice (every value, ``object_text``), or one with bytes that are not UTF-8 (kept as the lone
    # surrogates they were read as, which its JSON writes ``\udcff``; ``utf8_checked``). A replay of the
    # copy reads the repeat and the bad bytes again, so replayed unchanged it is refused again: kept as
    # the first value, or as ``\xff`` text, it was accepted.
    copies: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        messages: Iterable[StreamMessage],
        flagged: dict[int, list[str]] | None = None,
        values: dict[int, dict[str, Any]] | None = None,
        copies: dict[int, str] | None = None,
    ) -> MessageBatch:
        listed = list(messages)
        names: dict[str, None] = {}
        for message in listed:
            names.update(dict.fromkeys(message.fields))
        columns = {name: [m.fields.get(name) for m in listed] for name in names}
        return cls(
            [m.id for m in listed], columns, dict(flagged or {}), dict(values or {}), dict(copies or {})
        )

    def __len__(self) -> int:
        return len(self.ids)

    def fields(self, row: int) -> dict[str, str]:
        """Message ``row``'s fields as it carried them."""
        return {name: value for name, values in self.columns.items() if (value := values[row]) is not None}

    def payload(self, row: int) -> str:
        """Message ``row`` as its quarantined copy keeps it: ``copies``' where it has one, else a JSON
        object of its values as they came (``values``), else of its fields."""
        copy = self.copies.get(row)
        if copy is not None:
            return copy
        return json.dumps(self.values.get(row, self.fields(row)), sort_keys=True)

    def messages(self) -> list[StreamMessage]:
        return [StreamMessage(message_id, self.fields(i)) for i, message_id in enumerate(self.ids)]

    def take(self, rows: Sequence[int]) -> MessageBatch:
        columns = {name: [values[i] for i in rows] for name, values in self.columns.items()}
        # A field only the dropped messages carried is no field of the result.
        kept = {name: values for name, values in columns.items() if any(v is not None for v in values)}
        flagged = {new: self.flagged[old] for new, old in enumerate(rows) if old in self.flagged}
        values = {new: self.values[old] for new, old in enumerate(rows) if old in self.values}
        copies = {new: self.copies[old] for new, old in enumerate(rows) if old in self.copies}
        return MessageBatch([self.ids[i] for i in rows], kept, flagged, values, copies)

    def table(self) -> pa.Table:
        """String columns, one row per message. Redis refuses a stream entry without fields, so a
        non-empty batch has at least one column."""
        return pa.table({name: pa.array(values, pa.string()) for name, values in self.columns.items()})


def first_values(pairs: Iterable[tuple[str, str]], where: str) -> tuple[dict[str, str], list[str]]:
    """A message's fields, each name's first value, and a reason for each name given more than once.
    A Redis stream entry (XADD) and a JSON object may name a field twice; which value the producer meant
    is undecidable (a batch refuses a table with a column named twice), and a dict kept the last one
    silently: ``user_id alice ... user_id bob`` was aggregated into bob. ``where``: "entry", "record"."""
    parsed: dict[str, str] = {}
    given: dict[str, list[str]] = {}
    for name, value in pairs:
        parsed.setdefault(name, value)
        given.setdefault(name, []).append(value)
    repeated = [
        f"{name}: field named {len(values)} times in the {where} ({', '.join(map(_shown, values))})"
        for name, values in given.items()
        if len(values) > 1
    ]
    return parsed, repeated


def object_text(pairs: Iterable[tuple[str, Any]]) -> str:
    """A message's (name, value) pairs as the text of a JSON object, every pair kept (a name given twice
    is written twice, its values in the order given), names sorted as ``MessageBatch.payload`` sorts
    them: the quarantined copy of a message that named a field twice, which a replay reads back as the
    repeat it was (``records.JsonObject``). A dict kept one value, and its replay was judged without the
    repeat and accepted."""
    ordered = sorted(pairs, key=lambda pair: pair[0])  # stable: a repeat's values stay in their order
    return "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in ordered) + "}"


def _shown(value: str) -> str:
    """A value for a reason: its start and length when long (the quarantined copy keeps each value whole)."""
    if len(value) > SHOWN_CHARACTERS:
        return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value)} characters)"
    return repr(value)


def utf8_checked(batch: MessageBatch) -> tuple[MessageBatch, pa.Table, dict[int, list[str]]]:
    """``batch`` as a table, with the reasons of the messages a field (name or value) of which is not
    valid UTF-8, by row. Sources decode bytes with ``surrogateescape``, which keeps each invalid byte as
    a lone surrogate that no valid text holds: decoding them as U+FFFD instead made ``alice\\xff`` and
    ``alice\\xfe`` the same join key, two users merged into one entity. Such a message is returned with
    the invalid bytes written as ``\\xNN`` in its fields (text Arrow takes) and is rejected with its
    reason (``user_id: b'alice\\xff' is not valid UTF-8``); its quarantined copy (``copies``) keeps the
    bytes as the surrogates they were read as (JSON ``\\udcff``), so a replay of it unchanged finds them
    again (``checked_fields``): the ``\\xff`` text was valid, and such a replay was accepted. Valid
    batches pay nothing: Arrow refuses a surrogate while building the table anyway."""
    try:
        return batch, batch.table(), {row: list(reasons) for row, reasons in batch.flagged.items()}
    except UnicodeEncodeError:
        pass
    problems: dict[int, list[str]] = {row: list(reasons) for row, reasons in batch.flagged.items()}
    messages = []
    copies = dict(batch.copies)
    for row, message in enumerate(batch.messages()):
        fields, not_utf8 = checked_fields(message.fields)
        if not_utf8:
            problems.setdefault(row, []).extend(not_utf8)
            copies[row] = batch.payload(row)  # the bytes as read, not the escaped text
        messages.append(StreamMessage(message.id, fields))
    checked = MessageBatch.of(messages, batch.flagged, batch.values, copies)
    return checked, checked.table(), problems


def checked_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``fields`` with each name and text value that is not valid UTF-8 written with its bad bytes as
    ``\\xNN`` (text Arrow takes), and a reason for each (``user_id: b'alice\\xff' is not valid UTF-8``;
    ``field name b'note\\xff' is not valid UTF-8``). For a stream's messages and a replay's payloads
    alike, so a record replayed unchanged is refused with its first read's reasons."""
    checked: dict[str, Any] = {}
    reasons: list[str] = []
    for name, value in fields.items():
        if not _is_utf8(name):
            reasons.append(f"field name {_bytes(name)!r} is not valid UTF-8")
            name = _escaped(name)
        if isinstance(value, str) and not _is_utf8(value):
            reasons.append(f"{name}: {_bytes(value)!r} is not valid UTF-8")
            value = _escaped(value)
        checked[name] = value
    return checked, reasons


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bytes(text: str) -> bytes:
    """The bytes ``text`` was decoded from, for a reason (``b'alice\\xff'``: exact, and a NUL or other
    control byte shows escaped). A surrogate that stands for no byte (a JSON ``\\ud800`` escape) shows
    as the three bytes UTF-8 forbids for it."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _escaped(text: str) -> str:
    """``text`` with each byte that was not UTF-8 as ``\\xNN`` (a surrogate that stands for no byte, e.g.
    a JSON ``\\ud800`` escape, as ``\\uNNNN``)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


#: The greatest id Redis allows in a stream. Once a stream's last id is this one (an explicit id, or
#: XSETID), Redis refuses every XADD to it, ``*`` included ("ERR The stream has exhausted the last possible
#: ID"), for good; and an exclusive range after it (``XRANGE key (id``) is an error, not an empty reply.
GREATEST_REDIS_ID = f"{2**64 - 1}-{2**64 - 1}"


@dataclass(frozen=True, slots=True)
class IdsAhead:
    """A Redis stream whose last id is more than the skew allowed ahead of the materializer's clock: Redis
    gives every ``*`` entry an id after it (the same milliseconds, the next sequence: the stream still
    takes entries), so every entry added from now on is refused as ahead until the clock reaches it; at
    the greatest id (``exhausted``) Redis refuses the entries themselves, for good. Reported loudly
    (``MaterializerMetrics.observe_lag``): otherwise the view's only sign is that everything it receives
    goes to the quarantine, or that nothing comes."""

    stream: str
    last_id: str  # the stream's last generated id (XINFO STREAM)
    ahead_ms: int  # how far its milliseconds are past the clock
    clock_ms: int  # the materializer's clock when asked
    skew_s: int  # how far ahead an id may be (``--max-future-skew-s``)

    @property
    def exhausted(self) -> bool:
        """Whether Redis refuses every XADD to the stream (its last id is ``GREATEST_REDIS_ID``)."""
        return self.last_id == GREATEST_REDIS_ID


@dataclass(frozen=True, slots=True)
class Lag:
    messages: int  # delivered to nobody in the group yet
    seconds: float  # age of the oldest such message (0 when none)
    ids_ahead: IdsAhead | None = None  # a Redis stream whose ids run ahead of the clock (see IdsAhead)


#: The score each id has in the applied / rejected id sets (None: in neither), read from Redis.
RecordedScores = Callable[[Sequence[str]], Sequence[float | None]]


class StreamSource(Protocol):
    name: str
    # True when the stream is a Redis stream whose XACK the materializer's commit transaction carries
    # (acknowledged atomically with the state change); otherwise the materializer calls ``ack`` once a
    # batch is committed, and a crash in between redelivers messages the idempotency set then skips.
    acks_in_commit: bool
    # Members of the applied / rejected id sets scored below this stay whatever a trim says (None: no
    # such floor): Kafka ids were once scored by their partition, which says nothing of their time.
    trim_floor_ms: int | None
    # How far ahead of the materializer's clock a stream time, and ahead of its stream time an event time,
    # may be (``--max-future-skew-s``; ``lateness.py``).
    max_future_skew_s: int

    def read(self, count: int, block_ms: int) -> MessageBatch: ...

    def reclaim(self, min_idle_ms: int, count: int) -> MessageBatch: ...

    def ack(self, ids: list[str]) -> None: ...

    def history(self, since_ms: int, page: int) -> Iterator[MessageBatch]: ...

    def resume_ms(self) -> int:
        """The stream time from which the group's messages still to process (pending, undelivered, and
        any appended later) lie: the oldest pending message's, else the last delivered one's; 0 when
        it cannot tell (re-read everything)."""
        ...

    def recorded_scores_from(self, scores: RecordedScores) -> None:
        """Names how to read the scores the applied / rejected id sets hold (the materializer's): Kafka
        bounds its resume point by the score of the record there (``KafkaSource._resume_bounds``); a
        Redis stream, whose ids are their own scores, reads none."""
        ...

    def keys_as_text(self, names: Collection[str]) -> None:
        """Names the fields a message must give as text or an integer (the entity's string join keys): a
        source whose messages carry typed values (Kafka's JSON) flags a float or a bool there, which a
        batch refuses too (``column_checks.not_a_text_key``), since the text made of it would name an
        entity the same value names otherwise in a batch. A Redis stream's fields are all text."""
        ...

    def lag(self) -> Lag: ...

    def stream_times_ms(self, ids: Sequence[str]) -> list[int]:
        """The stream time of each id of a batch read and not yet acknowledged: the score of its member
        in the applied / rejected id sets, by which those sets are trimmed."""
        ...

    def arrival_times_ms(self, ids: Sequence[str]) -> list[int]:
        """The stream time each message of a batch read (and not yet acknowledged) is judged late against:
        a Redis stream id's milliseconds; on Kafka its partition's stream time up to it, leaving out the
        records ahead of the clock (``stream_time.py``)."""
        ...

    def ahead_of_clock(self, ids: Sequence[str]) -> dict[int, str]:
        """The ids (by index) of a batch read whose stream time was more than the source's
        ``max_future_skew_s`` ahead of the materializer's clock when read, each with the reason: the
        materializer quarantines their messages (``lateness.ahead_of_clock``)."""
        ...

    def held_ids(self) -> list[str]:
        """Acknowledged ids that could still be delivered again (a Kafka record acknowledged after a
        gap: its partition's committed offset stays before the gap). A trim keeps their members."""
        ...

    def order(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Each id's place in the stream as one int64 that grows with it: the tie-breaker of ``last``
        between events of one entity with the same event time, so that a redelivered older message
        applied after a newer one does not win. Exact for the ids ``unorderable`` does not name."""
        ...

    def unorderable(self, ids: Sequence[str]) -> dict[int, str]:
        """The ids (by index) ``order`` cannot place exactly, each with the reason: the materializer
        quarantines their messages rather than order them wrongly."""
        ...

    def close(self) -> None:
        """Leaves the consumer group and releases the connections; called once, on every way out of the
        process (``__main__``). Never raises for a source that cannot be reached: what this consumer did
        not acknowledge is delivered again to the group either way."""
        ...


#: The bits of a stream id's sequence in ``id_sequence``; its milliseconds take the 43 above them.
SEQUENCE_BITS = 20
#: The first milliseconds and sequence ``id_sequence`` cannot hold: from 2**43 ms (year 2248) the packed
#: number passed int64 and wrapped around, and from 2**20 the sequences were capped (tied). Redis allows
#: both parts up to 2**64 - 1, and a producer may set them; such ids are refused (``redis_id_problems``).
MILLIS_LIMIT, SEQUENCE_LIMIT = 2 ** (63 - SEQUENCE_BITS), 2**SEQUENCE_BITS


def redis_id_problems(ids: Sequence[str]) -> dict[int, str]:
    """The ids (by index) whose milliseconds or sequence ``id_sequence`` cannot hold, each with the reason
    it is refused: packed anyway, it would order wrongly among the stream's entries, and the tie-break of
    ``last`` would keep an older value. Parsed as unsigned 64-bit numbers, Redis's range for both."""
    n = len(ids)
    parts = "-".join(ids).split("-")
    if len(parts) != 2 * n or "" in parts:  # an id without exactly one "-": left to the parse below
        parts = [part for i in ids for part in i.partition("-")[::2]]
    numbers = pa.array(parts, pa.string()).cast(pa.uint64()).to_numpy().reshape(n, 2)
    bad = np.flatnonzero((numbers[:, 0] >= MILLIS_LIMIT) | (numbers[:, 1] >= SEQUENCE_LIMIT)).tolist()
    return {row: _id_problem(ids[row], int(numbers[row, 0]), int(numbers[row, 1])) for row in bad}


def _id_problem(message_id: str, millis: int, sequence: int) -> str:
    if millis >= MILLIS_LIMIT:
        part = f"milliseconds {millis} are past {MILLIS_LIMIT - 1} (year 2248)"
    else:
        part = f"sequence {sequence} is past {SEQUENCE_LIMIT - 1}"
    return (
        f"stream id {message_id}: {part}, so the event cannot be ordered exactly among the stream's entries"
        " (the tie-break of `last` between events of one entity and event time); not applied. Such ids are"
        " set by a producer (XADD with an explicit id, or `*` after one): let Redis assign ids"
    )


def id_sequence(message_id: str) -> int:
    """A stream id as one increasing int64 (milliseconds << 20 | sequence), the tie-breaker of ``last``;
    exact only for ids ``redis_id_problems`` does not refuse."""
    ms, _, seq = message_id.partition("-")
    return (int(ms) << 20) | min(int(seq or 0), (1 << 20) - 1)


def id_millis(message_id: str) -> int:
    return int(message_id.partition("-")[0])


def id_parts(ids: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``id_millis`` and ``id_sequence`` of many ids at once (parsed by Arrow, not a Python loop)."""
    n = len(ids)
    parts = "-".join(ids).split("-")
    if len(parts) != 2 * n or "" in parts:  # an id without exactly one "-": parse one by one
        millis = np.fromiter((id_millis(i) for i in ids), dtype=np.int64, count=n)
        return millis, np.fromiter((id_sequence(i) for i in ids), dtype=np.int64, count=n)
    numbers = pa.array(parts, pa.string()).cast(pa.int64()).to_numpy().reshape(n, 2)
    millis = np.ascontiguousarray(numbers[:, 0])
    sequence = (millis << 20) | np.minimum(numbers[:, 1], (1 << 20) - 1)
    return millis, sequence
