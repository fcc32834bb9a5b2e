"""The columnar pieces of the stream materializer: message batches decoded from real XREADGROUP and
XRANGE replies, stream id parsing, and online keys built column-wise, each against the one-at-a-time
reference it replaces."""

from __future__ import annotations

import pyarrow as pa
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.ingestion.streaming.kafka_ids import kafka_id_problems, kafka_order
from control_plane.ingestion.streaming.online_keys import OnlineKeys
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.ingestion.streaming.source import (
    MessageBatch,
    StreamMessage,
    id_millis,
    id_parts,
    id_sequence,
    utf8_checked,
)
from kernels.online_keys import online_key

STREAM = "events:batches"


def published(client: redis.Redis, entries: list[dict[bytes, bytes]]) -> list[str]:
    return [client.xadd(STREAM, fields).decode() for fields in entries]  # type: ignore[arg-type, union-attr]


def text(fields: dict[bytes, bytes]) -> dict[str, str]:
    # Bytes that are not UTF-8 stay recognizable (lone surrogates), never U+FFFD: see utf8_checked.
    return {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape") for k, v in fields.items()}


def test_uniform_and_mixed_reads_carry_every_field_of_every_message(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    uniform = [{b"sensor_id": str(i).encode(), b"amount": f"{i}.5".encode()} for i in range(50)]
    mixed = [
        {b"sensor_id": b"1", b"amount": b"2"},
        {b"amount": b"3", b"sensor_id": b"2"},  # same fields, other order
        {b"sensor_id": b"3"},  # a field missing
        {b"sensor_id": b"4", b"amount": b"", b"colour": b"red"},  # an empty value, an extra field
        {b"garbage": b"\xff\xfe not utf-8"},
    ]
    source = RedisStreamSource(client, STREAM, "g", "c1")
    for entries in (uniform, mixed):
        ids = published(client, entries)
        batch = source.read(1000, 10)
        assert batch.ids == ids
        assert [batch.fields(i) for i in range(len(batch))] == [text(e) for e in entries]
        _checked, table, not_utf8 = utf8_checked(batch)
        assert table.num_rows == len(entries)
        assert list(not_utf8) == ([4] if entries is mixed else [])
        assert set(table.column_names) == {k.decode() for e in entries for k in e}
    history = [m for page in source.history(0, 7) for m in page.messages()]
    expected = [text(e) for e in uniform + mixed]
    assert [m.fields for m in history] == expected


def test_take_keeps_the_chosen_messages_and_only_their_fields() -> None:
    batch = MessageBatch.of(
        [
            StreamMessage("1-0", {"a": "x"}),
            StreamMessage("2-0", {"a": "y", "b": "z"}),
            StreamMessage("3-0", {}),
        ]
    )
    kept = batch.take([0, 2])
    assert kept.ids == ["1-0", "3-0"] and kept.columns == {"a": ["x", None]}
    assert [m.fields for m in batch.take([1]).messages()] == [{"a": "y", "b": "z"}]


stream_ids = st.builds(
    lambda ms, seq: f"{ms}-{seq}", st.integers(0, 2**42), st.integers(0, 2**24)
) | st.integers(0, 2**42).map(str)


@settings(max_examples=200, deadline=None)
@given(st.lists(stream_ids, max_size=30))
def test_id_parts_equal_parsing_one_id_at_a_time(ids: list[str]) -> None:
    millis, sequence = id_parts(ids)
    assert millis.tolist() == [id_millis(i) for i in ids]
    assert sequence.tolist() == [id_sequence(i) for i in ids]


kafka_positions = st.tuples(st.integers(0, 2**20 - 1), st.integers(0, 2**43 - 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(kafka_positions, min_size=2, max_size=30, unique=True))
def test_kafka_ids_order_as_their_partition_and_offset(positions: list[tuple[int, int]]) -> None:
    """Kafka ids were ordered as Redis stream ids (a 20-bit sequence, capped): every offset past about a
    million had one order, so ``last`` could not tell a redelivered older record from a newer one."""
    order = kafka_order([f"{partition}-{offset}" for partition, offset in positions]).tolist()
    assert len(set(order)) == len(positions)
    assert sorted(range(len(positions)), key=order.__getitem__) == sorted(
        range(len(positions)), key=positions.__getitem__
    )
    assert kafka_id_problems([f"{partition}-{offset}" for partition, offset in positions]) == {}


def test_kafka_ids_past_the_packing_are_refused() -> None:
    """An offset from 2**43 on was capped (later records tied), a partition from 2**20 on passed int64:
    refused with a reason (the materializer quarantines them), not ordered wrongly."""
    ids = [f"{2**20 - 1}-{2**43 - 1}", f"0-{2**43}", f"{2**20}-0", "3-17"]
    problems = kafka_id_problems(ids)
    assert sorted(problems) == [1, 2]
    assert problems[1].startswith(f"Kafka record 0-{2**43}: its partition or offset is past"), problems[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=20))
def test_online_keys_equal_online_key_for_any_text(values: list[str]) -> None:
    keys = OnlineKeys("sensor", "clicks", 3)
    table = pa.table({"sensor_id": pa.array(values, pa.string())})
    assert keys.of(table, ["sensor_id"]) == [online_key("sensor", [v], "clicks", 3) for v in values]


def test_online_keys_of_integer_and_composite_keys() -> None:
    keys = OnlineKeys("user", "spend", 1)
    ints = pa.table({"user_id": pa.array([7, -2, 10**15], pa.int64())})
    assert keys.of(ints, ["user_id"]) == [online_key("user", [str(v)], "spend", 1) for v in (7, -2, 10**15)]
    pairs = pa.table({"a": ["x:y", "1"], "b": pa.array([5, 6], pa.int64())})
    assert keys.of(pairs, ["a", "b"]) == [
        online_key("user", ["x:y", "5"], "spend", 1),
        online_key("user", ["1", "6"], "spend", 1),
    ]
