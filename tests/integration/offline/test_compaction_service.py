"""``aetherctl offline compact`` and the background compaction against a real control plane (gRPC on
loopback, every ``db_url`` backend, real Parquet files): it prints what it merged, the view's files
shrink to one per partition, and a training set built through the control plane keeps its hash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clients.aether.v1 import types_pb2
from clients.errors import FailedPrecondition, NotFound
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


async def test_compacting_past_a_damaged_file_answers_failed_precondition_naming_it_and_what_was_merged(
    server: ControlPlaneServer, tmp_path: Path
) -> None:
    """A file that does not decode stopped the call at its partition: the next day was never compacted,
    and the answer named the file but not what the call had merged. Now its day is left as it is, the
    next is merged, and the answer names both (its report has no field for a skipped partition)."""
    store = OfflineStore(str(tmp_path / "home" / "offline"))
    users = np.arange(200)  # damage_pages needs 200 int64 values
    rows = feature_rows({"user_id": users}, [at(600)] * 200, {"score": users * 1.0})
    (damaged,) = await asyncio.to_thread(store.write, "stats", 1, rows)
    await asyncio.to_thread(damage_pages, Path(damaged))
    day1 = [p.name for p in data_files(tmp_path) if p.parent.name == "date=2024-03-01"]
    with OfflineFeaturesClient(server.address) as client, pytest.raises(FailedPrecondition) as raised:
        await asyncio.to_thread(client.compact, "stats", 1)
    message = str(raised.value)
    assert "v1/date=2024-03-01" in message and damaged in message and "Output buffer size" in message
    assert "move the damaged file aside or restore it from a backup" in message
    assert "the rest was compacted: 8 file(s) merged into 1, 0 replaced file(s) deleted" in message
    after = [p.name for p in data_files(tmp_path) if p.parent.name == "date=2024-03-01"]
    assert after == day1  # the damaged day as it was
    assert len([f for f in store.files("stats", 1) if "date=2024-03-02" in f]) == 1  # the next day merged


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
