"""Stage 3: a point-in-time training set through the offline SDK. Label times every 15 minutes per zone
over the history; the features of each row are the latest values at or before its label time (never
later). The label (next hour's demand) is computed from those features by the world's relationship, the
labelled entity rows are written to Parquet, and the training set the job will train on is built from
that file on the server, which returns its dataset hash."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from clients.sdk.offline import OfflineFeaturesClient
from control_plane.demo import world
from control_plane.demo.progress import Say


@dataclass(frozen=True)
class TrainingSet:
    entity_rows_path: Path
    rows: int
    dataset_hash: str
    matched: dict[str, int]


def pinned(views: dict[str, int]) -> list[str]:
    """The model features with their view versions pinned (``view@N:feature``)."""
    refs = []
    for ref in world.MODEL_FEATURES:
        view, feature = ref.split(":")
        refs.append(f"{view}@{views[view]}:{feature}")
    return refs


def feature_columns(table: pa.Table) -> dict[str, npt.NDArray[np.float64]]:
    """The model features of a joined table by their short names, nulls as NaN."""
    columns: dict[str, npt.NDArray[np.float64]] = {}
    for ref in world.MODEL_FEATURES:
        short = ref.split(":")[1]
        name = next(n for n in table.column_names if n.endswith(f":{short}") or n == short)
        columns[short] = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
    return columns


def label_times(zones: int, times: list[dt.datetime]) -> pa.Table:
    return pa.table(
        {
            "zone_id": pa.array(np.tile(np.arange(zones, dtype=np.int64), len(times))),
            "event_ts": pa.array(np.repeat(np.array(times, dtype=object), zones).tolist(), world.TS),
        }
    )


def labelled_rows(
    offline: OfflineFeaturesClient, rows: pa.Table, refs: list[str], relationship: world.Relationship,
    rng: np.random.Generator,
) -> pa.Table:  # fmt: skip
    """``rows`` with the label, keeping only rows whose every model feature was found."""
    joined = offline.historical_features(rows, refs).table
    features = feature_columns(joined)
    complete = np.all([np.isfinite(v) for v in features.values()], axis=0)
    demand = relationship.demand(features, rng)
    labelled = rows.append_column(world.LABEL, pa.array(demand))
    return labelled.filter(pa.array(complete))


def build_training_set(
    address: str, folder: Path, name: str, rows: pa.Table, refs: list[str], relationship: world.Relationship,
    rng: np.random.Generator,
) -> TrainingSet:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    with OfflineFeaturesClient(address) as offline:
        pq.write_table(labelled_rows(offline, rows, refs, relationship, rng), path)
        result = offline.historical_features(str(path), refs)
    return TrainingSet(path, result.row_count, result.dataset_hash, dict(result.matched))


def history_training_set(
    address: str, home: Path, size: world.Size, refs: list[str], now: dt.datetime, rng: np.random.Generator,
    say: Say,
) -> TrainingSet:  # fmt: skip
    start = world.hour_floor(now) - dt.timedelta(hours=size.hours) + dt.timedelta(hours=1)
    times = []
    moment = start
    while moment < now - dt.timedelta(minutes=1):
        times.append(moment)
        moment += dt.timedelta(minutes=15)
    training = build_training_set(
        address, home / "datasets", "history", label_times(size.zones, times), refs, world.BEFORE, rng
    )
    matched = ", ".join(f"{k} {v}" for k, v in sorted(training.matched.items()))
    say(
        f"[3/8] point-in-time training set: {training.rows} rows ({matched}); "
        f"dataset sha256 {training.dataset_hash[:16]}…"
    )
    return training
