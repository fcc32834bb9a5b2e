"""A training set recorded in the offline root is read back by its hash from the copies its record
names: whichever build of the same content wrote them, newest first, and a copy that is gone or changed
is NOT_FOUND or DATA_LOSS naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from clients.errors import DataLoss, NotFound
from clients.uris import redact_uri
from control_plane.features.registry import FeatureRegistry
from control_plane.offline.datasets import content_hash, read_dataset_record, record_dataset, write_parquet
from control_plane.offline.historical import get_historical_features
from control_plane.offline.store import OfflineStore
from control_plane.training.dataset import read_recorded_dataset
from tests.support.s3_server import FakeS3Server
from tests.unit.offline.builders import (
    at,
    create_view,
    ensure_entity,
    entity_rows,
    feature_rows,
    feature_spec,
)

REPO = Path(__file__).resolve().parents[3]
ACCESS_KEY, SECRET_KEY = "AKIARECORDEDCOPY0001", "recorded-copy-secret"


@pytest.fixture
def stats(registry: FeatureRegistry, store: OfflineStore) -> OfflineStore:
    ensure_entity(registry)
    create_view(registry, feature_spec("stats"))
    store.write("stats", 1, feature_rows({"user_id": [1]}, [at(0)], {"score": [0.5]}))
    return store


def test_a_copy_written_after_a_build_without_one_is_recorded_and_read_back(
    registry: FeatureRegistry, stats: OfflineStore, tmp_path: Path
) -> None:
    """The first record of a hash was kept whole: built once without an output path, a dataset could
    never be read back by hash, whatever copies were written later."""
    labels = entity_rows({"user_id": [1]}, [at(10)])
    first = get_historical_features(stats, registry, labels, ["stats:score"])  # exploring: no copy
    created = read_dataset_record(stats, first.dataset_hash)["created_at"]
    older, newer = tmp_path / "a" / "train.parquet", tmp_path / "b" / "train.parquet"
    for out in (older, newer):
        built = get_historical_features(stats, registry, labels, ["stats:score"], output_path=str(out))
        assert built.dataset_hash == first.dataset_hash and built.output_path == str(out)
    get_historical_features(stats, registry, labels, ["stats:score"])  # another build without a copy

    record = read_dataset_record(stats, first.dataset_hash)
    assert record["created_at"] == created  # the first build's record, with the copies added
    assert record["output_path"] == str(newer)
    assert record["output_paths"] == [str(newer), str(older)]
    back = read_recorded_dataset(first.dataset_hash, stats)
    assert back.table.equals(first.table) and json.loads(back.query)["output_path"] == str(newer)

    newer.unlink()  # the newest copy deleted: the older one, of equal content, is read
    assert json.loads(read_recorded_dataset(first.dataset_hash, stats).query)["output_path"] == str(older)

    older.write_bytes(b"not parquet")
    with pytest.raises(DataLoss, match=f"{older} cannot be read.*not found: {newer}"):
        read_recorded_dataset(first.dataset_hash, stats)
    older.unlink()
    with pytest.raises(
        NotFound, match=f"no copy of dataset {first.dataset_hash} is left: .*{newer}, {older}"
    ):
        read_recorded_dataset(first.dataset_hash, stats)


def test_a_record_from_before_the_list_of_copies_is_read_and_extended(
    registry: FeatureRegistry, stats: OfflineStore, tmp_path: Path
) -> None:
    labels = entity_rows({"user_id": [1]}, [at(10)])
    old = tmp_path / "old.parquet"
    built = get_historical_features(stats, registry, labels, ["stats:score"], output_path=str(old))
    path = Path(stats.base_path) / "_datasets" / f"{built.dataset_hash}.json"
    record = json.loads(path.read_text())
    del record["output_paths"]  # as records were written before
    path.write_text(json.dumps(record))
    assert read_recorded_dataset(built.dataset_hash, stats).table.equals(built.table)

    new = tmp_path / "new.parquet"
    get_historical_features(stats, registry, labels, ["stats:score"], output_path=str(new))
    assert read_dataset_record(stats, built.dataset_hash)["output_paths"] == [str(new), str(old)]


def test_labels_in_whole_seconds_and_date64_columns_are_read_back_by_hash(
    registry: FeatureRegistry, stats: OfflineStore, tmp_path: Path
) -> None:
    """Parquet gives timestamp[s] back as timestamp[ms] and date64 as date32: the copy hashed differently
    from the training set it holds, and reading it back by hash was DATA_LOSS."""
    labels = pa.table(
        {
            "user_id": [1],
            "event_ts": pa.array([at(10)], pa.timestamp("s", tz="UTC")),
            "day": pa.array([at(0).date()], pa.date64()),
        }
    )
    out = tmp_path / "train.parquet"
    built = get_historical_features(stats, registry, labels, ["stats:score"], output_path=str(out))
    back = read_recorded_dataset(built.dataset_hash, stats)
    assert back.dataset_hash == built.dataset_hash
    assert back.table.to_pylist() == built.table.to_pylist()


# A job's process reading a dataset back by hash, with the object store's credentials in its environment.
READ_BACK = """
import sys
from clients.errors import NotFound
from control_plane.offline.roots import open_filesystem
from control_plane.offline.store import OfflineStore
from control_plane.training.dataset import read_recorded_dataset
dataset_hash, root, copy = sys.argv[1:]
print(read_recorded_dataset(dataset_hash, OfflineStore(root)).num_rows)
filesystem, path = open_filesystem(copy)
filesystem.delete_file(path)
try:
    read_recorded_dataset(dataset_hash, OfflineStore(root))
except NotFound as error:
    print(error.message)
"""


def test_a_copy_on_an_object_store_is_recorded_by_its_uri_and_read_back(
    registry: FeatureRegistry, stats: OfflineStore
) -> None:
    """The copy was recorded and returned as the store's bare path (``aether/datasets/train.parquet``),
    which reading back by hash opened as a local file: a raw FileNotFoundError."""
    s3 = FakeS3Server()
    try:
        uri = s3.uri("datasets/train.parquet", ACCESS_KEY, SECRET_KEY)
        labels = entity_rows({"user_id": [1]}, [at(10)])
        built = get_historical_features(stats, registry, labels, ["stats:score"], output_path=uri)
        assert built.output_path == redact_uri(uri)
        assert built.output_path.startswith("s3://aether/datasets/train.parquet?endpoint_override=")
        assert ACCESS_KEY not in built.output_path and SECRET_KEY not in built.output_path
        assert read_dataset_record(stats, built.dataset_hash)["output_path"] == built.output_path
        assert "datasets/train.parquet" in s3.objects

        environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        environment |= {
            "AWS_ACCESS_KEY_ID": "AKIAJOBREADER0000001",
            "AWS_SECRET_ACCESS_KEY": "job-secret",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        done = subprocess.run(
            [sys.executable, "-c", READ_BACK, built.dataset_hash, stats.root, built.output_path],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        rows, missing = done.stdout.splitlines()
        assert rows == "1"
        assert missing == f"no copy of dataset {built.dataset_hash} is left: not found: {built.output_path}"
    finally:
        s3.close()


def test_view_typed_columns_as_polars_exports_them_are_read_back_by_hash(
    registry: FeatureRegistry, stats: OfflineStore, tmp_path: Path
) -> None:
    """Polars hands Arrow string_view and binary_view columns (and list_view from other tools): their
    serialization depends on how the views were laid out (inline or in a data buffer, what lies under a
    null), so the training set and its Parquet copy hashed differently and reading it back was
    DATA_LOSS."""
    labels = pa.table(
        {
            "user_id": [1, 1],
            "event_ts": pa.array([at(10), at(20)], pa.timestamp("us", tz="UTC")),
            "note": pa.array(["a note longer than twelve bytes", None], pa.string_view()),
            "blob": pa.array([b"x", None], pa.binary_view()),
            "tags": pa.array([[1, 2], None], pa.list_view(pa.int64())),
        }
    )
    out = tmp_path / "train.parquet"
    built = get_historical_features(stats, registry, labels, ["stats:score"], output_path=str(out))
    back = read_recorded_dataset(built.dataset_hash, stats)
    assert back.dataset_hash == built.dataset_hash
    assert back.table.to_pylist() == built.table.to_pylist()


def test_a_copy_recorded_while_the_hash_covered_nullable_flags_is_read_back(
    stats: OfflineStore, tmp_path: Path
) -> None:
    """The hash no longer covers a column's nullable flag (the same values are the same dataset): a
    table with a NOT NULL column hashes anew, and its copy recorded under the hash of then (computed by
    the code of then) still reads back by that hash."""
    table = pa.table(
        [pa.array([1, 2, 3]), pa.array([0.5, None, 2.0])],
        schema=pa.schema([pa.field("id", pa.int64(), nullable=False), ("label", pa.float64())]),
    )
    recorded_then = "f34bc824bb23bfdf0025ef37869a3a65e420d2e78a82ceb8dea6d5af8ce1dec5"
    copy = write_parquet(table, str(tmp_path / "train.parquet"))
    record_dataset(stats, recorded_then, {"output_path": copy})
    back = read_recorded_dataset(recorded_then, stats)
    assert back.table.equals(table) and back.dataset_hash == recorded_then
    assert content_hash(table) != recorded_then
