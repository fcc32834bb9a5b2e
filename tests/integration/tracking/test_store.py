"""The tracking core on a real database: eight concurrent writers (each with its own engine, as separate
processes would have) never see "database is locked", and mutations of experiments and runs are audited
while metric points are not: one batch that starts, changes and ends many runs appends every entry to
one chain that verifies. On PostgreSQL, a row another transaction commits between a check and the insert
(an experiment name, a started run, a parameter), interleaved by hand, is the same answer as one that was
there before the check, never INTERNAL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import AlreadyExists, InvalidArgument
from control_plane.audit.tables import AuditEntryRow
from control_plane.audit.verify import verify_chain
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.tracking.store import TrackingStore
from control_plane.tracking.tables import ExperimentRow, ParamRow, RunRow
from tests.support.pg_interleave import HeldTransaction, race_against
from tests.support.postgres_server import PostgresServer


def test_eight_concurrent_writers_never_hit_database_is_locked(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    experiment_id = (
        TrackingStore(create_session_factory(engine)).create_experiment("c", actor="t").experiment_id
    )
    writers, batches, steps = 8, 10, 50
    start = threading.Barrier(writers)

    def write(index: int) -> str:
        own = create_db_engine(db_url)
        try:
            store = TrackingStore(create_session_factory(own))
            start.wait()
            run_id = store.create_run(experiment_id, f"w{index}", {"writer": str(index)}, actor="t").run_id
            for batch in range(batches):
                step_range = range(batch * steps, (batch + 1) * steps)
                series = [
                    pb.MetricSeries(key=key, values=[float(s) for s in step_range], steps=step_range)
                    for key in ("loss", "acc")
                ]
                store.log_batch(
                    [pb.RunBatch(run_id=run_id, metrics=series, tags={"batch": str(batch)})], actor="t"
                )
                store.compare(experiment_id, filter="metrics.loss >= 0")  # readers interleave with writers
            store.update_run(run_id, pb.RUN_STATUS_FINISHED, actor="t")
            return run_id
        finally:
            own.dispose()

    with ThreadPoolExecutor(writers) as pool:
        run_ids = list(pool.map(write, range(writers)))

    store = TrackingStore(create_session_factory(engine))
    for run_id in run_ids:
        run = store.get_run(run_id)
        assert run.status == pb.RUN_STATUS_FINISHED
        assert {m.key: m.count for m in run.metrics} == {"acc": batches * steps, "loss": batches * steps}
        assert list(store.metric_history(run_id, "loss")[0].values) == [
            float(s) for s in range(batches * steps)
        ]
    page = store.compare(experiment_id, filter=f"metrics.loss = {batches * steps - 1}")
    assert page.total_count == writers
    engine.dispose()


def test_experiment_and_run_mutations_are_audited_but_points_are_not(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    store = TrackingStore(sessions)
    experiment = store.create_experiment("audited", actor="alice")
    run_id = store.create_run(
        experiment.experiment_id, "r", {"lr": "0.1"}, start_time_us=100, actor="alice"
    ).run_id
    points = pb.MetricSeries(key="loss", values=[1.0, 0.5], steps=[0, 1])
    store.log_batch([pb.RunBatch(run_id=run_id, metrics=[points])], actor="bob")  # points only: no entry
    end = pb.RunEnd(status=pb.RUN_STATUS_FINISHED, end_time_us=123)
    store.log_batch([pb.RunBatch(run_id=run_id, tags={"note": "x"}, end=end)], actor="bob")
    with sessions() as session:
        entries = session.scalars(select(AuditEntryRow).order_by(AuditEntryRow.seq)).all()
        described = [(e.actor, e.action, e.object_type, e.object_id) for e in entries]
        assert described == [
            ("alice", "create", "experiment", experiment.experiment_id),
            ("alice", "create", "run", run_id),
            ("bob", "update", "run", run_id),  # the tag
            ("bob", "update", "run", run_id),  # the status
        ]
        assert entries[1].after["params"] == {"lr": "0.1"}
        assert entries[3].before["status"] == "RUNNING"
        assert entries[3].after == {"status": "FINISHED", "end_time_us": 123}
    engine.dispose()


def test_a_log_batch_audits_what_it_changes_and_nothing_for_what_it_repeats(db_url: str) -> None:
    """The audit log records changes (as UpdateRun's since it stopped auditing RUNNING to RUNNING): a
    LogBatch re-sending tags with the values they have, or repeating an ended run's status and end time (a
    shipper's retry, a client re-sending its state), appended an entry whose after was the stored state.
    Such a part now appends nothing, while its points are still written; a part that changes something
    gets an entry naming only what it changed, a tag set twice in one request included."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    store = TrackingStore(sessions)
    experiment_id = store.create_experiment("e", actor="t").experiment_id
    run_id = store.create_run(
        experiment_id, "r", {"lr": "0.1"}, {"a": "1"}, start_time_us=100, actor="t"
    ).run_id
    points = pb.MetricSeries(key="loss", values=[1.0], steps=[0])
    finished = pb.RunEnd(status=pb.RUN_STATUS_FINISHED, end_time_us=123)

    def entries_after(log: list[pb.RunBatch]) -> list[tuple[Any, Any]]:
        with sessions() as session:
            last = session.scalar(select(func.max(AuditEntryRow.seq)))
        store.log_batch(log, actor="t")
        with sessions() as session:
            rows = session.execute(
                select(AuditEntryRow.before, AuditEntryRow.after)
                .where(AuditEntryRow.seq > last)
                .order_by(AuditEntryRow.seq)
            ).all()
        return [(row.before, row.after) for row in rows]

    assert entries_after([pb.RunBatch(run_id=run_id, params={"lr": "0.1"}, tags={"a": "1"})]) == []
    assert entries_after([pb.RunBatch(run_id=run_id, tags={"a": "1", "b": "2"})]) == [
        (None, {"params": {}, "tags": {"b": "2"}})
    ]
    twice = [
        pb.RunBatch(run_id=run_id, tags={"a": "3"}),
        pb.RunBatch(run_id=run_id, tags={"a": "3", "b": "2"}),
    ]
    assert entries_after(twice) == [(None, {"params": {}, "tags": {"a": "3"}})]
    assert entries_after([pb.RunBatch(run_id=run_id, end=finished)]) == [
        ({"status": "RUNNING", "end_time_us": 0}, {"status": "FINISHED", "end_time_us": 123})
    ]
    repeated = pb.RunBatch(
        run_id=run_id, metrics=[points], params={"lr": "0.1"}, tags={"a": "3"}, end=finished
    )
    assert entries_after([repeated, repeated]) == []
    assert list(store.metric_history(run_id, "loss")[0].values) == [1.0, 1.0]  # points still written
    failed = pb.RunEnd(status=pb.RUN_STATUS_FAILED, end_time_us=123)
    assert entries_after([pb.RunBatch(run_id=run_id, end=failed)]) == [
        ({"status": "FINISHED", "end_time_us": 123}, {"status": "FAILED", "end_time_us": 123})
    ]
    run = store.get_run(run_id)
    assert (run.status, run.end_time_us, dict(run.tags)) == (pb.RUN_STATUS_FAILED, 123, {"a": "3", "b": "2"})
    assert verify_chain(sessions).ok
    engine.dispose()


def test_one_batch_of_many_runs_audits_every_start_change_and_end_in_one_valid_chain(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    store = TrackingStore(sessions)
    experiment = store.create_experiment("sweep", actor="alice")
    run_ids = [f"{index:032x}" for index in range(1, 6)]
    points = pb.MetricSeries(key="loss", values=[1.0, 0.5], steps=[0, 1])
    batches = [
        pb.RunBatch(
            run_id=run_id,
            start=pb.RunStart(
                experiment_id=experiment.experiment_id,
                name=f"r{index}",
                params={"i": str(index)},
                start_time_us=1,
            ),
            metrics=[points],
            params={"seed": "7"} if index % 2 else {},
            tags={"round": "1"},
            end=pb.RunEnd(status=pb.RUN_STATUS_FINISHED, end_time_us=1_000 + index),
        )
        for index, run_id in enumerate(run_ids)
    ]
    assert store.log_batch(batches, actor="bob") == 2 * len(run_ids)

    with sessions() as session:
        entries = session.scalars(select(AuditEntryRow).order_by(AuditEntryRow.seq)).all()
    assert [(e.action, e.object_id) for e in entries[1:]] == [
        *[("create", run_id) for run_id in run_ids],
        *[(action, run_id) for run_id in run_ids for action in ("update", "update")],
    ]
    creates, changes = entries[1:6], entries[6:]
    assert [e.after["params"] for e in creates] == [{"i": str(index)} for index in range(5)]
    assert [e.after for e in changes[0::2]] == [
        {"params": {"seed": "7"} if index % 2 else {}, "tags": {"round": "1"}} for index in range(5)
    ]
    assert [(e.before, e.after) for e in changes[1::2]] == [
        ({"status": "RUNNING", "end_time_us": 0}, {"status": "FINISHED", "end_time_us": 1_000 + index})
        for index in range(5)
    ]
    assert verify_chain(sessions).ok
    for index, run_id in enumerate(run_ids):
        run = store.get_run(run_id)
        assert (run.status, run.end_time_us) == (pb.RUN_STATUS_FINISHED, 1_000 + index)
        assert dict(run.params) == {"i": str(index), **({"seed": "7"} if index % 2 else {})}
        assert dict(run.tags) == {"round": "1"}
    engine.dispose()


def test_a_parameter_logged_twice_in_one_request_is_one_row_or_refused(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    store = TrackingStore(create_session_factory(engine))
    experiment = store.create_experiment("twice", actor="t")
    run_id = store.create_run(experiment.experiment_id, "r", actor="t").run_id
    same = [pb.RunBatch(run_id=run_id, params={"lr": "0.1"}, tags={"t": str(i)}) for i in range(2)]
    store.log_batch(same, actor="t")
    run = store.get_run(run_id)
    assert (dict(run.params), dict(run.tags)) == ({"lr": "0.1"}, {"t": "1"})  # the last tag value wins
    different = [pb.RunBatch(run_id=run_id, params={"wd": value}) for value in ("1", "2")]
    with pytest.raises(InvalidArgument, match=r"'wd'.*immutable"):
        store.log_batch(different, actor="t")
    assert "wd" not in store.get_run(run_id).params  # the request was all or nothing
    engine.dispose()


def test_metric_history_pages_in_order_without_repeats_and_unpaged_is_whole(db_url: str) -> None:
    """Pages follow (step, timestamp, logging order) with ties split across pages, a point logged between
    pages after the cursor shows up later, and a request without paging fields still gets every point
    (a client that predates paging must not see a silently truncated series)."""
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    store = TrackingStore(create_session_factory(engine))
    experiment_id = store.create_experiment("h", actor="t").experiment_id
    run_id = store.create_run(experiment_id, "r", actor="t").run_id

    def log(values: list[float], steps: list[int], times: list[int]) -> None:
        series = pb.MetricSeries(key="loss", values=values, steps=steps, timestamps_us=times)
        store.log_batch([pb.RunBatch(run_id=run_id, metrics=[series])], actor="t")

    log([0.0, 1.0, 2.0, 3.0], [5, 2, 5, 2], [10, 10, 10, 5])
    log([4.0, 5.0, 6.0], [2, 5, 1], [5, 10, 99])
    whole, token = store.metric_history(run_id, "loss")
    assert token == ""
    assert list(whole.values) == [6.0, 3.0, 4.0, 1.0, 0.0, 2.0, 5.0]
    pages, token = [], ""
    while True:
        page, token = store.metric_history(run_id, "loss", page_size=2, page_token=token)
        pages.append(list(page.values))
        if len(pages) == 2:
            log([7.0, 8.0], [0, 9], [0, 0])  # 0 sorts before the cursor (missed), 9 after it (returned)
        if not token:
            break
    assert pages == [[6.0, 3.0], [4.0, 1.0], [0.0, 2.0], [5.0, 8.0]]
    assert list(store.metric_history(run_id, "loss", page_size=10**9)[0].steps) == [0, 1, 2, 2, 2, 5, 5, 5, 9]

    other = store.create_run(experiment_id, "other", actor="t").run_id
    _, first_token = store.metric_history(run_id, "loss", page_size=1)
    with pytest.raises(InvalidArgument, match="different run or metric"):
        store.metric_history(other, "loss", page_token=first_token)
    with pytest.raises(InvalidArgument, match="malformed"):
        store.metric_history(run_id, "loss", page_token="not-a-token")
    with pytest.raises(InvalidArgument, match="page_size must not be negative"):
        store.metric_history(run_id, "loss", page_size=-1)
    engine.dispose()


def test_an_experiment_created_concurrently_under_the_same_name_is_already_exists_on_postgresql(
    postgres_server: PostgresServer,
) -> None:
    """The other transaction's row is uncommitted when create_experiment checks the name, and commits
    while its insert waits on the unique index: ALREADY_EXISTS naming the experiment, not INTERNAL."""
    engine = create_db_engine(postgres_server.fresh_url())
    upgrade_to_head(engine)
    store = TrackingStore(create_session_factory(engine))

    def hold(held: HeldTransaction) -> None:
        row = {"experiment_id": "f" * 32, "name": "raced", "description": "", "tags": {}, "created_at_us": 1}
        held.execute(insert(ExperimentRow), row)

    with pytest.raises(AlreadyExists, match="experiment 'raced' already exists"):
        race_against(engine, hold, lambda: store.create_experiment("raced", actor="t"))
    assert store.get_experiment(name="raced").experiment_id == "f" * 32
    engine.dispose()


def _store_on_postgresql(server: PostgresServer) -> tuple[Engine, TrackingStore]:
    engine = create_db_engine(server.fresh_url())
    upgrade_to_head(engine)
    return engine, TrackingStore(create_session_factory(engine))


def _pk(engine: Engine, column: Any, key_column: Any, key: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(column).where(key_column == key)).scalar_one())


@pytest.mark.parametrize("same_experiment", [True, False])
def test_a_run_started_by_a_concurrent_log_batch_is_skipped_and_the_points_kept_on_postgresql(
    postgres_server: PostgresServer, same_experiment: bool
) -> None:
    """Another LogBatch inserts the run after this one found it missing and commits while this one's
    insert waits: the start is skipped as for any existing run and the points are written, or, when the
    run is in another experiment, ALREADY_EXISTS as before; never INTERNAL with the points lost."""
    engine, store = _store_on_postgresql(postgres_server)
    ours = store.create_experiment("ours", actor="t").experiment_id
    theirs = store.create_experiment("theirs", actor="t").experiment_id
    holder = _pk(engine, ExperimentRow.id, ExperimentRow.experiment_id, ours if same_experiment else theirs)
    run_id = "a" * 32

    def hold(held: HeldTransaction) -> None:
        row = {"run_id": run_id, "experiment_pk": holder, "name": "first", "status": "RUNNING"}
        held.execute(insert(RunRow), {**row, "start_time_us": 1, "end_time_us": 0})

    points = pb.MetricSeries(key="loss", values=[0.5, 0.25], steps=[0, 1])
    batch = pb.RunBatch(run_id=run_id, start=pb.RunStart(experiment_id=ours, name="second"), metrics=[points])
    if not same_experiment:
        with pytest.raises(AlreadyExists, match=f"run '{run_id}' already exists in another experiment"):
            race_against(engine, hold, lambda: store.log_batch([batch], actor="t"))
        assert store.get_run(run_id).name == "first"
        engine.dispose()
        return
    assert race_against(engine, hold, lambda: store.log_batch([batch], actor="t")) == 2
    assert store.get_run(run_id).name == "first"  # the start of an existing run is skipped
    assert list(store.metric_history(run_id, "loss")[0].values) == [0.5, 0.25]
    engine.dispose()


@pytest.mark.parametrize("stored", ["0.1", "0.2"])
def test_a_parameter_stored_by_a_concurrent_log_batch_is_no_conflict_when_equal_on_postgresql(
    postgres_server: PostgresServer, stored: str
) -> None:
    """Another LogBatch stores the parameter after this one read it absent and commits while this one's
    insert waits: the same value is idempotent (and the batch's points are kept), another value is the
    usual INVALID_ARGUMENT of an immutable parameter; never INTERNAL."""
    engine, store = _store_on_postgresql(postgres_server)
    experiment_id = store.create_experiment("e", actor="t").experiment_id
    run_id = store.create_run(experiment_id, "r", actor="t").run_id
    run_pk = _pk(engine, RunRow.id, RunRow.run_id, run_id)

    def hold(held: HeldTransaction) -> None:
        held.execute(insert(ParamRow), {"run_pk": run_pk, "key": "lr", "value": stored})

    points = pb.MetricSeries(key="loss", values=[0.5], steps=[0])
    batch = pb.RunBatch(run_id=run_id, params={"lr": "0.1", "wd": "0"}, metrics=[points])
    if stored != "0.1":
        with pytest.raises(InvalidArgument, match=r"parameter 'lr' of run \w+ is already '0.2' .*immutable"):
            race_against(engine, hold, lambda: store.log_batch([batch], actor="t"))
        assert dict(store.get_run(run_id).params) == {"lr": "0.2"}  # all or nothing
        engine.dispose()
        return
    assert race_against(engine, hold, lambda: store.log_batch([batch], actor="t")) == 1
    assert dict(store.get_run(run_id).params) == {"lr": "0.1", "wd": "0"}
    with engine.connect() as connection:
        audited = connection.execute(
            select(AuditEntryRow.after).where(AuditEntryRow.object_id == run_id).order_by(AuditEntryRow.seq)
        ).scalars()
        assert list(audited)[-1] == {"params": {"wd": "0"}, "tags": {}}  # only what this request added
    engine.dispose()
