"""``OfflineStore.is_data_file``: the intent recovery removes only paths that name a data file the store's
own ``write`` gives (``offline/data_files.py``), real files written to a local root."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from control_plane.offline.store import OfflineStore


def written(store: OfflineStore) -> str:
    moment = dt.datetime(2026, 1, 2, 3, tzinfo=dt.UTC)
    rows = pa.table(
        {
            "sensor": pa.array([1], pa.int64()),
            "event_ts": pa.array([moment], pa.timestamp("us", tz="UTC")),
            "ingested_ts": pa.array([moment], pa.timestamp("us", tz="UTC")),
            "temperature_c": pa.array([20.5]),
        }
    )
    (path,) = store.write("climate", 1, rows)
    return path


def test_a_written_file_is_the_stores_and_nothing_else_is(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path / "offline"))
    path = written(store)
    assert store.is_data_file(path, "climate", 1)
    base = store.base_path
    partition, name = path.rsplit("/", 1)
    assert name[14] == "7", name
    refused = [
        str(tmp_path / "precious.txt"),  # outside the root
        f"{partition}/../../../../precious.txt",  # climbs out
        f"{base}/climate/v1/date=2026-01-02/../{name}",
        f"{base}/climate/v1/./date=2026-01-02/{name}",
        f"{base}//climate/v1/date=2026-01-02/{name}",
        f"file://{path}",  # a URI, not a filesystem path
        f"{base}x/climate/v1/date=2026-01-02/{name}",  # a sibling root sharing its prefix
        f"{partition}/.{name}",  # hidden
        f"{partition}/{name}.tmp",
        f"{partition}/{name.upper()}",
        # Not a time-ordered (v7) UUID: its version digit is the 15th character (the first "-7" may be
        # in its time bits, which any digit may start).
        f"{partition}/{name[:14]}4{name[15:]}",
        f"{base}/climate/v1/date=2026-13-02/{name}",  # no such date
        f"{base}/climate/v1/{name}",  # no partition
        f"{base}/climate/v1/date=2026-01-02/sub/{name}",
        f"{base}/climate/v1/date=2026-01-02/{name}\n",
    ]
    for other in refused:
        assert not store.is_data_file(other, "climate", 1), other
    assert not store.is_data_file(path, "climate", 2)  # another version's
    assert not store.is_data_file(path, "weather", 1)  # another view's
    for view in ("..", ".", "", "_x", "a/b"):
        assert not store.is_data_file(path, view, 1)
    assert not store.is_data_file(path, "climate", 0)
