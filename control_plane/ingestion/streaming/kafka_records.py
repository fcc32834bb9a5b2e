"""A Kafka record's value as a stream message: how ``KafkaSource`` reads a record, and how a replay of a
Kafka-sourced view's quarantined records judges them the way the reader will (``read_as_published``).
Apart from ``kafka_source`` because it needs no Kafka client: a control plane without the ``kafka``
extra still parses records (and refuses their publish, ``replay_publish.kafka_publisher``).

A record's value is a JSON object of the event's fields. Its fields are the values turned to text, as on
a Redis stream (a ``null`` is a field the event lacks, not the text "null"); the values as JSON, with
their types, are kept beside them where they are not all text (``MessageBatch.values``), and a
quarantined copy of the record holds those: its replay publishes the numbers, bools and nested values as
they came, and the reader judges them again as it did the first time. Kept as their text, a record
quarantined for ``user_id: JSON number 1.0 is a float`` was published as ``{"user_id": "1.0"}`` and
accepted as the entity ``"1.0"``.

A value that is not a JSON object (or one with no field but nulls) becomes a message with the single
field ``_raw``, which validation quarantines like any malformed message. A JSON float or bool given for
a string join key (``text_keys``) is flagged, its message quarantined as a batch refuses the same value
(``column_checks.not_a_text_key``): as text, ``1.0`` named the entity ``"1.0"`` where a batch's 1.0
named ``"1"``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control_plane.ingestion.column_checks import TEXT_KEYS
from control_plane.ingestion.records import JsonObject
from control_plane.ingestion.streaming.source import (
    MessageBatch,
    StreamMessage,
    first_values,
    object_text,
)

RAW_FIELD = "_raw"


@dataclass(frozen=True)
class RecordRead:
    """A record's value as read: its fields; its values as JSON where one is not text (None when all
    are, or the record is no JSON object); a reason for each field it names more than once
    (``source.first_values``) and for each string join key whose JSON value is a float or a bool
    (``_not_text``); and, for one that named a field twice, its quarantined copy with every value
    (``source.object_text``: its replay reads the repeat again)."""

    fields: dict[str, str]
    typed: dict[str, Any] | None
    reasons: list[str]
    copy: str | None = None


def record_fields(value: bytes | None, text_keys: Collection[str] = ()) -> RecordRead:
    """A record's value read as ``RecordRead`` says; ``text_keys``: the string join keys."""
    # surrogateescape, not "replace": a byte that is not UTF-8 must stay recognizable, so that the
    # materializer quarantines its message (``source.utf8_checked``) instead of reading U+FFFD, which
    # made two different join keys one entity. A JSON "\udcff" escape is caught there the same way.
    text = (value or b"").decode("utf-8", errors="surrogateescape")
    try:
        decoded = json.loads(text, object_pairs_hook=JsonObject)
    except ValueError:
        decoded = None
    if not isinstance(decoded, JsonObject):
        return RecordRead({RAW_FIELD: text}, None, [])
    # A JSON null is a missing value, as a field a Redis stream entry lacks: as json.dumps' text "null"
    # a null join key was accepted as the entity named "null" (its events aggregated into it).
    given = [(str(k), v) for k, v in decoded.pairs if v is not None]
    pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in given]
    fields, repeated = first_values(pairs, "record")
    reasons = repeated + _not_text(decoded, text_keys)
    if not fields:  # kept whole (a message needs a field to be a row of its batch)
        return RecordRead({RAW_FIELD: text}, None, reasons)
    copy = object_text(given) if repeated else None
    if all(isinstance(v, str) for _k, v in given):  # the fields say it all
        return RecordRead(fields, None, reasons, copy)
    typed: dict[str, Any] = {}
    for k, v in given:  # each name's first value, as ``fields``
        typed.setdefault(k, v)
    return RecordRead(fields, typed, reasons, copy)


def _not_text(decoded: JsonObject, text_keys: Collection[str]) -> list[str]:
    """A reason for each of ``text_keys`` whose (first) JSON value is a float or a bool: a batch refuses
    both for a string join key (``column_checks.not_a_text_key``), and as text (``"1.0"``, ``"true"``)
    they named entities a batch's same values never name (its 1.0 was ``"1"``). The quarantined copy
    keeps the JSON value, so its replay is refused again for the same reason."""
    reasons = []
    for name in text_keys:
        first = next((value for key, value in decoded.pairs if key == name), None)
        if isinstance(first, bool):
            reasons.append(f"{name}: JSON {json.dumps(first)} is a bool; {TEXT_KEYS}")
        elif isinstance(first, float):
            reasons.append(f"{name}: JSON number {json.dumps(first)} is a float; {TEXT_KEYS}")
    return reasons


def messages(records: Sequence[tuple[str, bytes | None]], text_keys: Collection[str] = ()) -> MessageBatch:
    """Records (id, value) as a batch, each record naming a field twice, or giving a float or a bool for
    one of ``text_keys``, flagged with its reasons, and with its JSON values where not all are text."""
    read: list[StreamMessage] = []
    flagged: dict[int, list[str]] = {}
    values: dict[int, dict[str, Any]] = {}
    copies: dict[int, str] = {}
    for row, (message_id, value) in enumerate(records):
        got = record_fields(value, text_keys)
        if got.reasons:
            flagged[row] = got.reasons
        if got.typed is not None:
            values[row] = got.typed
        if got.copy is not None:
            copies[row] = got.copy
        read.append(StreamMessage(message_id, got.fields))
    return MessageBatch.of(read, flagged, values, copies)


def record_value(payload: Mapping[str, Any]) -> bytes:
    """A record's value as published: the payload as a JSON object (what ``record_fields`` reads), every
    pair of a parsed payload that names a field twice (``records.JsonObject``) kept, so the reader reads
    the repeat as it did the first time."""
    pairs = payload.pairs if isinstance(payload, JsonObject) else list(payload.items())
    return ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}").encode()


def read_as_published(payloads: Sequence[Mapping[str, Any]], text_keys: Collection[str]) -> MessageBatch:
    """Payloads (quarantined records, corrected or not) as the Kafka reader reads them once published
    (``record_value``): a replay judges them by the reader's rules, so it keeps what the reader's rules
    refuse, with the reason the reader gives (``user_id: JSON number 1.0 is a float; ...``, not a
    batch's ``user_id: 1.0 is a double; ...``), and publishes nothing the reader reads otherwise."""
    return messages([(f"replay-{row}", record_value(p)) for row, p in enumerate(payloads)], text_keys)
