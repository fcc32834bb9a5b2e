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

