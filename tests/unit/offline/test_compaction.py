"""Compaction of the offline store (``control_plane.offline.compaction``) on real Parquet files: what it
merges, that readers read every row exactly once before, during and after it (also through a file list
taken before it), that tie order and training sets are unchanged, and that a process killed between
its steps leaves a store that reads the same and that the next pass finishes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.aether.v1 import types_pb2
from clients.env_values import ConfigurationError
from clients.errors import NotFound, OfflineStoreUnavailable
from control_plane.features.registry import FeatureRegistry
from control_plane.offline import compaction, pit
from control_plane.offline.compaction import CompactionPolicy, compact_view
from control_plane.offline.historical import get_historical_features
from control_plane.offline.merged import REPLACED_KEY, is_merged_name, merged_name
from control_plane.offline.store import OfflineStore
from control_plane.settings import ControlPlaneSettings
from tests.unit.offline.builders import T0, TS, at, create_view, ensure_entity, entity_rows, feature_spec

REPO = Path(__file__).resolve().parents[3]
VIEW = "clicks"
#: A pass "now": long after the test data's days (2024-03-01..) and after the files were written.
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=2)  # past the default grace: the replaced files are deleted
EAGER = CompactionPolicy(min_files=1, min_age_s=0, lateness_s=0, grace_s=3600)
_examples = itertools.count()


Row = tuple[int, int, int, float]


def rows(spec: Sequence[Row]) -> pa.Table:
    """(key, event second, ingestion second, value) per row."""
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in spec], pa.int64()),
            "event_ts": pa.array([at(r[1]) for r in spec], TS),
            "ingested_ts": pa.array([at(r[2]) for r in spec], TS),
            "score": pa.array([r[3] for r in spec], pa.float64()),
        }
    )


def write_files(store: OfflineStore, tables: Sequence[pa.Table], view: str = VIEW) -> None:
    for table in tables:
        store.write(view, 1, table)


def read_all(store: OfflineStore, view: str = VIEW) -> pa.Table:
    batches = list(store.scan(view, 1))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def read_listed(store: OfflineStore, paths: Sequence[str]) -> pa.Table:
    return pa.Table.from_batches([b for path in paths for b in store.read_file(path)])


def numbered(count: int, first: int = 0) -> list[pa.Table]:
    """``count`` tables of 1 to 3 rows on one day, with exact ties across them; the values say which
    file and row each is."""
    return [
        rows([(i % 3, 60 * (i % 5), 0, float(i * 10 + j)) for j in range(1 + i % 3)])
        for i in range(first, first + count)
    ]


# -- names -----------------------------------------------------------------------------------------------


@given(st.data())
def test_a_merged_name_sorts_where_its_run_did(data: st.DataObject) -> None:
    """Readers order files by name: merging any contiguous run of the visible names, again and again
    (merged files merged anew), leaves every other name on the same side of the run."""
    count = data.draw(st.integers(2, 30))
    bits = data.draw(st.lists(st.integers(0, 2**128 - 1), min_size=count, max_size=count, unique=True))
    visible = sorted(f"{uuid.UUID(int=b)}.parquet" for b in bits)
    for _ in range(data.draw(st.integers(1, 6))):
        if len(visible) < 2:
            break
        first = data.draw(st.integers(0, len(visible) - 2))
        last = data.draw(st.integers(first + 1, len(visible) - 1))
        run_first = visible[first]
        merged = merged_name(run_first, uuid.uuid4().hex)
        assert is_merged_name(merged)
        visible = [*visible[:first], merged, *visible[last + 1 :]]
        assert visible == sorted(visible)
        # Any other name (one written later too) is on the side of the merged file it was of the run's.
        other = f"{uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1)))}.parquet"
        if other[:36] != run_first[:36]:
            assert (other < merged) == (other < run_first)


def test_a_store_ingestion_wrote_never_reads_as_one_whose_folder_is_gone(store: OfflineStore) -> None:
    """A reader told that ingestion counted rows into the view refuses a missing version folder
    (``OfflineStore``'s ``counted``); compaction, its deletes after the grace and the uncounted-intent
    filter never make a store that holds those rows look so."""
    write_files(store, numbered(12))
    before = read_all(store)
    every = frozenset(store.files(VIEW, 1))

    def counted(view: str, version: int) -> int:
        return before.num_rows

    # Every file named by an open intent: none is read, and that is no missing folder.
    assert OfflineStore(store.root, uncounted=lambda: every, counted=counted).files(VIEW, 1) == []
    reader = OfflineStore(store.root, counted=counted)
    compact_view(store, VIEW, 1, EAGER, now=NOW)
    assert read_all(reader).equals(before, check_metadata=True)
    assert compact_view(store, VIEW, 1, EAGER, now=LATER).deleted == 12
    assert read_all(reader).equals(before, check_metadata=True)
    # Nothing counted into another view: no folder is no data, as before.
    assert OfflineStore(store.root, counted=lambda view, version: 0).files("other", 1) == []


# -- what a pass merges -------------------------------------------------------------------------------------


def test_a_pass_merges_the_files_into_one_that_reads_the_same(store: OfflineStore) -> None:
    write_files(store, numbered(12))
    before = read_all(store)
    listed = store.files(VIEW, 1)

    report = compact_view(store, VIEW, 1, EAGER, now=NOW)

    assert [len(run.files_in) for run in report.merged] == [12]
    assert report.merged[0].rows == before.num_rows
    after = store.files(VIEW, 1)
    assert [Path(p).name for p in after] == [report.merged[0].file_out]
    assert read_all(store).equals(before, check_metadata=True)
    # The sources are kept (and skipped) until the grace is over, then deleted by a later pass.
    assert all(Path(p).exists() for p in listed)
    assert compact_view(store, VIEW, 1, EAGER, now=NOW + dt.timedelta(minutes=59)).deleted == 0
    assert compact_view(store, VIEW, 1, EAGER, now=LATER).deleted == 12
    assert not any(Path(p).exists() for p in listed)
    assert read_all(store).equals(before, check_metadata=True)
    # A list taken before the merge still reads the same rows, in the same batches, from the merged file.
    assert read_listed(store, listed).equals(before, check_metadata=True)


def test_the_merged_footer_names_its_sources_outside_the_schema(store: OfflineStore) -> None:
    write_files(store, numbered(3))
    names = [Path(p).name for p in store.files(VIEW, 1)]
    report = compact_view(store, VIEW, 1, EAGER, now=NOW)
    merged = store.files(VIEW, 1)[0]
    assert list(report.merged[0].files_in) == names
    parquet = pq.ParquetFile(merged)
    assert REPLACED_KEY in (parquet.metadata.metadata or {})
    assert REPLACED_KEY not in (parquet.schema_arrow.metadata or {})


def test_nothing_is_merged_before_the_day_ends_or_below_the_file_count(store: OfflineStore) -> None:
    write_files(store, numbered(5))
    for path in store.files(VIEW, 1):  # written on the day, not years later
        os.utime(path, (T0.timestamp(), T0.timestamp()))
    day_end = dt.datetime.combine(T0.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    late = CompactionPolicy(min_files=1, min_age_s=0, lateness_s=3600, grace_s=3600)
    assert compact_view(store, VIEW, 1, late, now=day_end + dt.timedelta(minutes=59)).merged == []
    few = CompactionPolicy(min_files=5, min_age_s=0, lateness_s=0, grace_s=3600)
    assert compact_view(store, VIEW, 1, few, now=NOW).merged == []
    assert len(compact_view(store, VIEW, 1, late, now=day_end + dt.timedelta(hours=1)).merged) == 1


def test_young_files_and_schema_changes_end_a_run(store: OfflineStore) -> None:
    tables = numbered(8)
    tables[3] = tables[3].replace_schema_metadata({"origin": "another writer"})
    write_files(store, tables)
    paths = store.files(VIEW, 1)
    young = NOW.timestamp()  # "now" for the pass: not older than min_age_s
    os.utime(paths[6], (young, young))
    before = read_all(store)

    report = compact_view(store, VIEW, 1, CompactionPolicy(1, 60.0, 0, 3600), now=NOW)

    names = [Path(p).name for p in paths]
    assert [list(run.files_in) for run in report.merged] == [names[0:3], names[4:6]]
    assert len(store.files(VIEW, 1)) == 5  # merged, file 3, merged, file 6, file 7
    assert read_all(store).equals(before, check_metadata=True)


def test_a_file_the_store_did_not_write_is_left_alone(store: OfflineStore) -> None:
    write_files(store, numbered(4))
    partition = Path(store.files(VIEW, 1)[0]).parent
    pq.write_table(numbered(1)[0], partition / "zzz-foreign.parquet")
    before = read_all(store)
    report = compact_view(store, VIEW, 1, EAGER, now=NOW)
    assert [len(run.files_in) for run in report.merged] == [4]
    assert (partition / "zzz-foreign.parquet").exists()
    assert read_all(store).equals(before, check_metadata=True)


def test_a_dry_run_changes_nothing(store: OfflineStore) -> None:
    write_files(store, numbered(6))
    listed = store.files(VIEW, 1)
    report = compact_view(store, VIEW, 1, EAGER, now=NOW, dry_run=True)
    assert [len(run.files_in) for run in report.merged] == [6]
    assert report.merged[0].rows == read_all(store).num_rows
    assert store.files(VIEW, 1) == listed
    assert sorted(p.name for p in Path(listed[0]).parent.iterdir()) == sorted(Path(p).name for p in listed)


def test_a_partition_locked_by_another_pass_is_skipped(store: OfflineStore) -> None:
    import fcntl

    write_files(store, numbered(4))
    partition = Path(store.files(VIEW, 1)[0]).parent
    with open(partition / ".compact.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        report = compact_view(store, VIEW, 1, EAGER, now=NOW)
    assert report.merged == [] and report.busy == [(1, T0.date())]
    assert len(compact_view(store, VIEW, 1, EAGER, now=NOW).merged) == 1


def test_an_unknown_view_or_version_is_not_found(store: OfflineStore) -> None:
    with pytest.raises(NotFound):
        compact_view(store, "nothing", None, EAGER, now=NOW)
    write_files(store, numbered(1))
    with pytest.raises(NotFound):
        compact_view(store, VIEW, 2, EAGER, now=NOW)


# -- reads are unchanged ----------------------------------------------------------------------------------

row_spec = st.tuples(st.integers(0, 3), st.integers(0, 3).map(lambda m: m * 60), st.integers(0, 1),
                     st.floats(-1e3, 1e3, allow_nan=False))  # fmt: skip
day_files = st.lists(st.lists(row_spec, min_size=1, max_size=6), min_size=1, max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=day_files, second=day_files, days=st.integers(0, 2))
def test_compacted_partitions_read_back_the_identical_table(
    tmp_path: Path, first: list[list[Row]], second: list[list[Row]], days: int
) -> None:
    """Random rows in random files, with exact ties: after a merge, after more files and a merge of
    the merged file with them, and after every replaced file is deleted, a scan reads the table an
    uncompacted store read, and a file list taken at the start still reads its rows."""
    store = OfflineStore(str(tmp_path / f"ex{next(_examples)}"))
    shift = 86_400 * days  # a second partition, compacted on its own
    write_files(store, [rows(f) for f in first])
    write_files(store, [rows([(k, e + shift, i + shift, v) for k, e, i, v in f]) for f in first[::2]])
    listed = store.files(VIEW, 1)
    expected = first_read = read_all(store)

    compact_view(store, VIEW, 1, EAGER, now=NOW)
    assert read_all(store).equals(expected, check_metadata=True)
    write_files(store, [rows(f) for f in second])
    expected = read_all(store)
    compact_view(store, VIEW, 1, EAGER, now=NOW + dt.timedelta(minutes=30))
    assert read_all(store).equals(expected, check_metadata=True)
    assert len(store.files(VIEW, 1)) == len(store.dates(VIEW, 1))
    compact_view(store, VIEW, 1, EAGER, now=LATER)
    compact_view(store, VIEW, 1, EAGER, now=LATER + dt.timedelta(hours=2))
    assert read_all(store).equals(expected, check_metadata=True)
    assert read_listed(store, listed).equals(first_read, check_metadata=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.lists(row_spec, min_size=1, max_size=5), min_size=2, max_size=8))
def test_a_point_in_time_training_set_is_the_same_after_compaction(
    tmp_path: Path, registry: FeatureRegistry, files: list[list[Row]]
) -> None:
    """Exact ties (same key, event and ingestion time) across files go to the later file: the merged
    file must keep that order, so the training set and its hash do not change."""
    store = OfflineStore(str(tmp_path / f"ex{next(_examples)}"))
    ensure_entity(registry)
    view = f"pit{next(_examples)}"
    create_view(registry, feature_spec(view, (("score", types_pb2.FLOAT64),)))
    write_files(store, [rows(f) for f in files], view)
    labels = entity_rows({"user_id": np.arange(4).repeat(5)}, [at(60 * m + 30) for m in range(-1, 4)] * 4)

    def build() -> tuple[pa.Table, str]:
        result = get_historical_features(store, registry, labels, [f"{view}:score"], record=False)
        return result.table, result.dataset_hash

    before = build()
    compact_view(store, view, 1, EAGER, now=NOW)
    assert build() == before
    compact_view(store, view, 1, EAGER, now=LATER)
    assert build() == before


# -- each step of a pass, and a pass killed between them ---------------------------------------------------


def test_a_reader_at_every_step_of_a_pass_reads_each_row_once(
    store: OfflineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass is stopped before and after each step that readers can see (the rename of the merged
    file, each delete): a fault only a test hook can place there. At each stop a fresh listing and the
    listing taken before the pass both read the original rows exactly once."""
    write_files(store, numbered(6))
    seen: dict[str, object] = {"expected": read_all(store), "listed": store.files(VIEW, 1)}
    checks: list[str] = []

    def check(step: str) -> None:
        expected, listed = seen["expected"], seen["listed"]
        assert isinstance(expected, pa.Table) and isinstance(listed, list)
        assert read_all(store).equals(expected, check_metadata=True), step
        assert read_listed(store, listed).equals(expected, check_metadata=True), step
        checks.append(step)

    def stepping(name: str, real: Callable[..., None]) -> Callable[..., None]:
        def step(*args: object) -> None:
            check(f"before {name} {args[-1]}")
            real(*args)
            check(f"after {name} {args[-1]}")

        return step

    monkeypatch.setattr(compaction, "_publish", stepping("rename", compaction._publish))
    monkeypatch.setattr(compaction, "_delete", stepping("delete", compaction._delete))
    compact_view(store, VIEW, 1, EAGER, now=NOW)
    write_files(store, numbered(3, first=6))  # a merged file merged again, sources deleted in any order
    seen.update(expected=read_all(store), listed=store.files(VIEW, 1))
    compact_view(store, VIEW, 1, EAGER, now=NOW + dt.timedelta(minutes=10))
    compact_view(store, VIEW, 1, EAGER, now=LATER)
    assert len([c for c in checks if c.startswith("before rename")]) == 2
    assert len([c for c in checks if c.startswith("before delete")]) == 6 + 3 + 1
    assert len(store.files(VIEW, 1)) == 1


_KILLED_PASS = """
import datetime as dt, os, sys
from control_plane.offline import compaction, pit
from control_plane.offline.store import OfflineStore
from control_plane.settings import ControlPlaneSettings

root, step, now = sys.argv[1], sys.argv[2], dt.datetime.fromisoformat(sys.argv[3])
publish, delete = compaction._publish, compaction._delete
if step == "before-rename":
    compaction._publish = lambda filesystem, temp, final: os._exit(3)
elif step == "after-rename":
    compaction._publish = lambda filesystem, temp, final: (publish(filesystem, temp, final), os._exit(3))
elif step == "mid-delete":
    compaction._delete = lambda filesystem, path: (delete(filesystem, path), os._exit(3))
policy = compaction.CompactionPolicy(min_files=1, min_age_s=0, lateness_s=0, grace_s=3600)
compaction.compact_view(OfflineStore(root), "clicks", 1, policy, now=now)
"""


def killed_pass(store: OfflineStore, step: str, now: dt.datetime) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_PASS, store.root, step, now.isoformat()], cwd=REPO, check=False
    )
    assert done.returncode == 3


def test_a_pass_killed_before_the_rename_leaves_a_temporary_file_swept_at_start(store: OfflineStore) -> None:
    write_files(store, numbered(5))
    expected, listed = read_all(store), store.files(VIEW, 1)
    killed_pass(store, "before-rename", NOW)
    partition = Path(listed[0]).parent
    assert len(list(partition.glob(".*.tmp"))) == 1
    assert store.files(VIEW, 1) == listed
    assert read_all(store).equals(expected, check_metadata=True)
    assert store.sweep_stale_temps(older_than_s=0) == 1
    assert len(compact_view(store, VIEW, 1, EAGER, now=NOW).merged) == 1
    assert read_all(store).equals(expected, check_metadata=True)


def test_a_pass_killed_after_the_rename_leaves_sources_the_next_pass_deletes(store: OfflineStore) -> None:
    write_files(store, numbered(5))
    expected, listed = read_all(store), store.files(VIEW, 1)
    killed_pass(store, "after-rename", NOW)
    assert all(Path(p).exists() for p in listed)
    assert len(store.files(VIEW, 1)) == 1
    assert read_all(store).equals(expected, check_metadata=True)
    report = compact_view(store, VIEW, 1, EAGER, now=LATER)
    assert report.deleted == 5 and report.merged == []
    assert read_all(store).equals(expected, check_metadata=True)


def test_a_pass_killed_among_the_deletes_is_finished_by_the_next(store: OfflineStore) -> None:
    write_files(store, numbered(5))
    expected, listed = read_all(store), store.files(VIEW, 1)
    compact_view(store, VIEW, 1, EAGER, now=NOW)
    killed_pass(store, "mid-delete", LATER)
    assert sum(Path(p).exists() for p in listed) == 4
    assert read_all(store).equals(expected, check_metadata=True)
    assert read_listed(store, listed).equals(expected, check_metadata=True)
    assert compact_view(store, VIEW, 1, EAGER, now=LATER).deleted == 4
    assert read_all(store).equals(expected, check_metadata=True)


def test_a_replaced_file_reads_in_the_same_batches(store: OfflineStore) -> None:
    """A two-pass reader (the point-in-time join) checks that a file's batches did not change between
    its passes: a file read from its merged file's row range must be cut the same way."""
    write_files(store, [rows([(k, 60, 0, float(k)) for k in range(n)]) for n in (7, 1, 12, 5)])
    listed = store.files(VIEW, 1)
    before = [[b.num_rows for b in store.read_file(p, batch_size=5)] for p in listed]
    compact_view(store, VIEW, 1, EAGER, now=NOW)
    compact_view(store, VIEW, 1, EAGER, now=LATER)
    assert [[b.num_rows for b in store.read_file(p, batch_size=5)] for p in listed] == before
    # A file no merged file names is gone: the store's UNAVAILABLE (a new listing does not name it).
    with pytest.raises(OfflineStoreUnavailable, match=r"could not read .*: FileNotFoundError"):
        list(store.read_file(f"{Path(listed[0]).parent}/{uuid.uuid4()}.parquet"))


@pytest.mark.parametrize("batch_size", [1, 3, 4, 5, 100])
def test_a_replaced_file_is_read_a_row_group_at_a_time_in_the_same_batches(
    store: OfflineStore, monkeypatch: pytest.MonkeyPatch, batch_size: int
) -> None:
    """A replaced file's rows, a range of a merged file of many row groups (a big merged file), are read
    a row group at a time, not the range at once: the same rows, cut into the same batches as the file
    itself was."""
    small_groups = dataclasses.replace(EAGER, row_group_rows=4)
    write_files(store, [rows([(k, 60, 0, float(10 * n + k)) for k in range(n)]) for n in (7, 1, 12, 5, 3)])
    listed = store.files(VIEW, 1)
    before = [list(store.read_file(p, ["score", "user_id"], batch_size=batch_size)) for p in listed]
    compact_view(store, VIEW, 1, small_groups, now=NOW)
    compact_view(store, VIEW, 1, small_groups, now=LATER)
    (merged,) = store.files(VIEW, 1)
    assert pq.ParquetFile(merged).metadata.num_row_groups >= 7  # 28 rows, at most 4 a group
    opened: list[list[int]] = []
    real = pq.ParquetFile.read_row_group

    def one_group(self: pq.ParquetFile, i: int, *args: object, **kwargs: object) -> pa.Table:
        opened[-1].append(i)
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", one_group)
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", None)  # never the range at once
    for path, expected in zip(listed, before, strict=True):
        opened.append([])
        after = list(store.read_file(path, ["score", "user_id"], batch_size=batch_size))
        assert [b.num_rows for b in after] == [b.num_rows for b in expected]
        assert all(a.equals(b, check_metadata=True) for a, b in zip(after, expected, strict=True))
        assert opened[-1] == sorted(set(opened[-1]))  # each of its row groups once, in order


def test_the_policy_and_interval_come_from_aether_settings(tmp_path: Path) -> None:
    env = {
        "AETHER_HOME": str(tmp_path),
        "AETHER_OFFLINE_COMPACT_INTERVAL_S": "0",
        "AETHER_OFFLINE_COMPACT_MIN_FILES": "16",
        "AETHER_OFFLINE_COMPACT_GRACE_S": "7200",
    }
    settings = ControlPlaneSettings.from_env(env)
    assert settings.offline_compact_interval_s == 0
    assert settings.offline_compaction == CompactionPolicy(min_files=16, grace_s=7200)
    assert ControlPlaneSettings.from_env({"AETHER_HOME": str(tmp_path)}).offline_compact_interval_s == 600
    with pytest.raises(ConfigurationError, match="AETHER_OFFLINE_COMPACT_MIN_FILES"):
        ControlPlaneSettings.from_env({**env, "AETHER_OFFLINE_COMPACT_MIN_FILES": "0"})


def test_a_join_whose_files_are_merged_and_deleted_between_its_passes_is_unchanged(
    store: OfflineStore, registry: FeatureRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst timing (a join outlasting the grace): pass 1 reads the small files, then they are
    merged and deleted, and pass 2 reads their rows from the merged file at the same positions."""
    ensure_entity(registry)
    create_view(registry, feature_spec(VIEW, (("score", types_pb2.FLOAT64),)))
    write_files(store, numbered(9))
    labels = entity_rows({"user_id": np.arange(3).repeat(5)}, [at(60 * m + 30) for m in range(-1, 4)] * 3)
    expected = get_historical_features(store, registry, labels, [f"{VIEW}:score"], record=False)
    real_gather = pit._gather_values

    def merge_then_gather(*args: object, **kwargs: object) -> object:
        compact_view(store, VIEW, 1, EAGER, now=NOW)
        compact_view(store, VIEW, 1, EAGER, now=LATER)
        return real_gather(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pit, "_gather_values", merge_then_gather)
    result = get_historical_features(store, registry, labels, [f"{VIEW}:score"], record=False)
    assert len(store.files(VIEW, 1)) == 1
    assert (result.table, result.dataset_hash) == (expected.table, expected.dataset_hash)
