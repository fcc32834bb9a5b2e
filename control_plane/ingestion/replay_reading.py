"""How a replay reads its records (quarantined payloads, corrected or not) before it validates them: as
the reader of where they go will. A batch view's, or a Redis-stream view's, as a table of the payloads'
JSON values (``records.records_table``); a Kafka-sourced view's as the Kafka reader reads the records
the replay publishes (``kafka_records.read_as_published``: their values turned to text, a JSON float or
bool for a string join key flagged). Judged as a table of JSON values instead, a Kafka record kept for
``user_id: JSON number 1.0 is a float; ...`` was refused again with a batch's reason (``user_id: 1.0 is a
double; ...``), and one quarantined as text was published as text and accepted.

Either way what a stream's reader refuses before any rule is read again: a field the payload names twice
(its quarantined copy keeps every value, ``source.object_text``; ``records.JsonObject`` reads them) and
text that is not UTF-8 (the copy keeps the bytes as the surrogates they were read as, JSON ``\\udcff``;
``source.checked_fields``), each with the reason its first read gave. Kept as the first value, or as
``\\xff`` text, a record replayed unchanged was judged without them and accepted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2
from control_plane.ingestion.records import JsonObject, as_text, records_table
from control_plane.ingestion.streaming.kafka_records import read_as_published
from control_plane.ingestion.streaming.source import checked_fields, first_values, utf8_checked
from control_plane.ingestion.validation import text_columns


def reads_kafka(view: pb.FeatureView) -> bool:
    """Whether a replay of ``view``'s records publishes them to a Kafka topic."""
    return bool(view.spec.aggregations) and view.spec.source.uri.startswith("kafka://")


def replay_table(
    view: pb.FeatureView, entity: pb.Entity, payloads: Sequence[Mapping[str, Any]]
) -> tuple[pa.Table, dict[int, list[str]]]:
    """The table a replay validates ``payloads`` in (row ``i`` is ``payloads[i]``), and by row the reasons
    found reading them (``validate``'s ``rejected_before``: a Kafka reader's flags)."""
    if not reads_kafka(view):
        where = "entry" if view.spec.aggregations else "record"  # as a Redis stream's reader says it
        read = [_as_read(payload, where) for payload in payloads]
        found = {row: reasons for row, (_fields, reasons) in enumerate(read) if reasons}
        return records_table([fields for fields, _reasons in read], text_columns(view, entity)), found
    string_keys = [key.name for key in entity.join_keys if key.value_type == types_pb2.STRING]
    _batch, table, found = utf8_checked(read_as_published(payloads, string_keys))
    return table, found


def _as_read(payload: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """A payload's fields, each name's first value (a null is a missing value, and no repeat), with its
    text that is not UTF-8 written ``\\xNN``; and the reasons a stream's reader gives for a field named
    twice (``source.first_values``) and for the text (``source.checked_fields``), in that order."""
    pairs = payload.pairs if isinstance(payload, JsonObject) else list(payload.items())
    first: dict[str, Any] = {}
    for name, value in pairs:
        if first.get(name) is None:
            first[name] = value
    given = [(name, as_text(value) or "") for name, value in pairs if value is not None]
    _fields, repeated = first_values(given, where)
    fields, not_utf8 = checked_fields(first)
    return fields, repeated + not_utf8
