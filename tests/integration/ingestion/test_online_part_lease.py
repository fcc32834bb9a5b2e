"""A batch run whose work outlasts the lease on its online part (``online_pending``), on SQLite and on
PostgreSQL with a real redis-server and offline store, the lease shortened through its parameter
(``claim_lease_s``): a run renews its hold while it works, so a replay cannot take its record over;
and a run that lost it all the same (stalled past the lease with no renewal) files what it stores after
that in a record of its own. Either way every stored and counted row is named by a record until its
online value is written, each accepted row is stored once, and every run adds up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.orm import Session

from clients.errors import FailedPrecondition, Internal
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.online import online_view_version
from control_plane.ingestion.quarantine import QuarantinedRecord, now_us
from control_plane.ingestion.service import IngestionService
from kernels.online_keys import online_key
from kernels.packed_blob import decode
from tests.integration.ingestion.conftest import Env

NOW = datetime.now(UTC).replace(microsecond=0)
LEASE_S = 1.0
LEASE_US = int(LEASE_S * 1_000_000)
SENSORS = (701, 702, 703)


def chunk(k: int) -> pa.Table:
    """Chunk ``k``: one row per sensor (temperature ``10k + i``), event times rising with ``k``, and one
    rejected row (too hot)."""
    return pa.table(
        {
            "sensor_id": [*SENSORS, 799],
            "event_ts": [NOW - timedelta(minutes=10 - k)] * 4,
            "temperature_c": [10.0 * k + 1, 10.0 * k + 2, 10.0 * k + 3, 99.0],
            "mode": [1, 2, 3, 1],
        }
    )


def online_temperatures(env: Env) -> list[float | None]:
    view = env.registry.get_feature_view("climate", 1)
    layout = online_view_version(view)
    found: list[float | None] = []
    for sensor in SENSORS:
        blob = env.client.get(online_key("sensor", [str(sensor)], "climate", 1))
        if not isinstance(blob, bytes):
            found.append(None)
            continue
        decoded = decode(blob, layout.layout, view.schema_fingerprint, len(layout.columns))
        found.append(float(decoded.values[0][0]))
    return found


def stored_rows(env: Env) -> list[tuple[int, float]]:
    rows = [
        (sensor, temperature)
        for batch in env.offline.scan("climate", 1)
        for sensor, temperature in zip(
            batch.column("sensor_id").to_pylist(), batch.column("temperature_c").to_pylist(), strict=True
        )
        if sensor in SENSORS
    ]
    return sorted(rows)


def every_row_once(env: Env) -> None:
    expected = sorted((sensor, 10.0 * k + i + 1) for k in range(3) for i, sensor in enumerate(SENSORS))
    assert stored_rows(env) == expected  # small integers: exact in float32
    runs = env.service.list_runs("climate")
    assert all(run.records_in == run.accepted + run.quarantined for run in runs)
    batch_runs = [(r.records_in, r.accepted, r.quarantined) for r in runs if r.source_kind == "batch"]
    assert batch_runs == [(12, 9, 3)]


def slow_source(
    env: Env, replayer: IngestionService, attempts: list[BaseException | list[int]]
) -> Iterator[pa.Table]:
    """Three chunks; between the first two the run waits 2.5 leases (a slow read of its source), and
    meanwhile a replay tries to write the run's online part; after the last one the source fails."""
    yield chunk(0)
    time.sleep(2.5 * LEASE_S)
    (run,) = [r for r in env.service.list_runs("climate") if r.source_kind == "batch"]
    parts = env.service.list_quarantined(status="online_pending", run_id=run.run_id)
    try:
        attempts.append(replayer.replay([p.id for p in parts], {}).replayed)
    except FailedPrecondition as refused:
        attempts.append(refused)
    yield chunk(1)
    yield chunk(2)
    raise OSError("the source could not be read past its third chunk")


def renewed_source(
    env: Env, replayer: IngestionService, attempts: list[BaseException | list[int]]
) -> Iterator[pa.Table]:
    """Three chunks; between the first two the run waits on its source until its hold has been renewed
    past the moment it would have lapsed unrenewed (one lease after it was filed), and a replay then tries
    to write the run's online part; after the last one the source fails.

    It waits for that renewal, not for a fixed time: on a loaded host a renewal may come late (a slow
    commit), and a replay after a fixed 2.5 leases then found lapsed a hold the run was renewing all
    along. The replay comes as soon as a renewal younger than a quarter lease is seen, so only a stall of
    most of a lease between the test's own two statements would let it take the record over."""
    yield chunk(0)
    (run,) = [r for r in env.service.list_runs("climate") if r.source_kind == "batch"]

    def held_part() -> QuarantinedRecord:
        (part,) = env.service.list_quarantined(status="online_pending", run_id=run.run_id)
        return part

    def fresh_renewal_past_the_lease(part: QuarantinedRecord) -> bool:
        return part.updated_at_us >= lapses_at_us and now_us() - part.updated_at_us < LEASE_US // 4

    lapses_at_us = held_part().updated_at_us + LEASE_US  # unrenewed, the hold is a replay's from then
    deadline = time.monotonic() + 60
    while not fresh_renewal_past_the_lease(part := held_part()):
        assert time.monotonic() < deadline, "the run did not renew its hold past its first lease in 60 s"
        time.sleep(0.01)
    try:
        attempts.append(replayer.replay([part.id], {}).replayed)
    except FailedPrecondition as refused:
        attempts.append(refused)
    yield chunk(1)
    yield chunk(2)
    raise OSError("the source could not be read past its third chunk")


def test_a_run_renews_its_hold_so_a_replay_cannot_take_its_online_part_over(any_env: Env) -> None:
    """The run's hold is renewed while it waits on its source: the replay is refused, as for any record
    another writer holds. Before, nothing renewed it between chunks: the replay took the record over,
    wrote the first chunk's values and marked it replayed, and what the run stored after that was named
    by no record; its source failing then left those rows stored and counted with no online value."""
    env = any_env
    runner = IngestionService(env.sessions, env.registry, env.offline, env.client, claim_lease_s=LEASE_S)
    replayer = IngestionService(env.sessions, env.registry, env.offline, env.client, claim_lease_s=LEASE_S)
    attempts: list[BaseException | list[int]] = []
    with pytest.raises(Internal, match=r"past its third chunk.*do not ingest them again"):
        runner.ingest("climate", 1, renewed_source(env, replayer, attempts))

    (attempt,) = attempts
    assert isinstance(attempt, FailedPrecondition), f"a replay took the live run's record over: {attempt}"
    assert "written online by the batch run" in str(attempt)
    (run,) = [r for r in env.service.list_runs("climate") if r.source_kind == "batch"]
    parts = env.service.list_quarantined(status="online_pending", run_id=run.run_id)
    assert [p.updated_at_us for p in parts] == [0]  # handed to the next replay when the source failed
    assert replayer.replay([p.id for p in parts], {}).replayed == [p.id for p in parts]
    assert online_temperatures(env) == pytest.approx([21.0, 22.0, 23.0])  # the last chunk's rows
    every_row_once(env)


def test_a_run_that_lost_its_hold_files_what_it_stores_after_in_a_record_of_its_own(any_env: Env) -> None:
    """The run cannot renew in time (a stall: its renewals come every hour here), so the replay takes
    its online part over and writes the first chunk's values. The run finds out at its next chunk's
    commit and files that chunk's and later chunks' files in a new record of the run, which its failing
    source hands to the next replay: no stored, counted row is left without its online value."""
    env = any_env
    runner = BatchMaterializer(env.sessions, env.offline, env.client, lease_s=LEASE_S, renew_every_s=3600)
    replayer = IngestionService(env.sessions, env.registry, env.offline, env.client, claim_lease_s=LEASE_S)
    attempts: list[BaseException | list[int]] = []
    view = env.registry.get_feature_view("climate", 1)
    entity = env.registry.get_entity(view.spec.entity)
    with pytest.raises(Internal, match=r"past its third chunk.*do not ingest them again"):
        runner.materialize(view, entity, slow_source(env, replayer, attempts))

    (attempt,) = attempts
    assert isinstance(attempt, list) and len(attempt) == 1, attempt  # taken over, written, marked
    assert online_temperatures(env) == pytest.approx([1.0, 2.0, 3.0])
    (run,) = [r for r in env.service.list_runs("climate") if r.source_kind == "batch"]
    parts = env.service.list_quarantined(status="online_pending", run_id=run.run_id)
    assert len(parts) == 1 and parts[0].id != attempt[0], parts
    assert replayer.replay([p.id for p in parts], {}).replayed == [p.id for p in parts]
    assert online_temperatures(env) == pytest.approx([21.0, 22.0, 23.0])
    every_row_once(env)


def test_a_renewal_whose_answer_was_lost_is_not_taken_for_a_replays_takeover(
    any_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """FAULT (an ``after_commit`` hook, named ``lose_answer``): one renewal's COMMIT lands but its answer
    is lost, as when the connection drops after COMMIT reached the database. The run kept the stamp it
    knew, so its next renewal changed no row and it took the hold for lost to a replay: it filed its
    later chunks in a record of their own and finished OK leaving the first record pending for good, held
    by nobody. Now it tries the unconfirmed stamp too."""
    env = any_env
    lost: list[str] = []

    def lose_answer(session: Session) -> None:
        if threading.current_thread().name.startswith("hold-") and not lost:
            lost.append("once")
            raise sqlalchemy.exc.OperationalError(
                "COMMIT", {}, Exception("server closed the connection unexpectedly")
            )

    def source() -> Iterator[pa.Table]:
        yield chunk(0)
        time.sleep(1.0)  # several renewals
        yield chunk(1)
        yield chunk(2)

    runner = BatchMaterializer(env.sessions, env.offline, env.client, lease_s=3600.0, renew_every_s=0.2)
    view = env.registry.get_feature_view("climate", 1)
    entity = env.registry.get_entity(view.spec.entity)
    event.listen(env.sessions, "after_commit", lose_answer)
    try:
        outcome = runner.materialize(view, entity, source())
    finally:
        event.remove(env.sessions, "after_commit", lose_answer)
    assert lost == ["once"]
    assert not any("lost its hold" in r.getMessage() for r in caplog.records)
    assert env.service.list_quarantined(status="online_pending", run_id=outcome.run_id) == []
    assert online_temperatures(env) == pytest.approx([21.0, 22.0, 23.0])
    every_row_once(env)
