"""``aetherctl offline compact`` and the background compaction against a real control plane (gRPC on
loopback, every ``db_url`` backend, real Parquet files): it prints what it merged, the view's files
shrink to one per partition, and a training set built through the control plane keeps its hash."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clients.aether.v1 import types_pb2
from clients.errors import NotFound
from clients.sdk.offline import OfflineFeaturesClient
from control_plane.api.offline_features import add_to_server
from control_plane.cli.main import main
from control_plane.ingestion import intents
from control_plane.offline.compaction import CompactionPolicy
from control_plane.offline.store import OfflineStore
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.unit.offline.builders import (
    at,
    create_view,
    ensure_entity,
    entity_rows,
    feature_rows,
    feature_spec,
)
from tests.unit.offline.test_damaged_pages import damage_pages

Capture = pytest.CaptureFixture[str]
#: Files merge as soon as there are more than 4 in an ended day; replaced ones go at the next pass.
POLICY = CompactionPolicy(min_files=4, min_age_s=0, lateness_s=0, grace_s=0)
FILES_PER_DAY = 8


async def start(tmp_path: Path, db_url: str, interval_s: float) -> ControlPlaneServer:
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=db_url,
        listen_addr="127.0.0.1:0",
        offline_compaction=POLICY,
        offline_compact_interval_s=interval_s,
    )
    server = await start_server(settings, services=[add_to_server])
    await asyncio.to_thread(ensure_entity, server.registry)
    spec = feature_spec("stats", (("score", types_pb2.FLOAT64),))
    await asyncio.to_thread(create_view, server.registry, spec)
    store = OfflineStore(str(tmp_path / "home" / "offline"))
    for day in range(2):  # 2024-03-01 and -02; exact ties across files: the tie order must hold
        for n in range(FILES_PER_DAY):
            users = np.arange(20)
            rows = feature_rows(
                {"user_id": users}, [at(86_400 * day + 600 * (n % 3))] * 20, {"score": users * 1.0 + n}
            )
            store.write("stats", 1, rows)
    return server


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[ControlPlaneServer]:
    handle = await start(tmp_path, db_url, interval_s=0)
    yield handle
    await handle.stop()


def labels() -> pa.Table:
    times = [at(s) for s in (700, 1300, 86_500, 87_700)] * 25
    return entity_rows({"user_id": np.arange(25).repeat(4)}, times)


def training_hash(address: str) -> str:
    with OfflineFeaturesClient(address) as client:
        return client.historical_features(labels(), ["stats:score"]).dataset_hash


async def aetherctl(capsys: Capture, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def data_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "home" / "offline" / "stats" / "v1").glob("date=*/*.parquet"))


async def test_aetherctl_offline_compact_merges_and_later_deletes(
    server: ControlPlaneServer, tmp_path: Path, capsys: Capture
) -> None:
    store = OfflineStore(str(tmp_path / "home" / "offline"))
    before = await asyncio.to_thread(training_hash, server.address)
    written = data_files(tmp_path)
    assert len(written) == 2 * FILES_PER_DAY
    base = ["--control-plane", server.address, "offline", "compact", "--view", "stats"]

    code, out, err = await aetherctl(capsys, *base, "--dry-run")
    assert code == 0, err
    assert "would merge 16 file(s) into 2" in out and "would delete 0 replaced file(s)" in out
    assert data_files(tmp_path) == written

    code, out, err = await aetherctl(capsys, *base, "--version", "1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "DATE", "FILES", "IN", "FILE", "OUT", "ROWS"]
    assert [line.split()[:3] for line in lines[1:3]] == [["v1", "2024-03-01", "8"], ["v1", "2024-03-02", "8"]]
    assert [line.split()[-1] for line in lines[1:3]] == ["160", "160"]
    assert "merged 16 file(s) into 2" in out
    assert len(store.files("stats", 1)) == 2
    assert await asyncio.to_thread(training_hash, server.address) == before

    code, out, err = await aetherctl(capsys, *base, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["merged"] == [] and report["deleted_files"] == 16
    assert len(data_files(tmp_path)) == 2
    assert await asyncio.to_thread(training_hash, server.address) == before


async def test_compacting_an_unknown_view_is_not_found_and_a_view_without_files_has_nothing_to_merge(
    server: ControlPlaneServer, capsys: Capture
) -> None:
    """The files alone decided: a typo'd view and a registered one with no offline data yet (the README's
    ``compact --view zone_demand --dry-run`` before any stream data) both answered NOT_FOUND "has no
    offline data". The registry decides whether the view exists; no files is nothing to merge."""
    base = ["--control-plane", server.address, "offline", "compact"]
    code, _, err = await aetherctl(capsys, *base, "--view", "no_such_view", "--dry-run")
    assert code == 1 and err.strip() == "error: NOT_FOUND: feature view 'no_such_view' not found", err
    await asyncio.to_thread(create_view, server.registry, feature_spec("empty"))
    code, out, err = await aetherctl(capsys, *base, "--view", "empty", "--dry-run")
    assert code == 0, err
    assert out.splitlines() == ["would merge 0 file(s) into 0", "would delete 0 replaced file(s)"]
    with OfflineFeaturesClient(server.address) as client:
        assert not (await asyncio.to_thread(client.compact, "empty", 1)).merged
        with pytest.raises(NotFound, match="version 7"):
            await asyncio.to_thread(client.compact, "stats", 7)
        # A deleted view's offline data stays (training sets name its files): it can still be compacted.
        await asyncio.to_thread(server.registry.delete_feature_view, "stats")
        assert len((await asyncio.to_thread(client.compact, "stats", 1)).merged) == 2


def day_files(tmp_path: Path, day: str) -> list[str]:
    return [p.name for p in data_files(tmp_path) if p.parent.name == f"date={day}"]


async def test_compacting_past_a_damaged_file_answers_ok_listing_its_partition_and_what_was_merged(
    server: ControlPlaneServer, tmp_path: Path, capsys: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that does not decode leaves its day as it is and the next day is merged. The call answered
    FAILED_PRECONDITION, what it had merged only in the error's text (the answer had no field for a
    skipped partition): a client got an error for a call that did the rest of its work. Now it answers OK
    with the day in ``damaged_partitions``, the server logs what to do, and ``aetherctl`` lists the day
    and exits 1."""
    store = OfflineStore(str(tmp_path / "home" / "offline"))
    users = np.arange(200)  # damage_pages needs 200 int64 values
    rows = feature_rows({"user_id": users}, [at(600)] * 200, {"score": users * 1.0})
    (damaged,) = await asyncio.to_thread(store.write, "stats", 1, rows)
    await asyncio.to_thread(damage_pages, Path(damaged))
    day1 = day_files(tmp_path, "2024-03-01")
    day2 = day_files(tmp_path, "2024-03-02")
    with (
        caplog.at_level(logging.WARNING, logger="aether.offline"),
        OfflineFeaturesClient(server.address) as client,
    ):
        answer = await asyncio.to_thread(client.compact, "stats", 1)
    ((version, date, error),) = [(d.version, d.date, d.error) for d in answer.damaged_partitions]
    assert (version, date) == (1, "2024-03-01") and damaged in error and "Output buffer size" in error
    assert [(run.date, sorted(run.files_in)) for run in answer.merged] == [("2024-03-02", day2)]
    assert answer.deleted_files == 0 and not answer.busy_partitions
    assert day_files(tmp_path, "2024-03-01") == day1  # the damaged day as it was
    assert len([f for f in store.files("stats", 1) if "date=2024-03-02" in f]) == 1  # the next day merged
    (warned,) = [r for r in caplog.records if r.levelno >= logging.WARNING and "stats" in r.getMessage()]
    assert damaged in warned.getMessage() and "v1/date=2024-03-01" in warned.getMessage()
    assert "move the damaged file aside or restore it from a backup" in warned.getMessage()

    # The next pass deletes the day's replaced files, and still lists the damaged day: exit 1 for scripts.
    base = ["--control-plane", server.address, "offline", "compact", "--view", "stats", "--json"]
    code, out, err = await aetherctl(capsys, *base)
    assert code == 1, err
    report = json.loads(out)
    assert report["damaged_partitions"] == [{"version": 1, "date": "2024-03-01", "error": error}]
    assert report["merged"] == [] and report["deleted_files"] == 8
    assert "move the damaged file aside or restore it from a backup" in err
    assert day_files(tmp_path, "2024-03-01") == day1
    assert len(day_files(tmp_path, "2024-03-02")) == 1  # only the merged file left


async def test_a_dry_run_lists_a_partition_whose_file_footer_does_not_decode(
    server: ControlPlaneServer, tmp_path: Path, capsys: Capture
) -> None:
    """A dry run reads footers only, so it finds a file whose footer does not decode (not damaged pages,
    which only merging reads). It answered FAILED_PRECONDITION too; now OK with the partition listed and
    what would be merged, and ``aetherctl --dry-run`` prints both, changes nothing and exits 1."""
    store = OfflineStore(str(tmp_path / "home" / "offline"))
    (damaged,) = await asyncio.to_thread(
        store.write, "stats", 1, feature_rows({"user_id": np.arange(3)}, [at(600)] * 3, {"score": [1.0] * 3})
    )
    await asyncio.to_thread(Path(damaged).write_bytes, b"not a Parquet file" * 10)
    written = data_files(tmp_path)
    with OfflineFeaturesClient(server.address) as client:
        answer = await asyncio.to_thread(client.compact, "stats", 1, dry_run=True)
    ((version, date, error),) = [(d.version, d.date, d.error) for d in answer.damaged_partitions]
    assert (version, date) == (1, "2024-03-01") and damaged in error and "Parquet magic bytes" in error
    assert [(run.date, len(run.files_in)) for run in answer.merged] == [("2024-03-02", FILES_PER_DAY)]

    base = ["--control-plane", server.address, "offline", "compact", "--view", "stats", "--dry-run"]
    code, out, err = await aetherctl(capsys, *base)
    assert code == 1, err
    assert "would merge 8 file(s) into 1" in out and "would delete 0 replaced file(s)" in out
    (row,) = [line for line in out.splitlines() if damaged in line]
    assert row.split()[:2] == ["v1", "2024-03-01"] and row.endswith(error)
    assert err.startswith("warning: 1 partition(s) left as they were")
    assert "move the damaged file aside or restore it from a backup" in err
    assert data_files(tmp_path) == written  # a dry run changes nothing


async def test_the_control_plane_compacts_in_the_background(tmp_path: Path, db_url: str) -> None:
    server = await start(tmp_path, db_url, interval_s=0.2)
    try:
        for _ in range(300):  # up to 30 s
            if len(data_files(tmp_path)) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(data_files(tmp_path)) == 2  # merged, and the replaced files deleted by a later pass
        assert len(OfflineStore(str(tmp_path / "home" / "offline")).files("stats", 1)) == 2
    finally:
        await server.stop()


async def test_the_control_plane_never_merges_a_file_an_open_ingestion_intent_names(
    server: ControlPlaneServer, tmp_path: Path
) -> None:
    # A file of a chunk not yet counted (its run died, or has not committed): the intents' recovery may
    # remove it, and merged its rows would outlive it. The background passes get the same ``pending``
    # (add_to_server), but when their first pass comes is not the test's to choose.
    uncounted = str(data_files(tmp_path)[0])
    sessions = server.context.sessions
    await asyncio.to_thread(intents.announce, sessions, "dead-run", "stats", 1, 0, [uncounted])
    with OfflineFeaturesClient(server.address) as client:
        await asyncio.to_thread(client.compact, "stats", 1)
        await asyncio.to_thread(client.compact, "stats", 1)  # the replaced files go
    left = [str(path) for path in data_files(tmp_path)]
    assert len(left) == 3 and uncounted in left  # each day merged, less the uncounted file
