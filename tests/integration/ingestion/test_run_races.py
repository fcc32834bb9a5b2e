"""Batch runs racing other writers, with the interleaving forced (a transaction held open on PostgreSQL,
a source that acts between its chunks), never left to timing: two runs of one source at once, and a
run whose view version is retired while it runs."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
import redis
from sqlalchemy import Engine

from clients.errors import FailedPrecondition
from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import RunSource, record_outcome, supersede
from control_plane.ingestion.service import IngestionService
from control_plane.ingestion.validation import validate
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env
from tests.support.pg_interleave import HeldTransaction
from tests.support.tcp_proxy import AnswerLosingProxy

NOW = datetime.now(UTC).replace(microsecond=0)
SOURCE = "readings.parquet"
#: Three rows above the view's maximum temperature: three bad records, keys "0" to "2".
BAD = pa.table(
    {"sensor_id": [1, 2, 3], "event_ts": [NOW] * 3, "temperature_c": [99.0, 98.0, 97.0], "mode": [1, 1, 1]}
)


def test_two_runs_of_one_source_at_once_leave_each_bad_record_pending_once_on_postgresql(
    postgresql_env: Env,
) -> None:
    """Each run's chunk transaction superseded only the copies already committed, so two runs of one
    source whose chunks overlapped both left their copies pending (three concurrent reruns of a file left
    54,000 pending copies of 30,000 bad records), and replaying every pending record wrote each twice.
    Here one run's chunk is held uncommitted, exactly as the run's transaction writes it, while the
    other run of the same file goes through: the second now waits for the first and supersedes its
    copies."""
    env = postgresql_env
    engine: Engine = env.sessions.kw["bind"]
    view = env.registry.get_feature_view("climate", 1)
    rejected = validate(view, env.registry.get_entity("sensor"), BAD, now=NOW).rejected
    keys = [str(i) for i in rejected.column("row_index").to_pylist()]
    first = RunSource("batch-held", "climate", 1, "batch", SOURCE)
    held = HeldTransaction(engine)
    session = held.session()
    record_outcome(session, first, accepted=0, rejected=rejected, record_keys=keys)
    supersede(session, first, keys, rejected.column("payload").to_pylist())
    session.flush()

    outcome: dict[str, Any] = {}

    def second_run() -> None:
        try:
            outcome["run"] = env.service.ingest("climate", 1, [BAD], source=SOURCE)
        except BaseException as exc:  # reported below, in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=second_run, name="second-run")
    worker.start()
    try:
        waited = held.wait_for_waiter(passed=lambda: not worker.is_alive())
    finally:
        held.commit()  # the first run's chunk commits while the second is, or was, in its own
        worker.join(timeout=60)
    if "error" in outcome:
        raise outcome["error"]
    pending = env.service.list_quarantined(view="climate", limit=1000)
    assert sorted(Counter(record.record_key for record in pending).values()) == [1, 1, 1], [
        (record.run_id, record.record_key) for record in pending
    ]
    assert {record.run_id for record in pending} == {outcome["run"].run_id}
    superseded = env.service.list_quarantined(view="climate", status=quarantine.SUPERSEDED)
    assert sorted(record.record_key for record in superseded) == keys
    assert waited  # the second run's supersede waited for the first run's chunk
    assert all(run.records_in == run.accepted + run.quarantined for run in env.service.list_runs())


def good(sensors: list[int]) -> pa.Table:
    """Rows that pass the view's rules, one per sensor."""
    count = len(sensors)
    return pa.table(
        {
            "sensor_id": sensors,
            "event_ts": [NOW] * count,
            "temperature_c": [20.0] * count,
            "mode": [1] * count,
        }
    )


def end_version(env: Env, how: str) -> None:
    if how == "retired":
        env.registry.deprecate_version("climate", 1)
        env.registry.retire_version("climate", 1)
    else:
        env.registry.delete_feature_view("climate")


@pytest.mark.parametrize("how", ["retired", "deleted"])
def test_a_run_stops_at_the_chunk_after_its_version_is_retired_or_deleted(any_env: Env, how: str) -> None:
    """The version's status was checked once, when the run started: retired after the run's first chunk
    committed, it got every later row stored and counted and its online values written, and the run
    answered OK (6,000,000 rows and 50,000 online keys into a version nothing serves). The source here
    retires (or deletes) the version between its chunks: the run stops there, FAILED_PRECONDITION saying
    what it stored, and the first chunk stays stored and counted."""
    env = any_env

    def source() -> Iterator[pa.Table]:
        yield good([1, 2])
        end_version(env, how)  # the first chunk is committed when the run asks for the second
        yield good([3, 4])

    with pytest.raises(FailedPrecondition, match=rf"'climate' version 1 was {how}.* while this run wrote it"):
        env.service.ingest("climate", 1, source(), source=SOURCE)
    (run,) = env.service.list_runs("climate")
    assert (run.records_in, run.accepted, run.quarantined) == (2, 2, 0)
    stored = [
        key for batch in env.offline.scan("climate", 1) for key in batch.column("sensor_id").to_pylist()
    ]
    assert sorted(stored) == [1, 2]
    assert not any(env.client.exists(online_key("sensor", [str(i)], "climate", 1)) for i in range(1, 5))
    # Its online part goes with the version, as at a delete's fence: no record waits for a discard.
    assert env.service.list_quarantined(status="all") == []


@pytest.mark.parametrize("how", ["retired", "deleted"])
def test_a_run_writes_no_online_value_into_a_version_retired_or_deleted_after_its_last_chunk(
    any_env: Env, how: str
) -> None:
    """The run's online write comes after its last chunk's commit: a version retired in between got the
    run's online values. The read before the online write stops the run there, its rows counted."""
    env = any_env

    def source() -> Iterator[pa.Table]:
        yield good([1, 2])
        end_version(env, how)  # after the last chunk's commit, before the run's online write

    with pytest.raises(FailedPrecondition, match=r"Run batch-\w+ stored and counted 2 records before"):
        env.service.ingest("climate", 1, source(), source=SOURCE)
    (run,) = env.service.list_runs("climate")
    assert (run.records_in, run.accepted, run.quarantined) == (2, 2, 0)
    assert not any(env.client.exists(online_key("sensor", [str(i)], "climate", 1)) for i in range(1, 3))
    assert env.service.list_quarantined(status="all") == []


def test_a_retire_committed_during_the_runs_online_write_leaves_none_of_its_values(
    env: Env, redis_url: str
) -> None:
    """The run reads its version's status before its online write, but the read and the write are not
    one step: a retire that committed while the write was on its way to Redis let the run's values into
    the retired version, and the run answered OK. Here the run's Redis requests wait in a proxy until the
    retire has committed; the run's read after its write finds it, and the run removes what it wrote."""
    proxy = AnswerLosingProxy(redis_url.removeprefix("redis://").split("/")[0])
    client = redis.Redis.from_url(f"redis://{proxy.address}/0")
    service = IngestionService(env.sessions, env.registry, env.offline, client)
    other = online_key("sensor", ["9"], "climate", 1)
    env.client.set(other, b"another writer's")  # not the run's: stays

    def source() -> Iterator[pa.Table]:
        yield good([1, 2])
        proxy.hold_requests()  # the run's next Redis request is its online write

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            service.ingest("climate", 1, source(), source=SOURCE)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while proxy.held_request_bytes == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proxy.held_request_bytes, "the run never sent its online write"
    end_version(env, "retired")
    proxy.release_requests()
    thread.join(timeout=10)
    try:
        (error,) = outcome
        assert isinstance(error, FailedPrecondition), error
        assert "'climate' version 1 was retired" in str(error)
        assert not any(env.client.exists(online_key("sensor", [str(i)], "climate", 1)) for i in (1, 2))
        assert env.client.get(other) == b"another writer's"
        (counted,) = env.service.list_runs("climate")
        assert (counted.records_in, counted.accepted, counted.quarantined) == (2, 2, 0)
        assert env.service.list_quarantined(status="all") == []
    finally:
        client.close()
        proxy.close()
