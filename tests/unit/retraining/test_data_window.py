"""The data-window check reads a retraining config's entity rows file as the training job's
GetHistoricalFeatures call will: under the datasets root, a relative path taken under it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clients.aether.v1 import jobs_pb2
from clients.aether.v1 import retraining_pb2 as pb
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.offline.store import OfflineStore
from control_plane.retraining.data_window import WindowCheck, check_window


def _check(tmp_path: Path, entity_rows_path: str, root: Path) -> WindowCheck:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}")
    upgrade_to_head(engine)
    try:
        config = pb.TriggerConfig(deployment="d", entity_rows_path=entity_rows_path, min_rows=2)
        return check_window(
            config,
            jobs_pb2.JobSpec(name="train"),
            FeatureRegistry(create_session_factory(engine)),
            OfflineStore(str(tmp_path / "offline")),
            dt.datetime.now(dt.UTC),
            str(root),
        )
    finally:
        engine.dispose()


def test_entity_rows_under_the_datasets_root_are_read_a_relative_path_under_it(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    pq.write_table(pa.table({"sensor_id": [1, 2, 3]}), root / "rows.parquet")
    for path in ("rows.parquet", str(root / "rows.parquet")):
        check = _check(tmp_path, path, root)
        assert check.passed, check.reasons


def test_entity_rows_outside_the_datasets_root_block_the_window(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    outside = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"sensor_id": [1, 2, 3]}), outside)  # readable, but not where the job may read
    for path in (str(outside), "../rows.parquet"):
        check = _check(tmp_path, path, root)
        assert not check.passed
        assert any("outside the datasets root" in reason for reason in check.reasons), check.reasons
