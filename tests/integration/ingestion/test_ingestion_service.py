"""The transport-free ingestion service against a real redis-server, a real SQLite file and a real offline
store: what a batch run and a replay write when input is bad, and that nothing half-written remains."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa

from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env

NOW = datetime.now(UTC).replace(microsecond=0)


def offline_rows(env: Env, view: str) -> list[object]:
    """The join keys of the offline rows of ``view`` v1, in write order."""
    return [key for batch in env.offline.scan(view, 1) for key in batch.column("sensor_id").to_pylist()]


def test_a_nan_join_key_is_quarantined_and_the_rest_of_the_run_reaches_both_stores(env: Env) -> None:
    # pandas stores an int key column with a gap as float64 with NaN.
    table = pa.table(
        {
            "sensor_id": pa.array([1.0, float("nan")]),
            "event_ts": [NOW, NOW],
            "temperature_c": [20.0, 21.0],
            "mode": [1, 2],
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    assert env.client.get(online_key("sensor", ["1"], "climate", 1)) is not None
    assert offline_rows(env, "climate") == [1]
    (record,) = env.service.list_quarantined(view="climate")
    assert "sensor_id: required join key is null (NaN or missing)" in record.reason
    assert json.loads(record.payload)["sensor_id"] == "NaN"
