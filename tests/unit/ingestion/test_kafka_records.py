"""A Kafka record's value as a stream message: its fields as text, and its JSON values with their types
kept beside them for the quarantine (``kafka_records``, ``MessageBatch.values``)."""

from __future__ import annotations

import json

from control_plane.ingestion.records import parse_payload
from control_plane.ingestion.streaming.kafka_records import RAW_FIELD, messages, read_as_published
from control_plane.ingestion.streaming.source import utf8_checked

WHY = "a string join key takes text or an integer"


def test_a_records_json_values_are_kept_with_their_types_beside_its_text_fields() -> None:
    batch = messages([("0-1", b'{"user_id": 1.0, "amount": 2, "tags": [true], "note": null}')], ["user_id"])
    assert batch.fields(0) == {"user_id": "1.0", "amount": "2", "tags": "[true]"}
    assert batch.values == {0: {"user_id": 1.0, "amount": 2, "tags": [True]}}  # a null is no field
    assert json.loads(batch.payload(0)) == {"user_id": 1.0, "amount": 2, "tags": [True]}
    assert batch.flagged == {0: [f"user_id: JSON number 1.0 is a float; {WHY}"]}


def test_a_record_of_text_only_and_one_that_is_no_object_keep_their_fields() -> None:
    batch = messages([("0-1", b'{"user_id": "a", "amount": "2"}'), ("0-2", b"[1, 2]")], ["user_id"])
    assert batch.values == {}
    assert [json.loads(batch.payload(i)) for i in range(2)] == [
        {"user_id": "a", "amount": "2"},
        {RAW_FIELD: "[1, 2]"},
    ]


def test_a_name_given_twice_keeps_its_first_value_as_the_fields_do() -> None:
    batch = messages([("0-1", b'{"user_id": "a", "amount": 1, "amount": 2}')])
    assert batch.fields(0)["amount"] == "1" and batch.values[0]["amount"] == 1


def test_take_and_the_utf8_check_carry_the_values_of_the_rows_they_keep() -> None:
    batch = messages(
        [("0-1", b'{"user_id": "a", "amount": 1}'), ("0-2", b'{"user_id": "alice\xff", "amount": 2}')]
    )
    taken = batch.take([1, 0])
    assert taken.values == {0: {"user_id": "alice\udcff", "amount": 2}, 1: {"user_id": "a", "amount": 1}}
    checked, _table, problems = utf8_checked(taken)
    assert problems == {0: ["user_id: b'alice\\xff' is not valid UTF-8"]}
    # Each copy keeps its JSON values; the bad bytes as read (a replay finds them again), not as text.
    assert checked.fields(0)["user_id"] == "alice\\xff"  # what Arrow takes
    assert checked.payload(0) == '{"amount": 2, "user_id": "alice\\udcff"}'
    assert [json.loads(checked.payload(i)) for i in range(2)] == [
        {"user_id": "alice\udcff", "amount": 2},
        {"user_id": "a", "amount": 1},
    ]


def test_a_quarantined_payload_published_again_is_read_as_it_was() -> None:
    first = messages(
        [("0-1", b'{"user_id": true, "amount": 2.5}'), ("0-2", b'{"user_id": 7, "amount": 1}')], ["user_id"]
    )
    again = read_as_published([json.loads(first.payload(i)) for i in range(2)], ["user_id"])
    assert [again.fields(i) for i in range(2)] == [first.fields(i) for i in range(2)]
    assert again.flagged == first.flagged == {0: [f"user_id: JSON true is a bool; {WHY}"]}


def test_a_record_naming_a_field_twice_is_kept_and_published_again_with_every_value() -> None:
    """Its copy names the field twice, as the record did; parsed and published again it is read with the
    same reason. Kept with its first value only, a replay of it was judged without the repeat."""
    first = messages([("0-1", b'{"user_id": "a", "amount": 1, "user_id": "b"}')])
    assert first.payload(0) == '{"amount": 1, "user_id": "a", "user_id": "b"}'
    again = read_as_published([parse_payload(first.payload(0), 1)], [])
    assert again.flagged == first.flagged == {0: ["user_id: field named 2 times in the record ('a', 'b')"]}
    assert again.payload(0) == first.payload(0)
