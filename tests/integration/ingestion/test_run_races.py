"""Batch runs racing other writers, with the interleaving forced (a transaction held open on PostgreSQL,
a source that acts between its chunks), never left to timing: two runs of one source at once, and a
run whose view version is retired while it runs."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine

from control_plane.ingestion import quarantine
from control_plane.ingestion.quarantine import RunSource, record_outcome, supersede
from control_plane.ingestion.validation import validate
from tests.integration.ingestion.conftest import Env
from tests.support.pg_interleave import HeldTransaction

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
