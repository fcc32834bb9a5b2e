"""Concurrent replays of the same quarantined records, on SQLite and on PostgreSQL, with a real
redis-server and offline store: a replay claims its records before it writes them, so each record is
written once and the other replay is refused naming the records it could not have; a claim a dead
replay left behind is taken over after the lease."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import redis
from sqlalchemy import select

from clients.errors import FailedPrecondition, NotFound, Unavailable
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import write_session
from control_plane.ingestion import claims, quarantine
from control_plane.ingestion.service import IngestionService, ReplayOutcome
from control_plane.offline.store import OfflineStore
from tests.integration.ingestion.conftest import Env
from tests.integration.ingestion.pausing_redis import PausingRedis
from tests.support.faulty_fs import faulty
from tests.support.redis_server import RedisServer
from tests.support.s3_server import FakeS3Server

NOW = datetime.now(UTC).replace(microsecond=0)


def climate_record(env: Env, sensor: int) -> tuple[int, str]:
    """A quarantined batch record (too hot) and its correction."""
    row = {"sensor_id": sensor, "event_ts": NOW.isoformat(), "temperature_c": 99.0, "mode": 1}
    record_id = env.quarantine("climate", row, "temperature_c: above max")
    return record_id, json.dumps({**row, "temperature_c": 20.0 + sensor})


def clicks_record(env: Env, sensor: int, amount: float) -> tuple[int, str]:
    """A quarantined stream event (amount not a number) and its correction, which carries ``amount``
    so that each published event can be told apart."""
    event = {"sensor_id": str(sensor), "event_ts": NOW.isoformat(), "amount": "oops"}
    record_id = env.quarantine("clicks", event, "amount: bad", key=f"1-{sensor}")
    return record_id, json.dumps({**event, "amount": str(amount)})


def offline_sensors(env: Env) -> list[int]:
    return sorted(
        key for batch in env.offline.scan("climate", 1) for key in batch.column("sensor_id").to_pylist()
    )


def published_amounts(env: Env) -> list[str]:
    return sorted(fields[b"amount"].decode() for _id, fields in env.client.xrange("events:clicks"))


def replay_counts(env: Env) -> tuple[int, int, int, int]:
    """records in, accepted, quarantined and published (to a streaming view's stream, for its stream run
    to count) over every replay run."""
    runs = [run for run in env.service.list_runs() if run.source_kind == "replay"]
    return (
        sum(r.records_in for r in runs),
        sum(r.accepted for r in runs),
        sum(r.quarantined for r in runs),
        sum(r.published for r in runs),
    )


def test_a_replay_of_records_another_replay_is_writing_is_refused_and_each_is_written_once(
    any_env: Env, redis_url: str
) -> None:
    """Replay A stops in the middle of its write (its batch rows are in the offline store, nothing is
    committed yet); replay B of overlapping records runs then, as a second operator's would. Without a
    claim B read the records as quarantined too and wrote them a second time."""
    env = any_env
    climate = [climate_record(env, sensor) for sensor in (1, 2, 3)]
    clicks = [clicks_record(env, sensor, 10.0 + sensor) for sensor in (4, 5)]
    corrected = dict(climate + clicks)
    ids = [record_id for record_id, _ in climate + clicks]
    slow = PausingRedis.from_url(redis_url)
    writer_a = IngestionService(env.sessions, env.registry, env.offline, slow)
    outcome: list[ReplayOutcome] = []
    failures: list[BaseException] = []

    def replay_a() -> None:
        try:
            outcome.append(writer_a.replay(ids, corrected, actor="a"))
        except BaseException as exc:
            failures.append(exc)
            slow.paused.set()

    thread = threading.Thread(target=replay_a)
    thread.start()
    try:
        assert slow.paused.wait(10)  # A is inside its first group's write
        assert not failures
        overlap = [ids[1], ids[4]]
        with pytest.raises(FailedPrecondition) as refused:
            env.service.replay(overlap, {i: corrected[i] for i in overlap}, actor="b")
        assert f"quarantined records {sorted(overlap)} are being replayed by another replay" in str(
            refused.value
        )
        assert str(refused.value).endswith("nothing was replayed")
        with pytest.raises(FailedPrecondition, match="are being replayed by another replay"):
            env.service.discard([ids[0]])
        # A's first group is stored offline and committed, and being written online (online_pending).
        held = env.service.list_quarantined(status=quarantine.REPLAYING)
        held += env.service.list_quarantined(status=quarantine.ONLINE_PENDING)
        assert sorted(r.id for r in held) == sorted(ids)
    finally:
        slow.resume.set()
        thread.join(20)
        slow.close()
    assert not failures
    (done,) = outcome
    assert sorted(done.replayed) == sorted(ids)
    assert offline_sensors(env) == [1, 2, 3]  # each batch row once
    assert published_amounts(env) == ["14.0", "15.0"]  # each event once
    assert replay_counts(env) == (3, 3, 0, 2)  # the batch rows accepted, the events published
    assert {env.service.get_quarantined(i).status for i in ids} == {quarantine.REPLAYED}
    # Finished records are refused as before, by their status.
    with pytest.raises(FailedPrecondition, match=f"quarantined record {ids[0]} is replayed"):
        env.service.replay([ids[0]], {})


def race(
    env: Env, shares: list[list[int]], corrected: dict[int, str]
) -> list[ReplayOutcome | FailedPrecondition]:
    """Replays each share on a thread of its own, all let go at once; what each returned or was refused
    with."""
    barrier = threading.Barrier(len(shares))
    results: list[ReplayOutcome | FailedPrecondition | None] = [None] * len(shares)

    def replay(index: int) -> None:
        share = shares[index]
        barrier.wait()
        try:
            results[index] = env.service.replay(share, {i: corrected[i] for i in share})
        except FailedPrecondition as exc:
            results[index] = exc

    threads = [threading.Thread(target=replay, args=(index,)) for index in range(len(shares))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def test_replays_racing_freely_over_overlapping_records_write_each_record_once(any_env: Env) -> None:
    """Many rounds of two replays started together over overlapping records, with no pause: whichever
    claims a record writes it, and every record is written exactly once."""
    env = any_env
    rng = random.Random(7)
    amount = 0.0
    for _round in range(6):
        records = []
        for sensor in range(8):
            amount += 1
            records.append(clicks_record(env, sensor, amount))
        ids = [record_id for record_id, _ in records]
        corrected = dict(records)
        cut = rng.randint(2, 6)
        shares = [ids[: cut + 2], ids[cut - 2 :]]
        results = race(env, shares, corrected)
        replayed = [i for r in results if isinstance(r, ReplayOutcome) for i in r.replayed]
        assert len(replayed) == len(set(replayed))  # no record replayed by both
        for result in results:
            if isinstance(result, FailedPrecondition):
                assert (
                    "being replayed by another replay" in result.message or " is replayed" in result.message
                )
        # The refused replay wrote nothing: what is not replayed is still quarantined, nothing stays claimed.
        statuses = {i: env.service.get_quarantined(i).status for i in ids}
        assert {i for i, s in statuses.items() if s == quarantine.REPLAYED} == set(replayed)
        assert set(statuses.values()) <= {quarantine.REPLAYED, quarantine.QUARANTINED}
    every = published_amounts(env)
    assert len(every) == len(set(every))  # no event published twice
    total = len(every)
    assert replay_counts(env) == (0, 0, 0, total)  # published, for the stream run to count


def test_a_claim_a_dead_replay_left_is_taken_over_once_the_lease_has_run_out(any_env: Env) -> None:
    """A replay that died after claiming leaves its records ``replaying``: refused while its lease runs
    (it may still be writing), then taken over by the next replay, which writes them."""
    env = any_env
    record_id, fixed = climate_record(env, 7)
    with write_session(env.sessions) as session:  # what a replay killed after its claim leaves behind
        claims.claim(session, [record_id])
    assert env.service.get_quarantined(record_id).status == quarantine.REPLAYING
    with pytest.raises(
        FailedPrecondition,
        match=r"being replayed by another replay \(or written online by the batch run that filed them;"
        r" claimed since",
    ):
        env.service.replay([record_id], {record_id: fixed})

    lease_s = 0.2
    restarted = IngestionService(env.sessions, env.registry, env.offline, env.client, claim_lease_s=lease_s)
    time.sleep(lease_s * 2)
    outcome = restarted.replay([record_id], {record_id: fixed})
    assert outcome.replayed == [record_id]
    assert env.service.get_quarantined(record_id).status == quarantine.REPLAYED
    assert offline_sensors(env) == [7]


def test_a_failed_replay_hands_its_records_back(any_env: Env) -> None:
    """A replay refused after its claim (a payload that is not JSON) leaves nothing claimed: the records
    are quarantined again and the next replay takes them at once."""
    env = any_env
    record_id, fixed = climate_record(env, 8)
    other_id, other_fixed = climate_record(env, 9)
    with pytest.raises(Exception, match="payload is not JSON"):
        env.service.replay([record_id, other_id], {record_id: fixed, other_id: "{not json"})
    assert {env.service.get_quarantined(i).status for i in (record_id, other_id)} == {quarantine.QUARANTINED}
    outcome = env.service.replay([record_id, other_id, record_id], {record_id: fixed, other_id: other_fixed})
    assert sorted(outcome.replayed) == sorted([record_id, other_id])
    assert offline_sensors(env) == [8, 9]  # an id named twice is written once


def test_a_replay_whose_online_write_fails_writes_its_record_offline_once(any_env: Env) -> None:
    """The online store refuses the write after the offline one (a real redis-server out of memory:
    PING works, writes do not): the record stays online_pending, not quarantined, so the retry writes
    only its online value. Handed back as quarantined, each retry wrote its offline row again."""
    env = any_env
    record_id, fixed = climate_record(env, 11)
    full = RedisServer()
    full.start()
    refusing = redis.Redis.from_url(full.url)
    try:
        refusing.config_set("maxmemory", 1)  # with the default noeviction policy every write fails
        service = IngestionService(env.sessions, env.registry, env.offline, refusing)
        for _ in range(2):  # a retry against the same outage changes nothing
            with pytest.raises(Unavailable, match=r"online store \(Redis\).*online_pending"):
                service.replay([record_id], {record_id: fixed})
    finally:
        refusing.close()
        full.close()
    assert env.service.get_quarantined(record_id).status == quarantine.ONLINE_PENDING
    assert offline_sensors(env) == [11]
    outcome = env.service.replay([record_id], {record_id: fixed})  # the request retried as it was
    assert outcome.replayed == [record_id]
    assert env.service.get_quarantined(record_id).status == quarantine.REPLAYED
    assert offline_sensors(env) == [11]
    assert len(list(env.client.scan_iter("ae:*:climate:v1"))) == 1
    assert replay_counts(env) == (1, 1, 0, 0)


@pytest.mark.parametrize("missing", [2**31, 3_000_000_000, 2**64 - 1])
def test_an_id_beyond_the_id_column_is_not_found_on_every_backend(any_env: Env, missing: int) -> None:
    """Record ids are uint64 in the API and 32 bits in the column: PostgreSQL refused to compare a larger
    one (INTERNAL), and SQLite one past 2**63 (OverflowError), where a smaller one was NOT_FOUND."""
    env = any_env
    record_id, _ = climate_record(env, 10)
    with pytest.raises(NotFound, match=f"quarantined record {missing} not found"):
        env.service.get_quarantined(missing)
    for action in (env.service.discard, lambda ids: env.service.replay(ids, {})):
        with pytest.raises(NotFound, match=f"quarantined record {missing} not found"):
            action([record_id, missing])
    assert env.service.get_quarantined(record_id).status == quarantine.QUARANTINED


@contextmanager
def refusing_service(env: Env) -> Iterator[IngestionService]:
    """The service over a real redis-server that is out of memory (maxmemory 1 with the default
    noeviction policy): PING works, every write is refused."""
    full = RedisServer()
    full.start()
    refusing = redis.Redis.from_url(full.url)
    try:
        refusing.config_set("maxmemory", 1)
        yield IngestionService(env.sessions, env.registry, env.offline, refusing)
    finally:
        refusing.close()
        full.close()


def test_online_pending_records_whose_batch_allowed_their_nulls_are_replayed(any_env: Env) -> None:
    """A batch run's online write fails, so its latest row per sensor waits online_pending; each of those
    rows has a null temperature, which its batch allowed (null fraction 0.5, max 0.5). Re-judged as a
    batch of their own (null fraction 1.0) they were refused by every replay, and a discard refused them
    too: stuck, with no online value ever written."""
    env = any_env
    earlier = NOW - timedelta(minutes=5)
    rows = pa.table({
        "sensor_id": [7, 7, 8, 8], "event_ts": [earlier, NOW, earlier, NOW],
        "temperature_c": pa.array([20.0, None, 21.0, None], pa.float32()), "mode": [1, 1, 2, 2],
    })  # fmt: skip
    with (
        refusing_service(env) as service,
        pytest.raises(FailedPrecondition, match="online_pending record of"),
    ):
        service.ingest("climate", 1, [rows])
    pending = [r.id for r in env.service.list_quarantined(status=quarantine.ONLINE_PENDING)]
    assert len(pending) == 1  # the run's online part, its latest rows in its offline files
    outcome = env.service.replay(pending, {})
    assert sorted(outcome.replayed) == sorted(pending)
    assert {env.service.get_quarantined(i).status for i in pending} == {quarantine.REPLAYED}
    assert len(list(env.client.scan_iter("ae:*:climate:v1"))) == 2  # both sensors' online values
    assert offline_sensors(env) == [7, 7, 8, 8]  # stored once, by the run


@pytest.mark.parametrize("gone", ["retired", "deleted"])
def test_online_pending_records_of_a_retired_or_deleted_version_are_discarded(
    any_env: Env, gone: str
) -> None:
    """A batch run's online write fails, then its view version is retired (or the view deleted): the
    replay of its online_pending records is refused saying to discard them, and the discard takes them
    (it refused them, saying to replay them: stuck). Their rows stay stored offline, and the run still
    counts them accepted, so records in = accepted + quarantined holds."""
    env = any_env
    rows = pa.table({"sensor_id": [7, 8], "event_ts": [NOW, NOW], "temperature_c": [20.0, 21.0],
                     "mode": [1, 2]})  # fmt: skip
    with (
        refusing_service(env) as service,
        pytest.raises(FailedPrecondition, match="online_pending record of"),
    ):
        service.ingest("climate", 1, [rows])
    (run,) = env.service.list_runs(view="climate")
    pending = [r.id for r in env.service.list_quarantined(status=quarantine.ONLINE_PENDING)]
    assert len(pending) == 1
    if gone == "retired":
        env.registry.deprecate_version("climate", 1)
        env.registry.retire_version("climate", 1)
    else:
        env.registry.delete_feature_view("climate")
    with pytest.raises(FailedPrecondition, match=f"version 1, which is {gone}.*Discard them"):
        env.service.replay(pending, {})
    assert {env.service.get_quarantined(i).status for i in pending} == {quarantine.ONLINE_PENDING}
    assert env.service.discard(pending) == len(pending)
    assert {env.service.get_quarantined(i).status for i in pending} == {quarantine.DISCARDED}
    assert env.service.list_runs(view="climate") == [run]  # unchanged: still counted accepted
    assert (run.records_in, run.accepted, run.quarantined) == (2, 2, 0)
    assert offline_sensors(env) == [7, 8]


def test_a_replay_of_online_pending_records_another_replay_is_writing_online_is_refused(
    any_env: Env, redis_url: str
) -> None:
    """Replay A of an online_pending record stops in the middle of its online write; replay B of the
    same record then is refused, as for a quarantined record A holds. Without a hold both wrote the
    online value, both answered it replayed and both audited quarantine.replay.online."""
    env = any_env
    record_id, fixed = climate_record(env, 12)
    with refusing_service(env) as service, pytest.raises(Unavailable, match="online_pending"):
        service.replay([record_id], {record_id: fixed})
    slow = PausingRedis.from_url(redis_url)
    assert isinstance(slow, PausingRedis)  # from_url is typed as returning a plain Redis
    writer_a = IngestionService(env.sessions, env.registry, env.offline, slow)
    outcome: list[ReplayOutcome] = []
    thread = threading.Thread(target=lambda: outcome.append(writer_a.replay([record_id], {})))
    thread.start()
    try:
        assert slow.paused.wait(10)  # A is inside the online write
        with pytest.raises(
            FailedPrecondition, match=rf"records \[{record_id}\] are being replayed by another"
        ):
            env.service.replay([record_id], {})
        with pytest.raises(FailedPrecondition, match="being replayed by another replay"):
            env.service.discard([record_id])
    finally:
        slow.resume.set()
        thread.join(20)
        slow.close()
    assert [o.replayed for o in outcome] == [[record_id]]
    assert env.service.get_quarantined(record_id).status == quarantine.REPLAYED
    with env.sessions() as session:
        audited = session.scalars(
            select(AuditEntryRow.action).where(AuditEntryRow.action == "quarantine.replay.online")
        ).all()
    assert len(audited) == 1
    # A failed completion hands its hold back at once: the next replay is not kept waiting a lease.
    other_id, other_fixed = climate_record(env, 13)
    with refusing_service(env) as service:
        with pytest.raises(Unavailable, match="online_pending"):
            service.replay([other_id], {other_id: other_fixed})
        with pytest.raises(Unavailable, match="online_pending"):
            service.replay([other_id], {})  # held while it writes online, then handed back
    assert env.service.replay([other_id], {}).replayed == [other_id]


def test_a_replay_whose_write_outlasted_its_claim_backs_off_and_leaves_no_rows_behind(
    any_env: Env, tmp_path: Path
) -> None:
    """Replay A's offline write outlasts its claim's lease (its offline store on the suite's S3 endpoint
    behind a FAKE fault, tests/support/faulty_fs.py, that holds the upload while replay B, whose lease is
    0 s, takes the records over and writes and commits them). A finds its claim lost at its commit and
    refuses, as before; but its file stayed in the offline store, so the record's row was stored twice
    (once counted by B, once by nobody). Now A removes what it wrote before it refuses."""
    env = any_env
    record_id, fixed = climate_record(env, 11)
    s3 = FakeS3Server()
    try:
        root = s3.uri("offline")
        slow_store, plain_store = OfflineStore(root), OfflineStore(root)
        slow_store.filesystem, hooks = faulty(slow_store.filesystem)
        writer_a = IngestionService(env.sessions, env.registry, slow_store, env.client)
        writer_b = IngestionService(env.sessions, env.registry, plain_store, env.client, claim_lease_s=0.0)
        taken: list[ReplayOutcome] = []

        def take_over_meanwhile(path: str, stream: object) -> object:
            hooks.wrap_output = None
            taken.append(writer_b.replay([record_id], {record_id: fixed}, actor="b"))
            return stream

        hooks.wrap_output = take_over_meanwhile
        with pytest.raises(FailedPrecondition, match="lapsed while it wrote them"):
            writer_a.replay([record_id], {record_id: fixed}, actor="a")
        assert [outcome.replayed for outcome in taken] == [[record_id]]
        assert env.service.get_quarantined(record_id).status == quarantine.REPLAYED
        sensors = [s for b in plain_store.scan("climate", 1) for s in b.column("sensor_id").to_pylist()]
        assert sensors == [11]  # stored once
        assert replay_counts(env) == (1, 1, 0, 0)  # counted once
    finally:
        s3.close()
