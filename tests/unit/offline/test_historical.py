"""Point-in-time training sets through the offline store: leakage, TTL, versions, the dataset hash and
its lineage record, Parquet output, and the errors a caller can make."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text

from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from control_plane.features.definitions import MAX_DURATION_S
from control_plane.features.registry import FeatureRegistry
from control_plane.features.validation import MAX_TTL_SECONDS
from control_plane.offline.datasets import content_hash, read_dataset_record
from control_plane.offline.historical import get_historical_features
from control_plane.offline.store import OfflineStore
from tests.unit.offline.builders import (
    TS,
    at,
    create_view,
    ensure_entity,
    entity_rows,
    feature_rows,
    feature_spec,
    micros,
)


@pytest.fixture
def stats(registry: FeatureRegistry, store: OfflineStore) -> OfflineStore:
    """View ``stats`` (score float64, trips int64; TTL 1 h): user 1 has rows at 0 s and 100 s."""
    ensure_entity(registry)
    create_view(
        registry, feature_spec("stats", (("score", types_pb2.FLOAT64), ("trips", types_pb2.INT64)), 3600)
    )
    store.write(
        "stats",
        1,
        feature_rows({"user_id": [1, 1]}, [at(0), at(100)], {"score": [1.0, 2.0], "trips": [10, 20]}),
    )
    return store


def test_point_in_time_join_never_leaks_future_values(registry: FeatureRegistry, stats: OfflineStore) -> None:
    """A value planted 1 µs after each label time, ingested *before* it, and a huge value far in the
    future: none is ever returned; the value exactly at the label time is."""
    tiny = dt.timedelta(microseconds=1)
    planted = feature_rows(
        {"user_id": [1, 1, 1]},
        [at(50) + tiny, at(100) + tiny, at(10**6)],
        {"score": [666.0, 777.0, 999.0], "trips": [666, 777, 999]},
        ingested=[at(0), at(0), at(0)],
    )
    stats.write("stats", 1, planted)
    labels = entity_rows({"user_id": [1, 1, 1, 1]}, [at(100), at(50), at(50) + tiny, at(0) - tiny])
    result = get_historical_features(stats, registry, labels, ["stats"])
    assert result.table.column("stats:score").to_pylist() == [2.0, 1.0, 666.0, None]
    assert result.table.column("stats:trips").to_pylist() == [20, 10, 666, None]
    future = {666.0, 777.0, 999.0}
    for row, label_time in zip(
        result.table.column("stats:score").to_pylist()[:2], [at(100), at(50)], strict=True
    ):
        assert row not in future, f"leaked a value from after {label_time}"


def test_ttl_keeps_a_value_exactly_ttl_old_and_nulls_an_older_one(
    registry: FeatureRegistry, stats: OfflineStore
) -> None:
    labels = entity_rows({"user_id": [1, 1, 2]}, [at(3700), at(3700) + dt.timedelta(microseconds=1), at(50)])
    result = get_historical_features(stats, registry, labels, ["stats:score"])
    assert result.table.column("stats:score").to_pylist() == [2.0, None, None]
    assert result.matched == {"stats:score": 1}


def test_the_longest_ttl_and_a_longer_one_stored_before_the_limit_keep_old_values(
    registry: FeatureRegistry, store: OfflineStore, engine: Engine
) -> None:
    """A TTL beyond the join's int64 microseconds overflowed there and nulled rows (here: a label before
    1970 with the longest TTL ``features apply`` took); the registry now refuses it, and a view stored
    with one before joins as if it had no TTL."""
    ensure_entity(registry)
    for name in ("longest", "stored"):
        create_view(registry, feature_spec(name, ttl_seconds=MAX_TTL_SECONDS))
        store.write(name, 1, feature_rows({"user_id": [1]}, [at(-3 * 10**9)], {"score": [1.0]}))
    with engine.begin() as connection:  # as an older registry, which took any TTL, left it
        connection.execute(
            text(
                "UPDATE feature_view_versions SET spec = json_set(spec, '$.ttlSeconds', :ttl) WHERE view_id ="
                " (SELECT id FROM feature_views WHERE name = 'stored')"
            ),
            {"ttl": str(MAX_DURATION_S)},
        )
    assert registry.get_feature_view("stored").spec.ttl_seconds == MAX_DURATION_S
    labels = entity_rows({"user_id": [1, 1]}, [at(10), at(-3 * 10**9 + 1)])  # the second: before 1970
    result = get_historical_features(store, registry, labels, ["longest", "stored"], record=False)
    assert result.table.column("longest:score").to_pylist() == [1.0, 1.0]
    assert result.table.column("stored:score").to_pylist() == [1.0, 1.0]


def test_ties_on_event_time_go_to_the_latest_ingestion(
    registry: FeatureRegistry, stats: OfflineStore
) -> None:
    stats.write(
        "stats", 1, feature_rows({"user_id": [1]}, [at(100)], {"score": [3.0], "trips": [30]}, [at(500)])
    )
    stats.write(
        "stats", 1, feature_rows({"user_id": [1]}, [at(100)], {"score": [2.5], "trips": [25]}, [at(400)])
    )
    result = get_historical_features(
        stats, registry, entity_rows({"user_id": [1]}, [at(200)]), ["stats:score"]
    )
    assert result.table.column("stats:score").to_pylist() == [3.0]


def test_versions_and_views_join_in_one_call_with_their_own_data_and_ttl(
    registry: FeatureRegistry, stats: OfflineStore
) -> None:
    registry.create_feature_view_version(
        feature_spec("stats", (("score", types_pb2.FLOAT64), ("trips", types_pb2.INT64)), ttl_seconds=0)
    )
    stats.write("stats", 2, feature_rows({"user_id": [1]}, [at(10)], {"score": [-1.0], "trips": [-1]}))
    create_view(registry, feature_spec("clicks", (("clicks", types_pb2.INT32),)))
    stats.write("clicks", 1, feature_rows({"user_id": [1]}, [at(5)], {"clicks": pa.array([7], pa.int32())}))
    labels = entity_rows({"user_id": [1, 1]}, [at(20), at(10**5)])
    result = get_historical_features(stats, registry, labels, ["stats@1:score", "stats:score", "clicks"])
    assert result.table.column_names == [
        "user_id",
        "event_ts",
        "stats@1:score",
        "stats:score",
        "clicks:clicks",
    ]
    assert result.table.column("stats@1:score").to_pylist() == [1.0, None]  # v1: TTL 1 h
    assert result.table.column("stats:score").to_pylist() == [-1.0, -1.0]  # v2 (latest): no TTL
    assert result.table.column("clicks:clicks").type == pa.int32()
    assert result.table.column("clicks:clicks").to_pylist() == [7, 7]


def test_string_and_composite_join_keys(registry: FeatureRegistry, store: OfflineStore) -> None:
    ensure_entity(registry, "shop", (("region", types_pb2.STRING), ("shop_id", types_pb2.INT64)))
    create_view(registry, feature_spec("sales", (("amount", types_pb2.FLOAT32),), entity="shop"))
    store.write(
        "sales",
        1,
        feature_rows(
            {"region": ["eu", "us", "eu"], "shop_id": [1, 1, 2]},
            [at(0), at(0), at(0)],
            {"amount": pa.array([1.5, 2.5, 3.5], pa.float32())},
        ),
    )
    labels = entity_rows({"shop_id": [2, 1, 1, 3], "region": ["eu", "us", "asia", "eu"]}, [at(1)] * 4)
    result = get_historical_features(store, registry, labels, ["sales"])
    assert result.table.column("sales:amount").to_pylist() == [3.5, 2.5, None, None]


def test_the_dataset_hash_is_stable_and_follows_every_value(
    registry: FeatureRegistry, stats: OfflineStore
) -> None:
    labels = entity_rows({"user_id": [1, 2, 1]}, [at(150), at(150), at(60)])
    first = get_historical_features(stats, registry, labels, ["stats"])
    rechunked = pa.Table.from_batches(labels.to_batches(max_chunksize=1))
    again = get_historical_features(stats, registry, rechunked, ["stats"])
    assert again.dataset_hash == first.dataset_hash == content_hash(first.table)
    assert len(first.dataset_hash) == 64

    stats.write("stats", 1, feature_rows({"user_id": [1]}, [at(120)], {"score": [2.0], "trips": [21]}))
    changed = get_historical_features(stats, registry, labels, ["stats"])
    assert changed.table.column("stats:trips").to_pylist() == [21, None, 10]
    assert changed.dataset_hash != first.dataset_hash


def test_each_dataset_is_recorded_for_lineage(
    registry: FeatureRegistry, stats: OfflineStore, tmp_path: Path
) -> None:
    labels = entity_rows({"user_id": [1, 2]}, [at(150), at(150)])
    out = tmp_path / "sets" / "train.parquet"
    result = get_historical_features(stats, registry, labels, ["stats:trips"], output_path=str(out))
    record = read_dataset_record(stats, result.dataset_hash)
    assert record["dataset_hash"] == result.dataset_hash
    assert record["features"] == ["stats:trips"]
    # Where the rows came from: the offline-store folder and the files of it the join read.
    files = [f.removeprefix(f"{stats.base_path}/") for f in stats.files("stats", 1)]
    assert files and all(f.startswith("stats/v1/date=") for f in files)
    assert record["views"] == [
        {
            "view": "stats",
            "version": 1,
            "columns": ["stats:trips"],
            "location": f"{stats.root}/stats/v1",
            "files": files,
        }
    ]
    assert record["entity_rows"] == {
        "sha256": content_hash(labels),
        "row_count": 2,
        "timestamp_column": "event_ts",
    }
    assert record["matched"] == {"stats:trips": 1}
    assert dt.datetime.fromisoformat(record["created_at"]).tzinfo is not None
    assert (
        json.loads((Path(stats.base_path) / "_datasets" / f"{result.dataset_hash}.json").read_text())
        == record
    )
    assert pq.read_table(out).equals(result.table)
    assert content_hash(pq.read_table(out)) == result.dataset_hash
    assert [p.name for p in out.parent.iterdir()] == ["train.parquet"]  # no temporary left behind
    with pytest.raises(NotFound):
        read_dataset_record(stats, "0" * 64)
    # A hash is what names the file: any other text (a job spec's, a model version's) names none, so a
    # path such as ../ no longer reaches a .json outside the records.
    outside = Path(stats.base_path) / "elsewhere.json"
    outside.write_text(json.dumps({"row_count": 1}))
    for given in ("../elsewhere", f"{result.dataset_hash.upper()}", f"{result.dataset_hash}/../x"):
        with pytest.raises(NotFound, match="64 lowercase hex digits"):
            read_dataset_record(stats, given)


def test_an_output_path_that_cannot_be_written_is_refused_before_the_join(
    registry: FeatureRegistry, stats: OfflineStore, tmp_path: Path
) -> None:
    """Such a path was found only when writing the finished set, and came back as INTERNAL."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.parquet").write_bytes(b"")
    labels = entity_rows({"user_id": [1]}, [at(150)])
    for out, reason in [
        ("folder", "is a directory"),
        ("file.parquet/set.parquet", "is not a directory"),
        ("x" * 300 + ".parquet", "File name too long"),
    ]:
        target = str(tmp_path / out)
        with pytest.raises(InvalidArgument, match=f"cannot write the training set to '{target}': .*{reason}"):
            get_historical_features(stats, registry, labels, ["stats"], output_path=target)
    assert not (Path(stats.base_path) / "_datasets").exists()  # nothing recorded


def test_a_write_that_fails_after_the_join_is_failed_precondition_and_records_nothing(
    registry: FeatureRegistry, stats: OfflineStore, tmp_path: Path
) -> None:
    # A name the folder takes, but not the writer's temporary name beside it (a leading dot, a suffix).
    target = str(tmp_path / ("x" * 240 + ".parquet"))
    labels = entity_rows({"user_id": [1]}, [at(150)])
    with pytest.raises(FailedPrecondition, match=r"File name too long.*neither written nor recorded"):
        get_historical_features(stats, registry, labels, ["stats"], output_path=target)
    assert not (Path(stats.base_path) / "_datasets").exists()


def test_a_feature_added_later_is_null_for_files_written_before_it(
    registry: FeatureRegistry, store: OfflineStore
) -> None:
    ensure_entity(registry)
    create_view(registry, feature_spec("late", (("a", types_pb2.INT64), ("b", types_pb2.INT64))))
    store.write("late", 1, feature_rows({"user_id": [1]}, [at(0)], {"a": [1]}))
    store.write("late", 1, feature_rows({"user_id": [2]}, [at(0)], {"a": [2], "b": [None]}))
    store.write("late", 1, feature_rows({"user_id": [3]}, [at(0)], {"a": [3], "b": [33]}))
    result = get_historical_features(
        store, registry, entity_rows({"user_id": [1, 2, 3]}, [at(1)] * 3), ["late"]
    )
    assert result.table.column("late:a").to_pylist() == [1, 2, 3]
    assert result.table.column("late:b").to_pylist() == [None, None, 33]


def test_the_timestamp_column_is_found_or_named(registry: FeatureRegistry, stats: OfflineStore) -> None:
    labels = entity_rows({"user_id": [1]}, [at(150)], column="cutoff")
    found = get_historical_features(stats, registry, labels, ["stats:score"])
    assert found.table.column("stats:score").to_pylist() == [2.0]
    two = labels.append_column("other", pa.array([at(0)], TS))
    with pytest.raises(InvalidArgument, match="cutoff, other"):
        get_historical_features(stats, registry, two, ["stats:score"])
    named = get_historical_features(stats, registry, two, ["stats:score"], timestamp_column="other")
    assert named.table.column("stats:score").to_pylist() == [1.0]


@pytest.mark.parametrize(
    ("refs", "error", "message"),
    [
        (["nope:score"], NotFound, "nope"),
        (["stats:nope"], NotFound, "nope"),
        (["stats@9:score"], NotFound, "9"),
        (["stats:score:x"], InvalidArgument, "malformed"),
        (["stats@0"], InvalidArgument, "malformed"),
        ([], InvalidArgument, "no feature"),
    ],
)
def test_bad_references(
    registry: FeatureRegistry, stats: OfflineStore, refs: list[str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        get_historical_features(stats, registry, entity_rows({"user_id": [1]}, [at(0)]), refs)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (pa.table({"event_ts": pa.array([at(0)], TS)}), "'user_id'"),
        (pa.table({"user_id": [1]}), "timestamp column"),
        (
            pa.table(
                {"user_id": [1], "event_ts": pa.array([at(0).replace(tzinfo=None)], pa.timestamp("us"))}
            ),
            "'event_ts'.*naive",
        ),
        (pa.table({"user_id": [1], "event_ts": pa.array([None], TS)}), "'event_ts'.*null"),
        (pa.table({"user_id": ["1"], "event_ts": pa.array([at(0)], TS)}), "'user_id'"),
        (
            pa.table({"user_id": [1], "event_ts": pa.array([at(0)], TS), "stats:score": [0.0]}),
            "'stats:score'",
        ),
        (
            pa.Table.from_arrays(
                [pa.array([1]), pa.array([1]), pa.array([at(0)], TS)], ["user_id", "user_id", "event_ts"]
            ),
            "more than one column named 'user_id'",
        ),
        (
            pa.table(
                {"user_id": pa.array([1, 2**64 - 1], pa.uint64()), "event_ts": pa.array([at(0)] * 2, TS)}
            ),
            "'user_id' .* holds 18446744073709551615, beyond the range of int64",
        ),
        (
            pa.table({"user_id": [1], "event_ts": pa.array([2**62], pa.timestamp("ms", tz="UTC"))}),
            "'event_ts' holds 1 time.* beyond the range .* 4611686018427387904 ms",
        ),
    ],
)
def test_bad_entity_rows_name_the_column(
    registry: FeatureRegistry, stats: OfflineStore, rows: pa.Table, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        get_historical_features(stats, registry, rows, ["stats:score"])


def test_empty_entity_rows_give_an_empty_training_set(registry: FeatureRegistry, stats: OfflineStore) -> None:
    result = get_historical_features(stats, registry, entity_rows({"user_id": []}, []), ["stats"])
    assert result.table.num_rows == 0
    assert result.table.column_names == ["user_id", "event_ts", "stats:score", "stats:trips"]


def test_nanosecond_label_times_are_floored_and_never_see_the_next_microsecond(
    registry: FeatureRegistry, stats: OfflineStore
) -> None:
    """pandas' label times carry nanoseconds: a label 999 ns after a stored row's microsecond joins it, and
    one 1 ns before the microsecond of a later row (planted 1 µs after the first) does not see that row."""
    tiny = dt.timedelta(microseconds=1)
    planted = feature_rows(
        {"user_id": [1]}, [at(100) + tiny], {"score": [777.0], "trips": [777]}, ingested=[at(0)]
    )
    stats.write("stats", 1, planted)
    base = micros(at(100)) * 1000
    labels = pa.table(
        {
            "user_id": [1, 1, 1, 1],
            "event_ts": pa.array(
                [base + 999, base + 1000 - 1, base + 1000, base - 1], pa.timestamp("ns", tz="UTC")
            ),
        }
    )
    result = get_historical_features(stats, registry, labels, ["stats:score"])
    assert result.table.column("stats:score").to_pylist() == [2.0, 2.0, 777.0, 1.0]
    assert result.table.column("event_ts").type == pa.timestamp("ns", tz="UTC")  # the rows as given


def test_nanosecond_label_times_in_a_zone_with_dst_join_in_the_repeated_hour(
    registry: FeatureRegistry, store: OfflineStore
) -> None:
    """pandas gives label times in the data's own zone: 01:30 in New York on the day DST ends happens
    twice, and flooring it in that zone failed (INTERNAL over gRPC) instead of joining."""
    ensure_entity(registry)
    create_view(registry, feature_spec("local"))
    first = dt.datetime(2024, 11, 3, 5, 30, tzinfo=dt.UTC)  # 01:30 EDT; 06:30 UTC is 01:30 EST
    second = first + dt.timedelta(hours=1)
    store.write("local", 1, feature_rows({"user_id": [1, 1]}, [first, second], {"score": [1.0, 2.0]}))
    ns = [micros(first) * 1000 + 999, micros(second) * 1000 - 1]
    labels = pa.table(
        {"user_id": [1, 1], "event_ts": pa.array(ns, pa.timestamp("ns", tz="America/New_York"))}
    )
    result = get_historical_features(store, registry, labels, ["local:score"], record=False)
    assert result.table.column("local:score").to_pylist() == [1.0, 1.0]


def test_a_bool_feature_with_stored_nulls_joins(registry: FeatureRegistry, store: OfflineStore) -> None:
    ensure_entity(registry)
    create_view(registry, feature_spec("flags", (("active", types_pb2.BOOL),)))
    store.write(
        "flags", 1, feature_rows({"user_id": [1, 2, 3]}, [at(0)] * 3, {"active": [True, None, False]})
    )
    result = get_historical_features(
        store, registry, entity_rows({"user_id": [3, 2, 1, 4]}, [at(1)] * 4), ["flags"]
    )
    assert result.table.column("flags:active").to_pylist() == [False, None, True, None]


def test_entities_with_a_join_key_of_one_name_and_two_types_blame_the_entity_rows(
    registry: FeatureRegistry, store: OfflineStore
) -> None:
    # The label side was prepared once per join-key *names*: the string-keyed view reused the integer
    # codes, and its error blamed the offline store ("in the offline store is string, expected int64").
    ensure_entity(registry, "user", (("uid", types_pb2.INT64),))
    ensure_entity(registry, "account", (("uid", types_pb2.STRING),))
    create_view(registry, feature_spec("by_user", entity="user"))
    create_view(registry, feature_spec("by_account", entity="account"))
    store.write("by_user", 1, feature_rows({"uid": [1]}, [at(0)], {"score": [1.0]}))
    store.write("by_account", 1, feature_rows({"uid": ["1"]}, [at(0)], {"score": [2.0]}))
    labels = entity_rows({"uid": [1]}, [at(10)])
    for refs in (["by_user", "by_account"], ["by_account"]):
        with pytest.raises(
            InvalidArgument, match="join key 'uid' in the entity rows is int64, expected string"
        ):
            get_historical_features(store, registry, labels, refs, record=False)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda a: a.dictionary_encode(), id="dictionary (a pandas category)"),
        pytest.param(lambda a: a.cast(pa.string_view()), id="string_view (a Polars string)"),
        pytest.param(lambda a: pc.run_end_encode(a), id="run-end encoded"),
    ],
)
def test_join_keys_in_any_encoding_of_their_type_are_joined(
    registry: FeatureRegistry, store: OfflineStore, encode: Callable[[pa.Array], pa.Array]
) -> None:
    # Ingestion reads such columns through their encoding; the entity rows' keys were refused ("join key
    # 'name' in the entity rows is dictionary<values=string, ...>, expected string").
    ensure_entity(registry, "account", (("name", types_pb2.STRING),))
    create_view(registry, feature_spec("by_name", entity="account"))
    store.write("by_name", 1, feature_rows({"name": ["x", "y"]}, [at(0), at(0)], {"score": [1.0, 2.0]}))
    keys = encode(pa.array(["y", None, "x", "y", "z"]))
    labels = pa.table({"name": keys, "event_ts": pa.array([at(5)] * 5, TS)})
    result = get_historical_features(store, registry, labels, ["by_name"], record=False)
    assert result.table.column("by_name:score").to_pylist() == [2.0, None, 1.0, 2.0, None]
    assert result.table.column("name").type == keys.type  # the entity rows are returned as given


def test_result_columns_are_grouped_by_view_version_in_order_of_first_reference(
    registry: FeatureRegistry, stats: OfflineStore
) -> None:
    # What the module doc says; the order is part of the dataset hash, so it must not drift.
    create_view(registry, feature_spec("clicks", (("clicks", types_pb2.INT64),)))
    labels = entity_rows({"user_id": [1]}, [at(5)])
    refs = ["stats:trips", "clicks", "stats:score"]
    result = get_historical_features(stats, registry, labels, refs, record=False)
    assert result.table.column_names == ["user_id", "event_ts", "stats:trips", "stats:score", "clicks:clicks"]
