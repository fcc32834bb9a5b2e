"""A Redis stream entry that names a field twice is quarantined, not read as its last value (a real
redis-server and SQLite quarantine)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import redis

from control_plane.db import read_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.streaming.materializer import StreamMaterializer
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.redis_source import RedisStreamSource
from control_plane.offline.store import OfflineStore
from kernels.online_keys import online_key
from tests.integration.ingestion.streaming_support import registry_db, run_until_idle, spend_view

OPTIONS = MaterializerOptions(count=500, block_ms=50, reclaim_every_s=0.1, lag_every_s=0.1)


def test_an_entry_naming_a_field_twice_is_quarantined_with_both_values(
    tmp_path: Path, redis_url: str
) -> None:
    """XADD takes a field name more than once. Read into a dict, the entry kept its last value: the event
    of ``user_id alice ... user_id bob`` was aggregated into bob, silently, as a batch refuses a table
    with a column named twice. Such an entry is quarantined, its reason naming the field and its values."""
    _url, sessions, _clicks, _sensor = registry_db(tmp_path)
    view, entity = spend_view(sessions, "events:spend")
    client = redis.Redis.from_url(redis_url)
    now = datetime.now(UTC).isoformat()
    for fields in (
        ["user_id", "alice", "event_ts", now, "amount", "5", "user_id", "bob"],
        ["user_id", "carol", "event_ts", now, "amount", "2", "amount", "2"],  # the same value twice
        ["user_id", "dave", "event_ts", now, "amount", "7"],
    ):
        client.execute_command("XADD", "events:spend", "*", *fields)
    source = RedisStreamSource(client, "events:spend", OPTIONS.group, "c1")
    materializer = StreamMaterializer(
        view, entity, source, client, sessions, OfflineStore(str(tmp_path / "offline")), OPTIONS
    )
    materializer.start()
    run_until_idle(materializer)

    assert sorted(client.keys("ae:*")) == [online_key("user", ["dave"], "spend", 1)]
    with read_session(sessions) as session:
        counts = quarantine.run_counts(session, materializer.run.run_id)
        records = quarantine.list_quarantined(session, view="spend")
    assert (counts.records_in, counts.accepted, counts.quarantined) == (3, 1, 2)
    assert sorted(r.reason for r in records) == [
        "amount: field named 2 times in the entry ('2', '2')",
        "user_id: field named 2 times in the entry ('alice', 'bob')",
    ]
    # Each copy keeps every value given (a replay reads the repeat again): JSON that names the field twice.
    pairs = sorted(json.loads(r.payload, object_pairs_hook=list) for r in records)
    assert [[value for name, value in given if name in ("user_id", "amount")] for given in pairs] == [
        ["2", "2", "carol"],
        ["5", "alice", "bob"],
    ]
