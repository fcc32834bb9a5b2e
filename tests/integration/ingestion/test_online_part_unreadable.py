"""Replaying a batch run's online part (its latest rows read back from the offline files the run wrote)
when those files cannot be read: a failure of the store that may pass (UNAVAILABLE) leaves the record
online_pending for a later replay; a store that refuses the read for a fault of its setup is
FAILED_PRECONDITION saying what to fix, the record still online_pending; a file whose bytes are not Parquet
is FAILED_PRECONDITION, discard it. Real redis-server, real SQLite, real Parquet files in a scratch folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from clients.errors import FailedPrecondition, Unavailable
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env


def stored_but_not_online(env: Env) -> tuple[int, Path]:
    """A batch run stored offline and counted, whose online write Redis refused: its online part's record
    id and the offline file the record names."""
    event = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rows = pa.table(
        {
            "sensor_id": pa.array([7], pa.int64()),
            "event_ts": pa.array([event], pa.timestamp("us", tz="UTC")),
            "temperature_c": pa.array([1.0], pa.float32()),
            "mode": pa.array([1], pa.int32()),
        }
    )
    env.client.config_set("maxmemory", 1)  # with the default noeviction policy every write fails
    try:
        with pytest.raises(FailedPrecondition, match="stored offline and counted"):
            env.service.ingest("climate", 1, [rows])
    finally:
        env.client.config_set("maxmemory", 0)
    (pending,) = env.service.list_quarantined(status="online_pending")
    (path,) = json.loads(pending.payload)["offline_files"]
    return pending.id, Path(path)


def test_an_online_part_whose_file_is_gone_for_now_is_unavailable_and_stays_pending(env: Env) -> None:
    """The offline file gone when the replay reads it (no merged file names it): the store's UNAVAILABLE,
    a failure that may pass. It was FAILED_PRECONDITION "cannot be read ...: discard it", and an operator
    who discarded the record lost the run's online values for good. Now UNAVAILABLE, the record still
    online_pending, and a replay once the file is back writes them."""
    record, path = stored_but_not_online(env)
    kept = path.read_bytes()
    path.unlink()
    with pytest.raises(Unavailable, match=rf"could not read {path}: FileNotFoundError") as raised:
        env.service.replay([record], {})
    assert "discard" not in raised.value.message
    assert f"record {record} is run " in raised.value.message and "replay it again" in raised.value.message
    (still,) = env.service.list_quarantined(status="online_pending")
    assert still.id == record

    path.write_bytes(kept)
    assert env.service.replay([record], {}).replayed == [record]
    assert env.client.get(online_key("sensor", ["7"], "climate", 1)) is not None  # the value is online now
    assert not env.service.list_quarantined(status="online_pending")


def test_an_online_part_whose_file_is_not_parquet_is_failed_precondition_discard_it(env: Env) -> None:
    record, path = stored_but_not_online(env)
    assert env.client.get(online_key("sensor", ["7"], "climate", 1)) is None
    path.write_bytes(b"not a Parquet file" * 10)
    with pytest.raises(FailedPrecondition, match=r"cannot be read .*ArrowInvalid.*: discard it"):
        env.service.replay([record], {})
    (still,) = env.service.list_quarantined(status="online_pending")
    assert still.id == record


def test_an_online_part_behind_a_setup_fault_says_what_to_fix_and_stays_pending(env: Env) -> None:
    """The offline file's partition folder replaced by a file (a fault an operator fixes, ENOTDIR; a
    permission refused or an object store's credentials refused are the same kind): the store's
    FAILED_PRECONDITION, which the replay answered "cannot be read ...: discard it", so an operator who
    followed it lost the run's online values for good. Now FAILED_PRECONDITION naming the fault and
    saying the record stays online_pending; fixed, a replay writes the values."""
    record, path = stored_but_not_online(env)
    partition = path.parent
    away = partition.with_name(partition.name + ".away")
    partition.rename(away)
    partition.write_bytes(b"")  # a file where the store keeps the partition's folder
    with pytest.raises(FailedPrecondition, match=rf"could not read {path}: NotADirectoryError") as raised:
        env.service.replay([record], {})
    assert "discard" not in raised.value.message
    assert (
        f"record {record} is run " in raised.value.message and "stays online_pending" in raised.value.message
    )
    (still,) = env.service.list_quarantined(status="online_pending")
    assert still.id == record

    partition.unlink()
    away.rename(partition)
    assert env.service.replay([record], {}).replayed == [record]
    assert env.client.get(online_key("sensor", ["7"], "climate", 1)) is not None  # the value is online now
    assert not env.service.list_quarantined(status="online_pending")
