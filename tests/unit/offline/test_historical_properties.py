"""``get_historical_features`` end to end through the offline store (Parquet files on disk, views in a
real registry) against a brute-force reference that scans every stored row for every label.

The generated data is small but dense in edge cases: event times on a coarse grid (ties, exact
duplicates), ingestion times that go backwards (corrections), rows written in several batches in any
order (late-arriving rows, several files per partition), times spanning several days (several date
partitions), labels in random order with keys that no row has or that are null, TTLs that land exactly
on a row's age, several views and versions in one call, views of different entities (different join
keys) in one call, files merged by compaction between writes, and label times with nanoseconds in a
zone with DST, as pandas gives them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.aether.v1 import types_pb2
from control_plane.features.registry import FeatureRegistry
from control_plane.offline.compaction import CompactionPolicy, compact_view
from control_plane.offline.historical import get_historical_features
from control_plane.offline.pit import JoinBounds
from control_plane.offline.store import OfflineStore
from tests.unit.offline.builders import TS, at, create_view, ensure_entity, feature_spec, micros

_names = itertools.count()
KEY_MODES = {
    "int": (("user_id", types_pb2.INT64),),
    "str": (("user_name", types_pb2.STRING),),
    "multi": (("region", types_pb2.STRING), ("shop_id", types_pb2.INT64)),
}
FEATURES = (("a", types_pb2.FLOAT64), ("b", types_pb2.INT64))
GRID_S = 3600  # event times on an hourly grid over ~4 days: ties and several date partitions


def key_value(mode: str, k: int) -> tuple[object, ...]:
    if mode == "int":
        return (k * 1_000_003 - 5,)  # spread out and negative: exercises the sparse label index
    if mode == "str":
        return (f"u{k}",)
    return (f"r{k % 2}", k // 2)


@dataclass(frozen=True)
class StoredRow:
    key: int
    event_s: int
    ingest_s: int
    a: float
    b: int | None


row_strategy = st.builds(
    StoredRow,
    key=st.integers(0, 5),
    event_s=st.integers(0, 100).map(lambda h: h * GRID_S),
    ingest_s=st.integers(-2, 2),
    a=st.floats(-1e6, 1e6, allow_nan=False),
    b=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
)
version_strategy = st.tuples(
    st.sampled_from([0, GRID_S, 5 * GRID_S, 24 * GRID_S]),  # TTL in seconds (0: none)
    st.lists(st.lists(row_strategy, max_size=12), min_size=1, max_size=3),  # write batches
)
view_strategy = st.tuples(st.lists(version_strategy, min_size=1, max_size=2), st.integers(0, 7))
label_strategy = st.tuples(
    st.one_of(st.none(), st.integers(0, 7)),  # keys 6 and 7 are never stored; None is a null key
    st.integers(0, 110).map(lambda h: h * GRID_S) | st.integers(0, 110 * GRID_S),
)


def write_view(
    registry: FeatureRegistry,
    store: OfflineStore,
    mode: str,
    versions: list[tuple[int, list[list[StoredRow]]]],
) -> str:
    name = f"view{next(_names)}"
    entity = f"entity_{mode}"
    for number, (ttl, batches) in enumerate(versions, start=1):
        spec = feature_spec(name, FEATURES, ttl_seconds=ttl, entity=entity)
        spec.source.uri = f"offline/{name}/v{number}"  # a versioned change even when the TTL repeats
        if number == 1:
            create_view(registry, spec)
        else:
            registry.create_feature_view_version(spec)
        for batch in batches:
            if batch:
                store.write(name, number, stored_table(mode, batch))
    return name


def stored_table(mode: str, rows: list[StoredRow]) -> pa.Table:
    keys = [key_value(mode, r.key) for r in rows]
    columns: dict[str, pa.Array] = {
        key_name: pa.array([k[i] for k in keys]) for i, (key_name, _) in enumerate(KEY_MODES[mode])
    }
    # Ingestion times: the event time plus a small offset, which can reverse the order of corrections.
    columns["event_ts"] = pa.array([at(r.event_s) for r in rows], TS)
    columns["ingested_ts"] = pa.array([at(r.event_s + 10 * r.ingest_s) for r in rows], TS)
    columns["a"] = pa.array([r.a for r in rows], pa.float64())
    columns["b"] = pa.array([r.b for r in rows], pa.int64())
    return pa.table(columns)


def label_table(
    mode: str, labels: list[tuple[int | None, int]]
) -> tuple[list[tuple[object, ...]], list[dt.datetime], pa.Table]:
    """The labels' join keys (a None key: every key column null), their times, and the entity rows
    table ``get_historical_features`` takes."""
    keys = [key_value(mode, k) if k is not None else (None,) * len(KEY_MODES[mode]) for k, _ in labels]
    times = [at(seconds) for _, seconds in labels]
    columns = {
        name: pa.array([k[i] for k in keys], pa.string() if t == types_pb2.STRING else pa.int64())
        for i, (name, t) in enumerate(KEY_MODES[mode])
    }
    return keys, times, pa.table({**columns, "label_time": pa.array(times, TS)})


def brute_force(
    store: OfflineStore,
    view: str,
    version: int,
    ttl_s: int,
    mode: str,
    labels: list[tuple[object, ...]],
    label_ts: list[dt.datetime],
    feature: str,
) -> list[object]:
    """For every label: scan every stored row (in the store's file order, the tie-break of last resort)."""
    key_names = [k for k, _ in KEY_MODES[mode]]
    stored = [pq.read_table(path).to_pylist() for path in store.files(view, version)]
    rows = [row for table in stored for row in table]
    answers: list[object] = []
    for key, moment in zip(labels, label_ts, strict=True):
        best: tuple[dt.datetime, dt.datetime, int] | None = None
        value: object = None
        for index, row in enumerate(rows):
            if None in key or tuple(row[k] for k in key_names) != key or row["event_ts"] > moment:
                continue
            rank = (row["event_ts"], row["ingested_ts"], index)
            if best is None or rank > best:
                best, value = rank, row[feature]
        if best is not None and ttl_s > 0 and moment - best[0] > dt.timedelta(seconds=ttl_s):
            value = None
        answers.append(value)
    return answers


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mode=st.sampled_from(sorted(KEY_MODES)),
    views=st.lists(view_strategy, min_size=1, max_size=2),
    labels=st.lists(label_strategy, max_size=25),
    data=st.data(),
)
def test_training_set_matches_brute_force(
    registry: FeatureRegistry,
    store: OfflineStore,
    mode: str,
    views: list[tuple[list[tuple[int, list[list[StoredRow]]]], int]],
    labels: list[tuple[int | None, int]],
    data: st.DataObject,
) -> None:
    ensure_entity(registry, f"entity_{mode}", KEY_MODES[mode])
    label_keys, label_ts, entity_rows = label_table(mode, labels)

    refs: list[str] = []
    expected_columns: dict[str, list[object]] = {}
    for versions, _ in views:
        name = write_view(registry, store, mode, versions)
        latest = len(versions)
        # Every form of reference: the whole latest view, and one pinned feature of a random version.
        pinned = data.draw(st.integers(1, latest), label="pinned version")
        feature = data.draw(st.sampled_from(["a", "b"]), label="pinned feature")
        refs += [name, f"{name}@{pinned}:{feature}"]
        for column, version, feat in [
            (f"{name}:a", latest, "a"),
            (f"{name}:b", latest, "b"),
            (f"{name}@{pinned}:{feature}", pinned, feature),
        ]:
            ttl = versions[version - 1][0]
            expected_columns[column] = brute_force(
                store, name, version, ttl, mode, label_keys, label_ts, feat
            )

    result = get_historical_features(
        store, registry, entity_rows, refs, timestamp_column="label_time", batch_rows=7
    )

    assert result.table.num_rows == len(labels)
    assert result.table.slice(0, 0).schema.names[: entity_rows.num_columns] == entity_rows.column_names
    assert result.table.select(entity_rows.column_names).equals(entity_rows)  # original rows, original order
    for column, expected in expected_columns.items():
        assert result.table.column(column).to_pylist() == expected, column
        assert result.matched[column] == sum(v is not None for v in expected)


mixed_label_strategy = st.tuples(
    st.one_of(st.none(), st.integers(0, 7)),
    st.integers(0, 110).map(lambda h: h * GRID_S),
    st.integers(-2_000, 2_000),  # nanoseconds around the grid: a label 1 ns before a row must not see it
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    views=st.lists(st.tuples(st.sampled_from(sorted(KEY_MODES)), view_strategy), min_size=2, max_size=3),
    labels=st.lists(mixed_label_strategy, max_size=25),
)
def test_views_of_several_entities_with_nanosecond_labels_match_brute_force(
    registry: FeatureRegistry,
    store: OfflineStore,
    views: list[tuple[str, tuple[list[tuple[int, list[list[StoredRow]]]], int]]],
    labels: list[tuple[int | None, int, int]],
) -> None:
    """Views of different entities (integer, string and two-column join keys) in one call, each joined on
    its own keys of the same entity rows; label times in nanoseconds in a zone with DST, compared as the
    microsecond they are floored to (the stored unit: never a row after the label)."""
    for mode in KEY_MODES:
        ensure_entity(registry, f"entity_{mode}", KEY_MODES[mode])
    keys_by_mode = {
        mode: [key_value(mode, k) if k is not None else (None,) * len(KEY_MODES[mode]) for k, _, _ in labels]
        for mode in KEY_MODES
    }
    label_ns = [micros(at(seconds)) * 1_000 + nanos for _, seconds, nanos in labels]
    floored = [at(0) + dt.timedelta(microseconds=ns // 1_000 - micros(at(0))) for ns in label_ns]
    columns: dict[str, pa.Array] = {}
    for mode, key_columns in KEY_MODES.items():
        for i, (name, value_type) in enumerate(key_columns):
            arrow_type = pa.string() if value_type == types_pb2.STRING else pa.int64()
            columns[name] = pa.array([k[i] for k in keys_by_mode[mode]], arrow_type)
    columns["label_time"] = pa.array(label_ns, pa.timestamp("ns", tz="Europe/Berlin"))
    entity_rows = pa.table(columns)

    refs: list[str] = []
    expected_columns: dict[str, list[object]] = {}
    for mode, (versions, _) in views:
        name = write_view(registry, store, mode, versions)
        refs.append(name)
        ttl = versions[-1][0]
        for feature in ("a", "b"):
            expected_columns[f"{name}:{feature}"] = brute_force(
                store, name, len(versions), ttl, mode, keys_by_mode[mode], floored, feature
            )

    result = get_historical_features(
        store, registry, entity_rows, refs, timestamp_column="label_time", batch_rows=5
    )

    assert result.table.select(entity_rows.column_names).equals(entity_rows)
    for column, expected in expected_columns.items():
        assert result.table.column(column).to_pylist() == expected, column


# Every file of an ended day is merged at once, and replaced files are deleted on the next pass.
EAGER_COMPACTION = CompactionPolicy(min_files=1, min_age_s=0, lateness_s=0, grace_s=0)
LONG_AFTER = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mode=st.sampled_from(sorted(KEY_MODES)),
    batches=st.lists(st.lists(row_strategy, min_size=1, max_size=8), min_size=2, max_size=6),
    compact_after=st.sets(st.integers(0, 5)),
    ttl=st.sampled_from([0, GRID_S, 24 * GRID_S]),
    labels=st.lists(label_strategy, max_size=20),
)
def test_compaction_between_writes_keeps_every_answer_and_the_tie_order(
    registry: FeatureRegistry,
    store: OfflineStore,
    tmp_path_factory: pytest.TempPathFactory,
    mode: str,
    batches: list[list[StoredRow]],
    compact_after: set[int],
    ttl: int,
    labels: list[tuple[int | None, int]],
) -> None:
    """Merged files (made after some of the writes, merged again after later ones, the replaced files
    deleted) give the answers of the same writes never compacted, exact ties (same event and ingestion
    time, which go to the later write) included: a merged file must sort where the files it replaced did."""
    ensure_entity(registry, f"entity_{mode}", KEY_MODES[mode])
    untouched = OfflineStore(str(tmp_path_factory.mktemp("untouched")))
    name = write_view(registry, store, mode, [(ttl, [])])
    for index, batch in enumerate(batches):
        # Exact ties across writes: every row of a batch also gets the ingestion time of its event.
        rows = [StoredRow(r.key, r.event_s, 0, r.a, r.b) for r in batch]
        for target in (store, untouched):
            target.write(name, 1, stored_table(mode, rows))
        if index in compact_after:
            for _ in range(2):  # the second pass deletes what the first one replaced
                compact_view(store, name, 1, EAGER_COMPACTION, now=LONG_AFTER)
    label_keys, label_ts, entity_rows = label_table(mode, labels)

    result = get_historical_features(store, registry, entity_rows, [name], batch_rows=3, record=False)

    for feature in ("a", "b"):
        expected = brute_force(untouched, name, 1, ttl, mode, label_keys, label_ts, feature)
        assert result.table.column(f"{name}:{feature}").to_pylist() == expected, feature


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mode=st.sampled_from(sorted(KEY_MODES)),
    batches=st.lists(st.lists(row_strategy, min_size=1, max_size=12), min_size=1, max_size=5),
    compact=st.booleans(),
    ahead=st.integers(1, 8),
    pooled=st.integers(1, 8),
    batch_rows=st.integers(1, 4),
    ttl=st.sampled_from([0, GRID_S, 24 * GRID_S]),
    labels=st.lists(label_strategy, max_size=20),
)
def test_files_read_past_the_read_ahead_bound_match_brute_force(
    registry: FeatureRegistry,
    store: OfflineStore,
    tmp_path_factory: pytest.TempPathFactory,
    mode: str,
    batches: list[list[StoredRow]],
    compact: bool,
    ahead: int,
    pooled: int,
    batch_rows: int,
    ttl: int,
    labels: list[tuple[int | None, int]],
) -> None:
    """Pass 1 reads ahead at most a bound of rows of a file and the rest of it batch by batch as it folds
    them, and pools a bound of rows per kernel call: with both bounds down to a row, and files from one
    batch to many (merged by compaction into one per day), the answers are the brute force's."""
    ensure_entity(registry, f"entity_{mode}", KEY_MODES[mode])
    untouched = OfflineStore(str(tmp_path_factory.mktemp("untouched")))
    name = write_view(registry, store, mode, [(ttl, [])])
    for batch in batches:
        for target in (store, untouched):
            target.write(name, 1, stored_table(mode, batch))
    if compact:
        for _ in range(2):
            compact_view(store, name, 1, EAGER_COMPACTION, now=LONG_AFTER)
    label_keys, label_ts, entity_rows = label_table(mode, labels)

    bounds = JoinBounds(pooled_rows=pooled, ahead_rows=ahead)
    result = get_historical_features(
        store, registry, entity_rows, [name], batch_rows=batch_rows, bounds=bounds, record=False
    )

    for feature in ("a", "b"):
        expected = brute_force(untouched, name, 1, ttl, mode, label_keys, label_ts, feature)
        assert result.table.column(f"{name}:{feature}").to_pylist() == expected, feature


class _ReadRecordingStore(OfflineStore):
    """The store, recording each batch pass 1 reads (keys and times only): its file, whether a reading
    thread decoded it, and its rows."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.decoded: list[tuple[str, bool, int]] = []
        self._main = threading.current_thread()

    def read_file(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        batch_size: int = 65_536,
        use_threads: bool = True,
    ) -> Generator[pa.RecordBatch, None, None]:
        for batch in super().read_file(path, columns, batch_size, use_threads):
            if columns is not None and "a" not in columns:  # pass 1: keys and times only
                self.decoded.append((path, threading.current_thread() is not self._main, batch.num_rows))
            yield batch


def test_a_reading_thread_decodes_at_most_the_bound_of_a_big_file(
    registry: FeatureRegistry, store: OfflineStore
) -> None:
    """A big file's keys (a day's merged file) are not decoded whole ahead: a reading thread decodes up
    to the bound, the join reads the rest a batch at a time as it folds it. Same answers either way."""
    ensure_entity(registry, "entity_int", KEY_MODES["int"])
    name = write_view(registry, store, "int", [(0, [])])
    rows = [StoredRow(k % 6, (k % 90) * GRID_S, k % 3 - 1, float(k), k) for k in range(400)]
    store.write(name, 1, stored_table("int", rows[:300]))  # three days: a big file, then smaller ones
    store.write(name, 1, stored_table("int", rows[300:]))
    entity_rows = pa.table(
        {"user_id": [key_value("int", k % 8)[0] for k in range(50)], "ts": [at(k * 7_000) for k in range(50)]}
    )
    expected = get_historical_features(store, registry, entity_rows, [name], record=False).table

    recording = _ReadRecordingStore(store.root)
    result = get_historical_features(
        recording, registry, entity_rows, [name], batch_rows=3, bounds=JoinBounds(ahead_rows=8), record=False
    )
    decoded = recording.decoded

    assert result.table.equals(expected)
    assert sum(rows for _, _, rows in decoded) == 400
    for path in {path for path, _, _ in decoded}:
        ahead = [rows for p, in_thread, rows in decoded if p == path and in_thread]
        assert sum(ahead) < 8 + 3  # the bound, and the batch that reached it
    assert any(not in_thread for _, in_thread, _ in decoded)  # the rest of the big files, read here
