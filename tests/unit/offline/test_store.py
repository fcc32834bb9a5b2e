"""The offline store: layout, round trips through local paths and ``file://`` URIs, time-bounded scans,
and atomic files (a writer killed mid-write leaves nothing partial that a reader would see)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.errors import InvalidArgument
from control_plane.offline.data_file_writes import time_ordered_uuid
from control_plane.offline.merged import is_written_name
from control_plane.offline.roots import default_offline_root
from control_plane.offline.store import OfflineStore
from tests.unit.offline.builders import TS, at, feature_rows

REPO = Path(__file__).resolve().parents[3]


def sample(n: int = 4, start_s: float = 0, step_s: float = 3600 * 13) -> pa.Table:
    return feature_rows(
        {"user_id": list(range(n))},
        [at(start_s + i * step_s) for i in range(n)],
        {"score": [float(i) for i in range(n)]},
    )


def test_rows_are_partitioned_by_view_version_and_event_date(store: OfflineStore, tmp_path: Path) -> None:
    paths = store.write("stats", 2, sample(4))  # 0h, 13h, 26h, 39h after 2024-03-01 00:00 UTC
    relative = sorted(str(Path(p).relative_to(tmp_path / "offline").parent) for p in paths)
    assert relative == ["stats/v2/date=2024-03-01", "stats/v2/date=2024-03-02"]
    assert all(Path(p).name.endswith(".parquet") and len(Path(p).stem) == 36 for p in paths)
    assert store.versions("stats") == [2]
    assert store.dates("stats", 2) == [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]
    back = pa.Table.from_batches(list(store.scan("stats", 2)))
    assert sorted(back.column("user_id").to_pylist()) == [0, 1, 2, 3]
    assert back.schema.field("event_ts").type == TS


def test_a_file_uri_reads_what_a_local_path_wrote(tmp_path: Path) -> None:
    local = OfflineStore(str(tmp_path / "offline"))
    by_uri = OfflineStore((tmp_path / "offline").as_uri())
    local.write("stats", 1, sample(3))
    by_uri.write("stats", 1, sample(2, start_s=7200))
    assert by_uri.files("stats", 1) == local.files("stats", 1)
    assert sum(b.num_rows for b in by_uri.scan("stats", 1)) == 5


def test_scan_bounds_event_time_half_open_and_selects_columns(store: OfflineStore) -> None:
    store.write("stats", 1, sample(4))
    batches = list(store.scan("stats", 1, start=at(3600 * 13), end=at(3600 * 39), columns=["score"]))
    table = pa.Table.from_batches(batches)
    assert table.column_names == ["score"]
    assert table.column("score").to_pylist() == [1.0, 2.0]  # 13h and 26h; 39h is the excluded end


def test_timestamps_are_normalized_to_utc_microseconds(store: OfflineStore) -> None:
    table = sample(2).set_column(
        1, "event_ts", sample(2).column("event_ts").cast(pa.timestamp("ms", "+02:00"))
    )
    store.write("stats", 1, table)
    back = pa.Table.from_batches(list(store.scan("stats", 1)))
    assert back.schema.field("event_ts").type == TS
    assert back.column("event_ts").to_pylist() == [at(0), at(3600 * 13)]


def test_nanoseconds_are_floored_to_the_microsecond_as_ingestion_drops_them(store: OfflineStore) -> None:
    """A nanosecond event time below the microsecond (pandas' unit) was refused with a bare ArrowInvalid
    (INTERNAL); its digits below the microsecond are dropped, before 1970 too, whatever the zone."""
    ns = pa.array([1_700_000_000_000_000_500, -1500], pa.timestamp("ns", tz="America/New_York"))
    table = feature_rows({"user_id": [1, 2]}, [at(0), at(0)], {"score": [1.0, 2.0]})
    store.write("stats", 1, table.set_column(1, "event_ts", ns).set_column(2, "ingested_ts", ns))
    back = pa.Table.from_batches(list(store.scan("stats", 1))).sort_by("user_id")
    assert back.column("event_ts").cast(pa.int64()).to_pylist() == [1_700_000_000_000_000, -2]
    assert back.column("ingested_ts").cast(pa.int64()).to_pylist() == [1_700_000_000_000_000, -2]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t.drop_columns(["ingested_ts"]), "ingested_ts"),
        (lambda t: t.set_column(1, "event_ts", t.column("event_ts").cast(pa.timestamp("us"))), "event_ts"),
        (lambda t: t.set_column(1, "event_ts", pa.array([1, 2, 3, 4])), "event_ts"),
        (
            lambda t: t.set_column(
                1, "event_ts", pa.array([0, 2**62, 3, -(2**62)], pa.timestamp("ms", tz="UTC"))
            ),
            r"'event_ts' holds 2 time\(s\) beyond the range .* the first 4611686018427387904 ms",
        ),
        (lambda t: t.append_column("event_ts", t.column("event_ts")), "'event_ts' appears 2 times"),
    ],
)
def test_bad_time_columns_are_refused_naming_the_column(
    store: OfflineStore, change: object, named: str
) -> None:
    with pytest.raises(InvalidArgument, match=named):
        store.write("stats", 1, change(sample(4)))  # type: ignore[operator]
    assert store.files("stats", 1) == []


def test_view_names_cannot_escape_the_root(store: OfflineStore) -> None:
    for name in ("../elsewhere", "a/b", ".hidden", "_datasets"):
        with pytest.raises(InvalidArgument):
            store.write(name, 1, sample(1))


def test_later_writes_list_after_earlier_ones(store: OfflineStore) -> None:
    written = [store.write("stats", 1, sample(1))[0] for _ in range(20)]
    assert store.files("stats", 1) == written


def test_names_given_one_after_another_sort_in_that_order_past_the_sequence_wrap() -> None:
    """A file's name is its place in the partition's write order (the join's tie order, compaction's
    runs). Names are given far faster than one per millisecond, so the 12-bit sequence within one
    millisecond wraps every 4,096 names: each wrap gave a name sorting before the one just given, the
    later of two writes to a partition listed first, and an exact tie went to the earlier write."""
    names = [time_ordered_uuid() for _ in range(5 * 4096 + 2)]
    out_of_order = [i for i in range(1, len(names)) if names[i] <= names[i - 1]]
    assert out_of_order == []
    assert all(is_written_name(f"{name}.parquet") for name in names)


def test_a_write_announces_every_path_before_it_writes_any(store: OfflineStore) -> None:
    """``announce`` (ingestion's intent) gets the exact paths the write creates, one per date, while none
    exists yet; one that raises stops the write with nothing written."""
    announced: list[list[str]] = []

    def announce(paths: Sequence[str]) -> None:
        announced.append(list(paths))
        assert not any(Path(path).exists() for path in paths)

    written = store.write("stats", 1, sample(4), announce=announce)
    assert announced == [written] and len(written) == 2  # 13 h apart: two dates

    def refuse(paths: Sequence[str]) -> None:
        raise RuntimeError("intent not recorded")

    with pytest.raises(RuntimeError, match="intent not recorded"):
        store.write("stats", 1, sample(4, start_s=86_400 * 10), announce=refuse)
    assert store.files("stats", 1) == written


def test_readers_ignore_temporary_and_foreign_files(store: OfflineStore) -> None:
    [path] = store.write("stats", 1, sample(1))
    partition = Path(path).parent
    (partition / ".0f3a.tmp").write_bytes(b"PAR1 half a file")
    (partition / "_SUCCESS").write_bytes(b"")
    (partition / "notes.txt").write_text("not data")
    assert store.files("stats", 1) == [path]


def test_a_writer_killed_mid_write_leaves_only_complete_files(tmp_path: Path) -> None:
    """SIGKILL a process that writes large files in a loop, at varying points, until it has finished some
    files and died in the middle of one (a hidden temporary fragment is left): every visible file is
    complete."""
    root = tmp_path / "offline"
    writer = textwrap.dedent(
        f"""
        import datetime as dt, sys
        import numpy as np, pyarrow as pa
        sys.path.insert(0, {str(REPO)!r})
        from control_plane.offline.store import OfflineStore
        n = 400_000
        ts = pa.array(np.full(n, 1_709_251_200_000_000), pa.timestamp("us", tz="UTC"))
        table = pa.table({{"user_id": np.arange(n), "event_ts": ts, "ingested_ts": ts,
                          "score": np.random.default_rng(0).random(n)}})
        store = OfflineStore({str(root)!r})
        print("ready", flush=True)
        while True:
            store.write("stats", 1, table)
        """
    )
    store = OfflineStore(str(root))
    fragments: list[Path] = []
    for attempt in range(10):
        process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(0.2 + 0.1 * attempt)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        fragments = [p for p in root.rglob(".*") if p.is_file()]
        if fragments and store.files("stats", 1):
            break
    assert fragments, "the writer was never caught mid-file"
    files = store.files("stats", 1)
    assert files and not any(Path(f).name.startswith(".") for f in files)
    for path in files:
        assert pq.read_table(path).num_rows == 400_000


def test_default_root_follows_the_environment(tmp_path: Path) -> None:
    assert default_offline_root({"AETHER_OFFLINE_ROOT": "s3://bucket/features"}) == "s3://bucket/features"
    assert default_offline_root({"AETHER_HOME": str(tmp_path)}) == str(tmp_path / "offline")


def test_float_and_time_columns_are_stored_plain_and_keys_with_a_dictionary(store: OfflineStore) -> None:
    """The join decodes every value of the feature columns it reads: floats and timestamps are written
    without a dictionary or a codec (they rarely repeat), keys and integers keep both."""
    table = sample(50, step_s=60).append_column("trips", pa.array([i % 3 for i in range(50)], pa.int64()))
    [path] = store.write("stats", 1, table)
    row_group = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {row_group.column(i).path_in_schema: row_group.column(i) for i in range(row_group.num_columns)}
    for name in ("score", "event_ts", "ingested_ts"):
        assert not chunks[name].has_dictionary_page, name
        assert chunks[name].compression == "UNCOMPRESSED", name
    for name in ("user_id", "trips"):
        assert chunks[name].has_dictionary_page, name
        assert chunks[name].compression == "SNAPPY", name
    assert pq.read_table(path).equals(table)


def test_stale_temporary_files_of_killed_writers_are_swept(store: OfflineStore) -> None:
    """A writer killed mid-write leaves a hidden fragment (the test above) that nothing removed."""
    [path] = store.write("stats", 1, sample(1))
    partition = Path(path).parent
    records = Path(store.base_path) / "_datasets"
    records.mkdir()
    stale = [partition / ".0f3a.tmp", records / f".{'a' * 64}.json.1b2c.tmp"]
    young = partition / ".9e8d.tmp"
    others = [partition / ".keep", partition / "notes.tmp", Path(path)]
    for file in [*stale, young, *others[:2]]:
        file.write_bytes(b"PAR1 half a file")
    an_hour_ago = time.time() - 3600
    for file in [*stale, *others]:
        os.utime(file, (an_hour_ago, an_hour_ago))
    assert store.sweep_stale_temps() == 2
    assert not any(file.exists() for file in stale)
    assert young.exists() and all(file.exists() for file in others)
    assert store.files("stats", 1) == [path]


def test_an_event_time_no_date_partition_can_name_is_refused_before_any_file(store: OfflineStore) -> None:
    """A time before year 1 has no Python date: naming its partition raised OverflowError (an internal
    error) after the files of earlier dates were written. It is refused up front now, naming the column."""
    rows = sample(2)
    before_year_1 = pa.array([0, -62_135_596_800_000_001], pa.int64()).cast(TS)
    with pytest.raises(InvalidArgument, match=r"'event_ts' holds 1 time\(s\) outside years 1 to 9999"):
        store.write(
            "stats", 1, rows.set_column(rows.schema.get_field_index("event_ts"), "event_ts", before_year_1)
        )
    assert store.files("stats", 1) == []
