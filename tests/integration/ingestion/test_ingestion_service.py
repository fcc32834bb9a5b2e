"""The transport-free ingestion service against a real redis-server, a real SQLite file and a real offline
store: what a batch run and a replay write when input is bad, and that nothing half-written remains."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1 import types_pb2 as t
from clients.errors import FailedPrecondition, Internal, InvalidArgument
from clients.uris import redact_uri
from control_plane.audit.query import iter_entries
from control_plane.audit.tables import AuditEntryRow
from control_plane.audit.verify import verify_chain
from control_plane.db import read_session, write_session
from control_plane.ingestion import quarantine
from control_plane.ingestion.parquet_source import PARQUET_BATCH_ROWS
from control_plane.ingestion.quarantine import IN_LIST_SLICE, RunSource, record_outcome
from control_plane.ingestion.tables import IngestionRunRow, QuarantineRow
from control_plane.ingestion.window import Window
from kernels.online_keys import online_key
from tests.integration.ingestion.conftest import Env
from tests.support.row_ids import INT32_MAX, next_ids_just_below_int32_max
from tests.support.s3_server import FakeS3Server

NOW = datetime.now(UTC).replace(microsecond=0)
ACCESS_KEY = "AKIAAETHERSECRETID77"
SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


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


def test_a_replay_refused_by_a_later_group_writes_nothing(env: Env) -> None:
    event = {"sensor_id": "5", "event_ts": NOW.isoformat(), "amount": "oops"}
    row = {"sensor_id": 5, "event_ts": NOW.isoformat(), "temperature_c": 99.0, "mode": 1}
    clicks = env.quarantine("clicks", event, "amount: bad", key="1-0")
    climate = env.quarantine("climate", row, "temperature_c: above max")
    fixed = json.dumps({**event, "amount": "3.5"})
    with pytest.raises(InvalidArgument, match=f"record {climate}: payload is not JSON"):
        env.service.replay([clicks, climate], {clicks: fixed, climate: "{not json"})
    assert env.client.exists("events:clicks") == 0  # the valid first group was not published either
    assert env.service.get_quarantined(clicks).status == quarantine.QUARANTINED
    assert [run.source_kind for run in env.service.list_runs()] == ["batch", "batch"]


def test_a_replay_failing_in_a_later_write_keeps_the_written_groups_replayed(
    env: Env, tmp_path: Path
) -> None:
    event = {"sensor_id": "5", "event_ts": NOW.isoformat(), "amount": "oops"}
    row = {"sensor_id": 5, "event_ts": NOW.isoformat(), "temperature_c": 99.0, "mode": 1}
    clicks = env.quarantine("clicks", event, "amount: bad", key="1-0")
    climate = env.quarantine("climate", row, "temperature_c: above max")
    fixed = {clicks: json.dumps({**event, "amount": "3.5"}), climate: json.dumps({**row, "temperature_c": 9})}
    # A real fault in the second group's write: a file where the offline store's folder should be.
    (tmp_path / "offline").write_text("not a folder")
    with pytest.raises(OSError):
        env.service.replay([clicks, climate], fixed)
    assert env.client.xlen("events:clicks") == 1
    assert env.service.get_quarantined(clicks).status == quarantine.REPLAYED
    assert env.service.get_quarantined(climate).status == quarantine.QUARANTINED
    replays = [run for run in env.service.list_runs() if run.source_kind == "replay"]
    # Published to the stream: its stream run counts the event in, not the replay run.
    assert [(run.records_in, run.accepted, run.quarantined, run.published) for run in replays] == [
        (0, 0, 0, 1)
    ]

    # Replaying again cannot publish the event twice: only the unwritten record is still quarantined.
    with pytest.raises(FailedPrecondition, match=f"record {clicks} is replayed"):
        env.service.replay([clicks, climate], {climate: fixed[climate]})
    (tmp_path / "offline").unlink()
    assert env.service.replay([climate], {climate: fixed[climate]}).replayed == [climate]
    assert env.client.xlen("events:clicks") == 1
    assert offline_rows(env, "climate") == [5]


def test_a_replay_of_several_views_counts_each_views_records_in_a_run_of_its_own(env: Env) -> None:
    event = {"sensor_id": "5", "event_ts": NOW.isoformat(), "amount": "oops"}
    row = {"sensor_id": 5, "event_ts": NOW.isoformat(), "temperature_c": 99.0, "mode": 1}
    clicks = env.quarantine("clicks", event, "amount: bad", key="1-0")
    fixed_climate = env.quarantine("climate", row, "temperature_c: above max", key="0")
    still_climate = env.quarantine("climate", {**row, "sensor_id": 6}, "temperature_c: above max", key="1")
    fixed = {
        clicks: json.dumps({**event, "amount": "3.5"}),
        fixed_climate: json.dumps({**row, "temperature_c": 21.0}),
    }
    outcome = env.service.replay([clicks, fixed_climate, still_climate], fixed)
    assert outcome.replayed == [clicks, fixed_climate]
    # One run filed all three records under clicks: climate's replay counted nowhere.
    replays = [run for run in env.service.list_runs() if run.source_kind == "replay"]
    counts = sorted(
        (run.view, run.records_in, run.accepted, run.quarantined, run.published) for run in replays
    )
    assert counts == [("clicks", 0, 0, 0, 1), ("climate", 2, 1, 1, 0)]
    assert outcome.run_ids == [run.run_id for run in sorted(replays, key=lambda run: run.view)]


def test_a_retired_version_is_neither_ingested_into_nor_replayed_into(env: Env) -> None:
    row = {"sensor_id": 5, "event_ts": NOW.isoformat(), "temperature_c": 99.0, "mode": 1}
    record = env.quarantine("climate", row, "temperature_c: above max")
    env.registry.deprecate_version("climate", 1)
    env.registry.retire_version("climate", 1)
    table = pa.table({"sensor_id": [1], "event_ts": [NOW], "temperature_c": [20.0], "mode": [1]})
    retired = "feature view 'climate' version 1 is retired"
    with pytest.raises(FailedPrecondition, match=retired):
        env.service.ingest("climate", 1, [table])
    with pytest.raises(FailedPrecondition, match=retired):
        env.service.replay([record], {record: json.dumps({**row, "temperature_c": 21.0})})
    # Nothing serves the version: its rows were written offline and online and counted for no reader.
    assert offline_rows(env, "climate") == []
    assert env.client.get(online_key("sensor", ["1"], "climate", 1)) is None
    assert [run.source_kind for run in env.service.list_runs("climate")] == ["batch"]
    assert env.service.get_quarantined(record).status == quarantine.QUARANTINED


def test_a_parquet_int64_beyond_2_53_is_checked_exactly_and_a_missing_file_is_a_bad_argument(
    env: Env, tmp_path: Path
) -> None:
    spec = pb.FeatureViewSpec(
        name="counts",
        entity="sensor",
        features=[pb.Feature(name="n", value_type=t.INT64, validation=pb.ValidationRule(max_value=2.0**53))],
    )
    env.registry.create_feature_view(spec, pb.FeatureViewMetadata())
    path = tmp_path / "counts.parquet"
    pq.write_table(
        pa.table({"sensor_id": [1, 2], "event_ts": [NOW] * 2, "n": pa.array([2**53, 2**53 + 1], pa.int64())}),
        path,
    )
    outcome = env.service.materialize_file("counts", 1, str(path))
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    (record,) = env.service.list_quarantined(view="counts")
    assert record.reason == "n: 9007199254740993 above max 9007199254740992"
    with pytest.raises(InvalidArgument, match="cannot read Parquet source"):
        env.service.materialize_file("counts", 1, str(tmp_path / "missing.parquet"))
    with pytest.raises(InvalidArgument, match="cannot read Parquet source"):
        env.service.materialize_file("counts", 1, str(tmp_path / "aether.db"))  # not Parquet
    # A relative source (a view's own uri) is read from the control plane's working directory: say which.
    with pytest.raises(InvalidArgument, match=f"relative to {re.escape(os.getcwd())}"):
        env.service.materialize_file("counts", 1, "data/missing.parquet")


def test_epoch_number_timestamps_are_quarantined_not_read_as_1970(env: Env) -> None:
    millis = int(NOW.timestamp() * 1000)
    table = pa.table(
        {"sensor_id": [1, 2], "event_ts": [millis, millis], "temperature_c": [20.0, 21.0], "mode": [1, 2]}
    )
    # A window that 1970 falls outside of: such rows must be validated (and quarantined), not skipped.
    outcome = env.service.ingest("climate", 1, [table], window=Window(start=NOW - timedelta(days=1)))
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 0, 2)
    assert outcome.skipped_outside_window == 0
    reasons = {record.reason for record in env.service.list_quarantined(view="climate")}
    assert reasons == {
        f"event_ts: {millis} is of type int64, not a time-zone-aware timestamp (accepted: a timestamp with"
        " a time zone, or an ISO 8601 string with a zone offset or Z)"
    }
    assert offline_rows(env, "climate") == []
    assert env.client.keys("*") == []


def test_a_nanosecond_record_is_quarantined_exactly_and_replays(env: Env) -> None:
    stamp = int(NOW.timestamp()) * 10**9 + 123_456_789
    table = pa.table(
        {
            "sensor_id": [1, 2],
            "event_ts": pa.array([stamp, stamp], pa.timestamp("ns", tz="UTC")),
            "temperature_c": [20.0, 99.0],
            "mode": [1, 1],
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    (record,) = env.service.list_quarantined(view="climate")
    payload = json.loads(record.payload)
    assert payload["event_ts"] == NOW.isoformat().replace("+00:00", ".123456789+00:00")
    replayed = env.service.replay([record.id], {record.id: json.dumps({**payload, "temperature_c": 21.0})})
    assert replayed.replayed == [record.id]
    stored = [
        batch.column("event_ts").cast(pa.int64()).to_pylist() for batch in env.offline.scan("climate", 1)
    ]
    assert stored == [[stamp // 1000], [stamp // 1000]]


def test_a_fully_rejected_parquet_chunk_is_quarantined_on_postgresql(
    postgresql_env: Env, tmp_path: Path
) -> None:
    """A whole chunk (65,536 rows) rejected binds one record key per row; PostgreSQL takes at most 65,535
    parameters a statement, so the keys are looked up in slices."""
    env, n = postgresql_env, PARQUET_BATCH_ROWS
    path = tmp_path / "misnamed.parquet"
    table = pa.table(
        {
            "sensor_id": pa.array(range(n), pa.int64()),
            "timestamp": pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),  # not the view's event_ts
            "temperature_c": pa.array([20.0] * n),
            "mode": pa.array([1] * n),
        }
    )
    pq.write_table(table, path)
    outcome = env.service.materialize_file("climate", 1, str(path))
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (n, 0, n)


def test_keys_a_run_already_holds_are_found_across_lookup_slices(env: Env) -> None:
    """A redelivery of more keys than one lookup binds (stream messages after a crash) quarantines only
    the new ones, wherever the slices fall."""
    run = RunSource("stream:clicks", "clicks", 1, "stream", "events:clicks")

    def deliver(keys: list[str]) -> int:
        rejected = pa.table({"payload": ["{}"] * len(keys), "reason": ["amount: bad"] * len(keys)})
        with write_session(env.sessions) as session:
            return record_outcome(session, run, accepted=0, rejected=rejected, record_keys=keys)

    held = [f"{i}-0" for i in range(0, 2 * IN_LIST_SLICE + 500, 2)]
    assert deliver(held) == len(held)
    everything = [f"{i}-0" for i in range(2 * IN_LIST_SLICE + 500)]
    assert deliver(everything) == len(everything) - len(held)
    (counts,) = env.service.list_runs("clicks")
    assert (counts.records_in, counts.quarantined) == (len(everything), len(everything))


def test_an_unchanged_record_with_whole_floats_for_integers_replays_as_it_was_ingested(env: Env) -> None:
    """pandas sends an int column with a gap as float64: 6.0 is accepted for the int64 key. Replay turned
    every JSON value into text, and the int64 cast refuses the text "6.0": the unchanged record failed
    its replay once its rule was relaxed, where the same row had passed at ingest."""
    table = pa.table(
        {
            "sensor_id": pa.array([5.0, 6.0]),
            "event_ts": [NOW, NOW],
            "temperature_c": [20.0, 75.0],
            "mode": pa.array([1.0, 2.0]),
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    (record,) = env.service.list_quarantined(view="climate")
    assert json.loads(record.payload)["sensor_id"] == 6.0
    env.registry.update_validation(
        "climate", 1, {"temperature_c": pb.ValidationRule(min_value=-40, max_value=80, max_null_fraction=0.5)}
    )
    result = env.service.replay([record.id], {})
    assert (result.replayed, result.still_quarantined) == ([record.id], [])
    assert sorted(offline_rows(env, "climate")) == [5, 6]

    # A half is still no integer, and a JSON number beyond int64 is still refused, each with its reason.
    for sensor_id, reason in (
        (6.5, "sensor_id: 6.5 not castable"),
        (2**64, "sensor_id: '18446744073709551616'"),
    ):
        bad = env.quarantine("climate", {**json.loads(record.payload), "sensor_id": sensor_id}, "x")
        (still,) = env.service.replay([bad], {}).still_quarantined
        assert still.reason.startswith(reason), still.reason


def test_a_source_uri_with_credentials_is_kept_and_echoed_without_them(env: Env) -> None:
    """Materialize kept the object store's keys of the source URI in the run and quarantine rows and the
    audit entry, and echoed them in the error for a missing file."""
    s3 = FakeS3Server()
    try:
        uri = s3.uri("climate.parquet", ACCESS_KEY, SECRET_KEY)
        table = pa.table(
            {"sensor_id": [1, 2], "event_ts": [NOW] * 2, "temperature_c": [20.0, 99.0], "mode": [1, 1]}
        )
        pq.write_table(table, uri)
        outcome = env.service.materialize_file("climate", 1, uri)
        assert (outcome.accepted, outcome.quarantined) == (1, 1)
        with pytest.raises(InvalidArgument, match="cannot read Parquet source") as missing:
            env.service.materialize_file("climate", 1, s3.uri("missing.parquet", ACCESS_KEY, SECRET_KEY))
    finally:
        s3.close()
    (record,) = env.service.list_quarantined(view="climate")
    assert record.source_id == redact_uri(uri) and record.source_id.startswith("s3://aether/climate.parquet?")
    with read_session(env.sessions) as session:
        kept = [
            *session.scalars(select(IngestionRunRow.source_id)),
            *session.scalars(select(QuarantineRow.source_id)),
            *(json.dumps(row.after) for row in session.scalars(select(AuditEntryRow))),
        ]
    for text in [*kept, str(missing.value)]:
        assert ACCESS_KEY not in text and SECRET_KEY not in text, text


def test_reason_contains_ignores_case_and_wildcards_on_every_backend(any_env: Env) -> None:
    """The filter was LIKE: case-insensitive on SQLite, case-sensitive on PostgreSQL."""
    env = any_env
    above = env.quarantine("climate", {"sensor_id": 1}, "temperature_c: 99 above max 60")
    env.quarantine("climate", {"sensor_id": 2}, "mode: 7 not in allowed values")
    percent = env.quarantine("climate", {"sensor_id": 3}, "share: 100% of rows_missing")

    def found(text: str) -> list[int]:
        return [record.id for record in env.service.list_quarantined(reason_contains=text)]

    assert found("above max") == found("ABOVE Max") == [above]
    assert found("100%") == found("ROWS_missing") == [percent]
    assert found("%") == [percent] and found("1_0") == []  # % and _ match only themselves


def test_a_reason_filter_past_its_length_bound_is_invalid_argument_on_every_backend(any_env: Env) -> None:
    """SQLite refuses a LIKE pattern over 50,000 bytes once the table has rows ("LIKE or GLOB pattern
    too complex"): a long filter came back INTERNAL. It is bounded, and refused before any query."""
    env = any_env
    long_reason = "x" * 1000
    record = env.quarantine("climate", {"sensor_id": 1}, f"{long_reason} above max")
    assert [r.id for r in env.service.list_quarantined(reason_contains=long_reason)] == [record]
    for length in (60_000, 1001):
        with pytest.raises(InvalidArgument, match=r"reason_contains: .* at most 1000 characters"):
            env.service.list_quarantined(reason_contains="x" * length)


def test_records_are_quarantined_past_32_bit_ids_on_every_backend(any_env: Env) -> None:
    """Quarantine ids were a 32-bit ``serial`` on PostgreSQL (64-bit rowids on SQLite): one id per
    rejected record, so a busy source used them up, and every run with a bad record failed INTERNAL."""
    env = any_env
    env.quarantine("climate", {"sensor_id": 1}, "before")
    engine = env.sessions.kw["bind"]
    next_ids_just_below_int32_max(engine, "quarantine")
    bad = pa.table(
        {"sensor_id": [1, 2, 3, 4], "event_ts": [NOW] * 4, "temperature_c": [99.0] * 4, "mode": [1] * 4}
    )
    outcome = env.service.ingest("climate", 1, [bad])
    assert (outcome.records_in, outcome.quarantined) == (4, 4)
    ids = [record.id for record in env.service.list_quarantined(view="climate", limit=4)]
    assert ids == [INT32_MAX + 2, INT32_MAX + 1, INT32_MAX, INT32_MAX - 1]
    assert env.service.get_quarantined(INT32_MAX + 2).id == INT32_MAX + 2
    assert [r.id for r in env.service.list_quarantined(before_id=INT32_MAX + 1, limit=1)] == [INT32_MAX]
    assert env.service.discard([INT32_MAX, INT32_MAX + 1]) == 2
    corrected = json.loads(env.service.get_quarantined(INT32_MAX + 2).payload) | {"temperature_c": 20.0}
    replayed = env.service.replay([INT32_MAX + 2], {INT32_MAX + 2: json.dumps(corrected)})
    assert replayed.replayed == [INT32_MAX + 2]


def test_every_chunk_a_run_stores_and_counts_is_audited_even_when_the_run_dies(env: Env) -> None:
    """The run's one audit entry was written after its last chunk and the online write, in a transaction
    of its own: a run killed (or cut off) mid-way had its rows stored and counted but never audited.
    Each chunk's entry now commits with the chunk's counters; a finished run adds a closing entry."""

    def chunk(first_sensor: int) -> pa.Table:
        return pa.table(
            {
                "sensor_id": [first_sensor, first_sensor + 1, first_sensor + 2],
                "event_ts": [NOW] * 3,
                "temperature_c": [20.0, 21.0, 99.0],  # the third above the max: quarantined
                "mode": [1, 2, 3],
            }
        )

    def cut_off() -> Iterator[pa.Table]:
        yield chunk(1)
        raise ConnectionResetError("the upload was cut off")

    def audited() -> list[tuple[str, str, str, object, object]]:
        return [
            (entry.action, entry.actor, entry.object_id, entry.before, entry.after)
            for entry in iter_entries(env.sessions)
            if entry.action.startswith("ingestion.")
        ]

    with pytest.raises(Internal, match=r"the upload was cut off.*do not ingest them again"):
        env.service.ingest("climate", 1, cut_off(), source="upload", actor="alice")
    (dead,) = env.service.list_runs("climate")
    assert (dead.records_in, dead.accepted, dead.quarantined) == (3, 2, 1)
    counted = {"run_id": dead.run_id, "source": "upload", "records_in": 3, "accepted": 2, "quarantined": 1}
    assert audited() == [("ingestion.batch", "alice", "climate:v1", None, counted | {"chunk": 0})]

    outcome = env.service.ingest("climate", 1, [chunk(1), chunk(4)], source="upload", actor="alice")
    run = {"run_id": outcome.run_id, "source": "upload"}
    first = run | {"records_in": 3, "accepted": 2, "quarantined": 1}
    both = run | {"records_in": 6, "accepted": 4, "quarantined": 2}
    assert audited()[1:] == [
        # The retry's first chunk quarantines the cut-off run's record again and supersedes that copy.
        ("ingestion.batch", "alice", "climate:v1", None, first | {"chunk": 0, "superseded": 1}),
        ("ingestion.batch", "alice", "climate:v1", first, both | {"chunk": 1}),
        (
            "ingestion.batch.finished",
            "alice",
            "climate:v1",
            None,
            both | {"chunks": 2, "skipped_outside_window": 0, "online_rows": 4},
        ),
    ]
    assert verify_chain(env.sessions).ok


def test_a_rerun_of_a_source_supersedes_the_records_an_earlier_run_left_quarantined(env: Env) -> None:
    """A run cut off mid-way left its rejected records quarantined, and its retry (the same file again)
    quarantined the same records under its own run: the queue showed each twice, and replaying both
    wrote each record twice offline. The rerun's copy now supersedes a pending identical one."""
    bad = {"sensor_id": [7], "event_ts": [NOW], "temperature_c": [99.0], "mode": [1]}
    good = {"sensor_id": [8], "event_ts": [NOW], "temperature_c": [20.0], "mode": [1]}

    def cut_off() -> Iterator[pa.Table]:
        yield pa.table(bad)
        raise ConnectionResetError("the upload was cut off")

    with pytest.raises(ConnectionResetError):
        env.service.ingest("climate", 1, cut_off(), source="readings.parquet")
    (dead,) = env.service.list_quarantined(view="climate")
    # The same path with other contents at row 0 is another record: both stay quarantined.
    changed = env.service.ingest(
        "climate", 1, [pa.table(bad | {"temperature_c": [98.0]})], source="readings.parquet"
    )
    retry = env.service.ingest("climate", 1, [pa.table(bad), pa.table(good)], source="readings.parquet")
    assert (retry.records_in, retry.accepted, retry.quarantined) == (2, 1, 1)
    pending = env.service.list_quarantined(view="climate")
    assert [record.run_id for record in pending] == [retry.run_id, changed.run_id]
    assert env.service.get_quarantined(dead.id).status == quarantine.SUPERSEDED
    # Every run still adds up: the superseded record stays one of its run's quarantined records.
    assert all(run.records_in == run.accepted + run.quarantined for run in env.service.list_runs())

    fixed = json.dumps(json.loads(pending[0].payload) | {"temperature_c": 21.0})
    assert env.service.replay([pending[0].id], {pending[0].id: fixed}).replayed == [pending[0].id]
    with pytest.raises(FailedPrecondition, match=f"record {dead.id} is superseded"):
        env.service.replay([dead.id], {dead.id: fixed})
    assert sorted(offline_rows(env, "climate")) == [7, 8]
    superseded = [e.after for e in iter_entries(env.sessions) if e.action == "ingestion.batch"][-2]
    assert (superseded["run_id"], superseded["superseded"]) == (retry.run_id, 1)


def test_a_record_keeps_its_source_row_as_key_whatever_window_a_run_reads_it_through(env: Env) -> None:
    """A record's key was its position among the rows inside the run's window, so an incremental run
    (one day of the file) and a full rerun of the same file quarantined the same bad record under two
    keys: the earlier copy was not superseded and replaying every pending record wrote it twice."""
    day = timedelta(days=1)
    rows = {
        "sensor_id": [1, 2, 3, 4],
        "event_ts": [NOW - 2 * day, NOW - day, NOW - 2 * day, NOW - day],
        "temperature_c": [20.0, 99.0, 21.0, 98.0],  # rows 1 and 3 are above the view's maximum
        "mode": [1, 1, 1, 1],
    }
    chunks = [pa.table({name: values[:2] for name, values in rows.items()})]
    chunks.append(pa.table({name: values[2:] for name, values in rows.items()}))
    incremental = env.service.ingest("climate", 1, chunks, window=Window(start=NOW - day), source="f")
    assert (incremental.skipped_outside_window, incremental.quarantined) == (2, 2)
    keys = {record.record_key for record in env.service.list_quarantined(view="climate")}
    assert keys == {"1", "3"}  # the rows of the source, not of the window
    full = env.service.ingest("climate", 1, chunks, source="f")
    assert full.quarantined == 2
    pending = env.service.list_quarantined(view="climate")
    assert sorted((record.run_id, record.record_key) for record in pending) == [
        (full.run_id, "1"),
        (full.run_id, "3"),
    ]


def test_a_record_before_year_1_is_quarantined_and_its_chunk_stored(env: Env) -> None:
    """An Arrow time before 0001-01-01 passed validation and failed the offline write with
    OverflowError: the whole ingest failed (INTERNAL), the chunk's valid rows with it."""
    table = pa.table(
        {
            "sensor_id": [1, 2],
            "event_ts": pa.array(
                [int(NOW.timestamp()) * 10**6, -62_200_000_000_000_000], pa.timestamp("us", tz="UTC")
            ),
            "temperature_c": [20.0, 21.0],
            "mode": [1, 1],
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    (record,) = env.service.list_quarantined(view="climate")
    assert "is outside the event times the stores hold (years 1 to 9999, UTC)" in record.reason
    assert offline_rows(env, "climate") == [1]


def test_a_time_in_seconds_beyond_the_microsecond_range_is_quarantined_not_wrapped(env: Env) -> None:
    """18448444073709 s (year ~586,000) times 10**6 wrapped past 2**64 to 2023-11-14 and was stored,
    accepted, as a 2023 event."""
    table = pa.table(
        {
            "sensor_id": [7, 8],
            "event_ts": pa.array([18_448_444_073_709, int(NOW.timestamp())], pa.timestamp("s", tz="UTC")),
            "temperature_c": [20.0, 21.0],
            "mode": [1, 1],
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (2, 1, 1)
    (record,) = env.service.list_quarantined(view="climate")
    assert record.reason.endswith("is beyond the range of microsecond timestamps (about ±292,000 years)")
    assert offline_rows(env, "climate") == [8]


def corrupt_second_row_group(path: Path) -> None:
    """Two row groups of PARQUET_BATCH_ROWS readings; bytes of the second group's last column's data
    page scrambled, so the file opens and its first chunk reads, and the second chunk's read fails."""
    rows = 2 * PARQUET_BATCH_ROWS
    table = pa.table(
        {
            "sensor_id": pa.array(range(rows), pa.int64()),
            "event_ts": pa.array([NOW] * rows, pa.timestamp("us", tz="UTC")),
            "temperature_c": pa.array([float(i % 50) for i in range(rows)], pa.float32()),
            "mode": pa.array([1] * rows, pa.int32()),
        }
    )
    pq.write_table(table, path, row_group_size=PARQUET_BATCH_ROWS, use_dictionary=False)
    start = pq.ParquetFile(path).metadata.row_group(1).column(3).data_page_offset
    raw = bytearray(path.read_bytes())
    for i in range(start + 40, start + 400):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_a_source_failing_part_way_leaves_its_stored_rows_to_a_replay_for_their_online_values(
    env: Env, tmp_path: Path
) -> None:
    """The run filed its online part only in its last chunk's transaction: a Parquet file whose second
    row group is corrupt left the first chunk's 65,536 rows stored and counted, with no online value and
    no online_pending record, so nothing would ever write them online. Each chunk names its files in the
    run's online part now, and the failed run hands it to the next replay at once."""
    path = tmp_path / "readings.parquet"
    corrupt_second_row_group(path)
    with pytest.raises(InvalidArgument, match=rf"after its first {PARQUET_BATCH_ROWS} rows"):
        env.service.materialize_file("climate", 1, str(path))
    (run,) = env.service.list_runs("climate")
    assert (run.records_in, run.accepted, run.quarantined) == (PARQUET_BATCH_ROWS, PARQUET_BATCH_ROWS, 0)
    assert env.client.dbsize() == 0
    (part,) = env.service.list_quarantined(status="online_pending", run_id=run.run_id)
    assert part.updated_at_us == 0  # handed over, not held by the failed run
    assert part.reason.startswith("online values not written: the run failed part-way (InvalidArgument")
    assert env.service.replay([part.id], {}).replayed == [part.id]
    assert env.client.dbsize() == PARQUET_BATCH_ROWS
    assert env.client.get(online_key("sensor", ["0"], "climate", 1)) is not None


def test_every_chunk_stored_before_a_failure_is_named_by_the_runs_online_part(env: Env) -> None:
    def chunks() -> Iterator[pa.Table]:
        for sensor in (1, 2):
            yield pa.table({"sensor_id": [sensor], "event_ts": [NOW], "temperature_c": [20.0], "mode": [1]})
        raise InvalidArgument("chunk 2: the upload was cut off")

    with pytest.raises(InvalidArgument, match="cut off"):
        env.service.ingest("climate", 1, chunks())
    (run,) = env.service.list_runs("climate")
    (part,) = env.service.list_quarantined(status="online_pending", run_id=run.run_id)
    assert len(json.loads(part.payload)["offline_files"]) == 2
    assert env.service.replay([part.id], {}).replayed == [part.id]
    for sensor in (1, 2):
        assert env.client.get(online_key("sensor", [str(sensor)], "climate", 1)) is not None


def test_a_source_longer_than_its_column_is_refused_before_anything_is_written(
    any_env: Env, tmp_path: Path
) -> None:
    """On PostgreSQL a source past VARCHAR(1024) failed the first chunk's SQL transaction after its rows
    were written to the offline store: INTERNAL, rows stored and never counted (a retry stored them
    again). It is refused up front now, naming the field and its limit."""
    env = any_env
    table = pa.table({"sensor_id": [1], "event_ts": [NOW], "temperature_c": [20.0], "mode": [1]})
    with pytest.raises(InvalidArgument, match=r"^source: 1036 characters, longer than the 1024"):
        env.service.ingest("climate", 1, [table], source="s3://bucket/" + "x" * 1024)
    long_path = tmp_path.joinpath(*["d" * 200] * 5, "readings.parquet")
    with pytest.raises(InvalidArgument, match=r"^source_uri: \d+ characters, longer than the 1024"):
        env.service.materialize_file("climate", 1, str(long_path))
    assert env.service.list_runs("climate") == []
    assert offline_rows(env, "climate") == []
    assert env.client.dbsize() == 0


def test_a_replayed_record_is_judged_alone_so_a_null_its_rule_allows_replays(env: Env) -> None:
    """temperature_c allows nulls (max_null_fraction 0.5). Row 0's null temperature is 1 of 4 in its
    batch, so it is quarantined for its bad mode alone. Replayed with the mode corrected, it was judged as
    a batch of its own, a null fraction of 1.0 over 0.5, and quarantined again, its reason overwritten:
    the record could never be replayed with its legitimate null. A replay judges each record alone, by its
    per-record rules; ``mode`` (max_null_fraction 0: no nulls) still refuses a null."""
    table = pa.table(
        {
            "sensor_id": [1, 2, 3, 4],
            "event_ts": [NOW - timedelta(minutes=5)] * 4,
            "temperature_c": [None, 20.0, 21.0, 22.0],
            "mode": [9, 1, 2, 3],
        }
    )
    outcome = env.service.ingest("climate", 1, [table])
    assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (4, 3, 1)
    (record,) = env.service.list_quarantined(view="climate")
    assert "mode: 9" in record.reason and "temperature_c" not in record.reason

    no_mode = json.loads(record.payload) | {"mode": None}
    refused = env.service.replay([record.id], {record.id: json.dumps(no_mode)})
    assert refused.replayed == []
    assert [r.reason for r in refused.still_quarantined] == ["mode: null (NaN or missing) not allowed"]

    fixed = json.loads(record.payload) | {"mode": 2}
    replay = env.service.replay([record.id], {record.id: json.dumps(fixed)})
    assert (replay.replayed, replay.still_quarantined) == ([record.id], [])
    assert sorted(offline_rows(env, "climate")) == [1, 2, 3, 4]
