"""Bad rows of unusual shapes are quarantined, each counted once: records in = accepted + quarantined
(a real SQLite quarantine, offline store and redis-server)."""

from __future__ import annotations

import pyarrow as pa

from tests.integration.ingestion.conftest import Env


def test_rows_of_a_table_without_columns_are_quarantined_not_an_internal_error(env: Env) -> None:
    """Arrow holds rows without columns (an IPC record batch of length 2 and no fields): each record lacks
    its key and timestamp. Its quarantined copy was built from ``to_pylist``, which gives no row for a
    table of no columns, and the run failed with ArrowInvalid ("expected length 2 but got length 0")."""
    rows_only = pa.table({"dropped": [None, None]}).drop_columns(["dropped"])
    assert (rows_only.num_rows, rows_only.num_columns) == (2, 0)

    outcome = env.service.ingest("climate", 1, [rows_only])

    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 0, 2)
    held = env.service.list_quarantined(run_id=outcome.run_id)
    assert sorted(record.payload for record in held) == ["{}", "{}"]
    assert all("sensor_id: required join key missing" in record.reason for record in held)
    (run,) = env.service.list_runs("climate")
    assert (run.records_in, run.accepted, run.quarantined) == (2, 0, 2)


def test_a_replay_of_a_record_without_fields_quarantines_it_again_not_marks_it_replayed(env: Env) -> None:
    """A payload of no fields (``{}``: a record of a table without columns, or a correction that left
    nothing) is a record all the same. Read back as a table of no columns it was a table of no rows, so
    validation saw no record to refuse, and the replay marked it replayed with nothing written or counted:
    the record was gone."""
    record_id = env.quarantine("climate", {}, "sensor_id: required join key missing")
    corrected = env.quarantine("climate", {"sensor_id": 1}, "event_ts: timestamp missing", key="1")

    replay = env.service.replay([record_id, corrected], {corrected: "{}"})

    assert replay.replayed == []
    assert sorted(record.id for record in replay.still_quarantined) == [record_id, corrected]
    assert all("sensor_id: required join key missing" in r.reason for r in replay.still_quarantined)
    assert env.service.get_quarantined(record_id).status == "quarantined"
    assert sum(batch.num_rows for batch in env.offline.scan("climate", 1)) == 0
    runs = env.service.list_runs("climate")
    assert all(run.records_in == run.accepted + run.quarantined for run in runs)
    assert sum(run.accepted for run in runs) == 0
