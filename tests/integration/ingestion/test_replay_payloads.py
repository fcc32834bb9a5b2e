"""A quarantined record's payload replays as the record it was: the values its original batch held read
back as validation read them then (a real SQLite quarantine, offline store and redis-server)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pyarrow as pa

from control_plane.ingestion.records import records_table
from tests.integration.ingestion.conftest import Env

NOW = datetime.now(UTC).replace(microsecond=0)


def test_an_extra_all_nan_column_of_a_quarantined_record_does_not_refuse_its_replay(env: Env) -> None:
    """A pandas frame's extra float column of NaN rejects nothing (NaN counts as null), but the payload
    writes NaN as the string "NaN", and a replayed column of only such words was read as text: the
    record was refused again, "note: unknown column", and could never be replayed."""
    table = pa.table(
        {
            "sensor_id": [1, 2, 3],
            "event_ts": [NOW] * 3,
            "temperature_c": [20.0, None, None],  # 2/3 null, above the batch's max 0.5: both quarantined
            "mode": [1, 1, 1],
            "note": [math.nan] * 3,
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (3, 1, 2)
    held = env.service.list_quarantined(run_id=outcome.run_id)
    assert all('"note": "NaN"' in record.payload for record in held)

    # Judged alone (a replay), a record's null is its own: both pass, each written and counted once.
    replay = env.service.replay([record.id for record in held], {})
    assert [record.reason for record in replay.still_quarantined] == []
    assert sorted(replay.replayed) == sorted(record.id for record in held)
    assert sum(batch.num_rows for batch in env.offline.scan("climate", 1)) == 3
    runs = env.service.list_runs("climate")
    assert all(run.records_in == run.accepted + run.quarantined for run in runs)
    assert sum(run.accepted for run in runs) == 3


def test_a_nan_word_stays_text_in_a_column_registered_as_a_string() -> None:
    """Where the version registers a string (a string join key, say a sensor named "NaN"), the word is
    the string it was, not a float's NaN (which the key's cast would read as a missing key)."""
    records = [{"sensor_id": "NaN", "note": "NaN"}, {"sensor_id": "Infinity", "note": None}]
    table = records_table(records, text_columns={"sensor_id"})
    assert table.column("sensor_id").to_pylist() == ["NaN", "Infinity"]
    assert table.column("note").type == pa.float64() and math.isnan(table.column("note")[0].as_py())
