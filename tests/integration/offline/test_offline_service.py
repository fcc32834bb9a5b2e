"""``aether.v1.OfflineFeatures`` on a real control plane (gRPC on loopback, every ``db_url`` backend):
the SDK and ``aetherctl historical`` get the same training set and dataset hash as the in-process core,
in pieces small enough for any gRPC limit, and errors arrive with their status codes."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.aether.v1 import tracking_pb2, types_pb2
from clients.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from clients.sdk.auth import ChannelSecurity
from clients.sdk.offline import OfflineFeaturesClient
from control_plane.api.auth import AuthSettings
from control_plane.api.offline_features import add_to_server
from control_plane.cli import historical
from control_plane.db import write_session
from control_plane.ingestion.tables import IngestionRunRow
from control_plane.offline.historical import get_historical_features
from control_plane.offline.store import OfflineStore
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from control_plane.tracking.store import TrackingStore
from tests.unit.offline.builders import (
    TS,
    at,
    create_view,
    ensure_entity,
    entity_rows,
    feature_rows,
    feature_spec,
)

USERS = 1000


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[ControlPlaneServer]:
    settings = ControlPlaneSettings(home=tmp_path / "home", db_url=db_url, listen_addr="127.0.0.1:0")
    handle = await start_server(settings, services=[add_to_server])
    yield handle
    await handle.stop()


@pytest.fixture
async def store(server: ControlPlaneServer, tmp_path: Path) -> OfflineStore:
    """The server's offline store, holding view ``stats`` (score, trips) for users 0..999 every hour."""
    registry = server.registry
    await asyncio.to_thread(ensure_entity, registry)
    spec = feature_spec("stats", (("score", types_pb2.FLOAT64), ("trips", types_pb2.INT64)), ttl_seconds=7200)
    await asyncio.to_thread(create_view, registry, spec)
    store = OfflineStore(str(tmp_path / "home" / "offline"))
    hours = 6
    users = np.tile(np.arange(USERS), hours)
    times = [at(3600 * h) for h in range(hours) for _ in range(USERS)]
    rows = feature_rows({"user_id": users}, times, {"score": users * 0.5, "trips": np.arange(USERS * hours)})
    store.write("stats", 1, rows)
    return store


def labels(n: int) -> pa.Table:
    rng = np.random.default_rng(7)
    return entity_rows(
        {"user_id": rng.integers(0, USERS + 100, n)},  # some users have no rows
        [at(float(s)) for s in rng.integers(-3600, 12 * 3600, n)],
    )


async def test_sdk_gets_the_training_set_in_pieces(server: ControlPlaneServer, store: OfflineStore) -> None:
    rows = labels(300_000)  # 4.8 MB of Arrow in, 12 MB out: past gRPC's 4 MiB message limit, so in pieces
    expected = await asyncio.to_thread(
        get_historical_features, store, server.registry, rows, ["stats", "stats@1:trips"], record=False
    )
    with OfflineFeaturesClient(server.address) as client:
        table, dataset_hash = await asyncio.to_thread(
            client.get_historical_features, rows, ["stats", "stats@1:trips"]
        )
    assert table.equals(expected.table)
    assert dataset_hash == expected.dataset_hash
    assert 0 < expected.matched["stats:score"] < rows.num_rows  # labels before the first row or too old


async def test_entity_rows_from_a_server_path_and_output_written_there(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    datasets = tmp_path / "home" / "datasets"  # the server's datasets root
    datasets.mkdir(parents=True)
    entities = datasets / "entities.parquet"
    pq.write_table(labels(500), entities)
    out = datasets / "train" / "set.parquet"
    with OfflineFeaturesClient(server.address) as client:
        result = await asyncio.to_thread(
            client.historical_features,
            str(entities),
            ["stats:score"],
            output_path=str(out),
            summary_only=True,
        )
    assert result.table.num_rows == 0 and result.row_count == 500
    written = pq.read_table(out)
    assert written.num_rows == 500 and written.column_names[-1] == "stats:score"
    assert result.matched == {"stats:score": 500 - written.column("stats:score").null_count}
    assert result.output_path == str(out)


async def test_entity_rows_from_a_server_path_given_as_a_path_object(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """A pathlib.Path was streamed as a table: UNKNOWN "Exception iterating requests!"."""
    datasets = tmp_path / "home" / "datasets"
    datasets.mkdir(parents=True)
    pq.write_table(labels(20), datasets / "entities.parquet")
    with OfflineFeaturesClient(server.address) as client:
        result = await asyncio.to_thread(
            client.historical_features, datasets / "entities.parquet", ["stats:score"]
        )
    assert result.row_count == 20 and result.table.column_names[-1] == "stats:score"


@pytest.mark.parametrize(
    ("features", "rows", "error", "message"),
    [
        (["nope"], labels(3), NotFound, "nope"),
        (["stats:nope"], labels(3), NotFound, "nope"),
        (["stats@7"], labels(3), NotFound, "7"),
        (["stats::"], labels(3), InvalidArgument, "malformed"),
        (["stats"], labels(3).drop_columns(["user_id"]), InvalidArgument, "user_id"),
        (["stats"], labels(3).drop_columns(["event_ts"]), InvalidArgument, "timestamp"),
        (
            ["stats"],
            pa.table(
                {"user_id": [1], "event_ts": pa.array([at(0).replace(tzinfo=None)], pa.timestamp("us"))}
            ),
            InvalidArgument,
            "event_ts",
        ),
        (
            ["stats"],
            pa.Table.from_arrays(
                [pa.array([1]), pa.array([1]), pa.array([at(0)], TS)], ["user_id", "user_id", "event_ts"]
            ),
            InvalidArgument,
            "more than one column named 'user_id'",
        ),
        (
            ["stats"],
            pa.table({"user_id": pa.array([2**64 - 1], pa.uint64()), "event_ts": pa.array([at(0)], TS)}),
            InvalidArgument,
            "'user_id' .* holds 18446744073709551615",
        ),
        (
            ["stats"],
            pa.table({"user_id": [1], "event_ts": pa.array([2**62], pa.timestamp("ms", tz="UTC"))}),
            InvalidArgument,
            "'event_ts' holds 1 time.* beyond the range",
        ),
    ],
)
async def test_errors_carry_their_status_codes(
    server: ControlPlaneServer,
    store: OfflineStore,
    features: list[str],
    rows: pa.Table,
    error: type[Exception],
    message: str,
) -> None:
    with OfflineFeaturesClient(server.address) as client, pytest.raises(error, match=message):
        await asyncio.to_thread(client.get_historical_features, rows, features)


async def test_aetherctl_historical_writes_the_set_and_reports_it(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    entities = tmp_path / "rows.parquet"
    pq.write_table(labels(400), entities)
    out = tmp_path / "train.parquet"
    parser = argparse.ArgumentParser()
    parser.add_argument("--control-plane")
    historical.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "--control-plane",
            server.address,
            "historical",
            "--entities",
            str(entities),
            "--features",
            "stats:score,stats:trips",
            "--out",
            str(out),
            "--json",
        ]
    )
    printed = io.StringIO()
    assert await asyncio.to_thread(args.handler, args, printed) == 0
    report = json.loads(printed.getvalue())
    train = pq.read_table(out)
    assert report["rows"] == 400 == train.num_rows
    score = train.column("stats:score")
    assert report["matched_fraction"]["stats:score"] == pytest.approx((400 - score.null_count) / 400)
    expected = await asyncio.to_thread(
        get_historical_features,
        store,
        server.registry,
        pq.read_table(entities),
        ["stats:score", "stats:trips"],
        record=False,
    )
    assert report["dataset_hash"] == expected.dataset_hash
    assert train.equals(expected.table)

    args.json = False
    text = io.StringIO()
    assert await asyncio.to_thread(args.handler, args, text) == 0
    assert "stats:score" in text.getvalue() and f"dataset hash: {expected.dataset_hash}" in text.getvalue()
    assert "rows: 400" in text.getvalue()


async def test_an_output_path_the_server_cannot_write_is_invalid_argument(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """It was INTERNAL, and only after the whole join had run."""
    datasets = tmp_path / "home" / "datasets"
    (datasets / "folder").mkdir(parents=True)
    (datasets / "file.parquet").write_bytes(b"")
    for out, reason in [("folder", "is a directory"), ("file.parquet/set.parquet", "is not a directory")]:
        with OfflineFeaturesClient(server.address) as client, pytest.raises(InvalidArgument, match=reason):
            await asyncio.to_thread(
                client.historical_features, labels(3), ["stats"], output_path=str(datasets / out)
            )


async def test_entity_rows_from_an_empty_directory_say_so(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """It was read as a table of no columns, and the error blamed a missing timestamp column."""
    (tmp_path / "home" / "datasets" / "rows").mkdir(parents=True)
    with (
        OfflineFeaturesClient(server.address) as client,
        pytest.raises(InvalidArgument, match="/datasets/rows': it is a directory; give a Parquet file"),
    ):
        await asyncio.to_thread(client.historical_features, "rows", ["stats"])  # relative to the root


async def test_entity_rows_from_a_directory_are_refused_links_leading_out_of_the_root_included(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """A directory was read as a dataset of every file under it: a symbolic link in it leading out of the
    datasets root was followed (only the directory was checked), and the file's rows came back."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = labels(3).append_column("secret", pa.array(["s3cr3t-outside-root"] * 3))
    pq.write_table(secret, outside / "secret.parquet")
    folder = tmp_path / "home" / "datasets" / "rows"
    folder.mkdir(parents=True)
    pq.write_table(labels(3), folder / "part-0.parquet")
    (folder / "part-1.parquet").symlink_to(outside / "secret.parquet")
    with OfflineFeaturesClient(server.address) as client:
        for where in ("rows", "rows/"):
            with pytest.raises(InvalidArgument, match="it is a directory; give a Parquet file") as caught:
                await asyncio.to_thread(client.historical_features, where, ["stats"])
            assert "s3cr3t" not in str(caught.value)
        with pytest.raises(PermissionDenied, match="outside the datasets root"):
            await asyncio.to_thread(client.historical_features, "rows/part-1.parquet", ["stats"])
        inside = await asyncio.to_thread(client.historical_features, "rows/part-0.parquet", ["stats"])
    assert inside.table.column_names == ["user_id", "event_ts", "stats:score", "stats:trips"]


@pytest.mark.parametrize(
    ("where", "secrets"),
    [
        ("s3://AKIAEXAMPLE:se/cretValue@bucket/rows.parquet", ("AKIAEXAMPLE", "se/cretValue")),
        ("s3://bucket/rows.parquet?secret_key=topSecretValue", ("topSecretValue",)),
    ],
)
async def test_a_path_with_credentials_pyarrow_refuses_is_invalid_argument_without_them(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path, where: str, secrets: tuple[str, ...]
) -> None:
    for target in ("entity rows", "output"):
        with OfflineFeaturesClient(server.address) as client, pytest.raises(InvalidArgument) as caught:
            if target == "entity rows":
                await asyncio.to_thread(client.historical_features, where, ["stats:score"])
            else:
                out = await asyncio.to_thread(
                    client.historical_features, labels(3), ["stats:score"], output_path=where
                )
                raise AssertionError(f"written to {where}: {out}")
        assert "cannot open the URI given" in str(caught.value)
        assert not any(secret in str(caught.value) for secret in secrets), caught.value


async def test_paths_no_file_can_have_are_invalid_argument_naming_the_field(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """A NUL byte (ValueError from Path.resolve) and a symbolic-link loop (RuntimeError) were INTERNAL; a
    name too long was an error about reading the rows, and for an output only after the whole join."""
    datasets = tmp_path / "home" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "loop").symlink_to(datasets / "loop")
    cases = [
        ("a\x00b.parquet", "contains a NUL byte"),
        ("a" * 5000 + ".parquet", "is too long for a file name"),
        ("loop/x.parquet", "'loop/x.parquet' cannot be resolved"),
    ]
    with OfflineFeaturesClient(server.address) as client:
        for where, message in cases:
            with pytest.raises(InvalidArgument, match=f"entity_rows_path {message}"):
                await asyncio.to_thread(client.historical_features, where, ["stats"])
            with pytest.raises(InvalidArgument, match=f"output_path {message}"):
                await asyncio.to_thread(client.historical_features, labels(3), ["stats"], output_path=where)


async def test_server_paths_outside_the_datasets_root_are_refused(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """Any caller could read or overwrite any file the server could reach, '../' included."""
    victim = tmp_path / "victim.conf"
    victim.write_text("important=1\n")
    datasets = tmp_path / "home" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "escape").symlink_to(tmp_path)
    pq.write_table(labels(3), tmp_path / "rows.parquet")
    outside = [
        str(victim),
        str(datasets / ".." / ".." / "victim.conf"),
        "../../victim.conf",
        "escape/x.parquet",
    ]
    with OfflineFeaturesClient(server.address) as client:
        for where in outside:
            with pytest.raises(
                PermissionDenied, match=f"output_path .* outside the datasets root {datasets}"
            ):
                await asyncio.to_thread(client.historical_features, labels(3), ["stats"], output_path=where)
        with pytest.raises(PermissionDenied, match=r"entity_rows_path .* outside the datasets root"):
            await asyncio.to_thread(client.historical_features, str(tmp_path / "rows.parquet"), ["stats"])
        with pytest.raises(PermissionDenied, match="a URI is outside the datasets root"):
            await asyncio.to_thread(
                client.historical_features, labels(3), ["stats"], output_path=f"file://{victim}"
            )
        inside = await asyncio.to_thread(
            client.historical_features, labels(3), ["stats"], output_path="sets/a/../b.parquet"
        )
    assert victim.read_text() == "important=1\n"
    assert inside.output_path == str(datasets / "sets" / "b.parquet")
    assert pq.read_table(inside.output_path).num_rows == 3


async def _with_tokens(tmp_path: Path, db_url: str) -> ControlPlaneServer:
    """A control plane with an admin and a read-only token, and the view ``stats`` (score) in it."""
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=db_url,
        listen_addr="127.0.0.1:0",
        auth=AuthSettings(admin_token="admin-secret", readonly_token="reader-secret"),
    )
    handle = await start_server(settings, services=[add_to_server])
    await asyncio.to_thread(ensure_entity, handle.registry)
    spec = feature_spec("stats", (("score", types_pb2.FLOAT64),), ttl_seconds=7200)
    await asyncio.to_thread(create_view, handle.registry, spec)
    return handle


async def test_the_read_only_token_may_not_write_a_training_set(tmp_path: Path, db_url: str) -> None:
    """GetHistoricalFeatures counts as a read by its name, but with output_path it writes a file."""
    handle = await _with_tokens(tmp_path, db_url)
    try:
        reader = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token="reader-secret"))
        admin = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token="admin-secret"))
        with reader, admin:
            rows = labels(3)
            assert (await asyncio.to_thread(reader.historical_features, rows, ["stats"])).row_count == 3
            with pytest.raises(PermissionDenied, match="readonly token may not set output_path"):
                await asyncio.to_thread(
                    reader.historical_features, rows, ["stats"], output_path="set.parquet"
                )
            # A Parquet path for the rows, so that output_path travels in the only message.
            (tmp_path / "home" / "datasets").mkdir(parents=True, exist_ok=True)
            pq.write_table(rows, tmp_path / "home" / "datasets" / "rows.parquet")
            with pytest.raises(PermissionDenied, match="output_path"):
                await asyncio.to_thread(
                    reader.historical_features, "rows.parquet", ["stats"], output_path="set.parquet"
                )
            assert not (tmp_path / "home" / "datasets" / "set.parquet").exists()
            written = await asyncio.to_thread(
                admin.historical_features, rows, ["stats"], output_path="set.parquet"
            )
        assert pq.read_table(written.output_path).num_rows == 3
    finally:
        await handle.stop()


async def test_the_read_only_token_leaves_no_lineage_record(tmp_path: Path, db_url: str) -> None:
    """Without output_path the server still recorded every distinct training set it built in the
    offline store (``_datasets/<hash>.json``): a read-only caller wrote files there, unaudited and
    without bound. Only a caller that may write leaves a record."""
    handle = await _with_tokens(tmp_path, db_url)
    offline = tmp_path / "home" / "offline"
    try:
        reader = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token="reader-secret"))
        admin = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token="admin-secret"))
        with reader, admin:
            before = sorted(offline.rglob("*"))
            read = await asyncio.to_thread(reader.historical_features, labels(3), ["stats"])
            assert read.row_count == 3 and read.dataset_hash
            assert sorted(offline.rglob("*")) == before
            built = await asyncio.to_thread(admin.historical_features, labels(3), ["stats"])
        assert built.dataset_hash == read.dataset_hash
        record = json.loads((offline / "_datasets" / f"{built.dataset_hash}.json").read_text())
        assert record["features"] == ["stats"]
    finally:
        await handle.stop()


async def test_a_jobs_training_set_is_recorded_and_a_reader_is_told_its_is_not(
    tmp_path: Path, db_url: str
) -> None:
    """A training job builds its set with GetHistoricalFeatures under its own token (test_job_tokens),
    which may not write in general: the set its model version names must still have its lineage record,
    so a job token records it. The read-only token still leaves nothing, and is told so."""
    handle = await _with_tokens(tmp_path, db_url)
    offline = tmp_path / "home" / "offline"
    tokens = handle.context.settings.auth.job_tokens()
    assert tokens is not None
    job_token = tokens.mint("0123abcd4567", "f" * 32)
    try:
        reader = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token="reader-secret"))
        job = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token=job_token))
        with reader, job:
            read = await asyncio.to_thread(reader.historical_features, labels(3), ["stats"])
            assert not read.lineage_recorded
            assert not (offline / "_datasets").exists()
            built = await asyncio.to_thread(job.historical_features, labels(3), ["stats"])
        assert built.dataset_hash == read.dataset_hash
        record = json.loads((offline / "_datasets" / f"{built.dataset_hash}.json").read_text())
        assert record["features"] == ["stats"]
        assert built.lineage_recorded
    finally:
        await handle.stop()


async def test_a_job_token_whose_run_has_ended_records_no_training_set(tmp_path: Path, db_url: str) -> None:
    """A job token writes nothing once its run has ended (control_plane.api.job_tokens): its training
    sets are still built, as the read-only token's are, but leave no lineage record (one file per distinct
    call, unaudited and unbounded), and the reply says so. The same token recorded them while the run
    ran."""
    handle = await _with_tokens(tmp_path, db_url)
    offline = tmp_path / "home" / "offline"
    tokens = handle.context.settings.auth.job_tokens()
    assert tokens is not None
    runs = TrackingStore(handle.context.sessions)
    experiment = runs.create_experiment("jobs", actor="admin")
    run = runs.create_run(experiment.experiment_id, actor="admin")
    job_token = tokens.mint("0123abcd4567", run.run_id)
    try:
        job = OfflineFeaturesClient(handle.address, security=ChannelSecurity(token=job_token))
        with job:
            running = await asyncio.to_thread(job.historical_features, labels(2), ["stats"])
            assert running.lineage_recorded
            assert runs.end_run_once(run.run_id, tracking_pb2.RUN_STATUS_KILLED, 0, actor="supervisor")
            ended = [await asyncio.to_thread(job.historical_features, labels(n), ["stats"]) for n in (3, 4)]
        assert [built.lineage_recorded for built in ended] == [False, False]
        assert all(built.row_count and built.dataset_hash for built in ended)
        recorded = sorted(path.stem for path in (offline / "_datasets").glob("*.json"))
        assert recorded == [running.dataset_hash]
    finally:
        await handle.stop()


async def test_a_crashed_training_set_copys_temporary_file_is_removed_at_start(
    tmp_path: Path, db_url: str
) -> None:
    """An ``output_path`` copy is written under a hidden temporary name next to it (``write_parquet``):
    a control plane killed mid-write left that file in the datasets root, where no start-up sweep looked.
    Only the copies' temporary files go, once past the age a live writer's could have."""
    root = tmp_path / "datasets"
    (root / "out").mkdir(parents=True)
    stale = root / "out" / f".train.parquet.{'0f' * 16}.tmp"
    young = root / "out" / f".next.parquet.{'9e' * 16}.tmp"
    users = [root / ".notes.tmp", root / "labels.parquet"]  # a caller's own files
    for file in [stale, young, *users]:
        file.write_bytes(b"PAR1 half a file")
    an_hour_ago = time.time() - 3600
    for file in [stale, *users]:
        os.utime(file, (an_hour_ago, an_hour_ago))
    settings = ControlPlaneSettings(
        home=tmp_path / "home", db_url=db_url, listen_addr="127.0.0.1:0", datasets_root=str(root)
    )
    handle = await start_server(settings, services=[add_to_server])
    await handle.stop()
    assert not stale.exists()
    assert young.exists() and all(file.exists() for file in users)


def count_ingested(server: ControlPlaneServer, view: str, accepted: int) -> None:
    """An ingestion run of ``view`` version 1 that counted ``accepted`` rows stored offline, as a run
    does in the transaction after its offline write."""
    with write_session(server.context.sessions) as session:
        session.add(
            IngestionRunRow(
                run_id=f"batch-{view}",
                view=view,
                version=1,
                source_kind="batch",
                source_id="test",
                records_in=accepted,
                accepted=accepted,
                quarantined=0,
                started_at_us=0,
                updated_at_us=0,
            )
        )


async def test_an_offline_store_that_cannot_be_read_is_refused_not_read_as_no_data(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """The view's folder replaced by a file, then the store's root gone (a volume not mounted) while
    ingestion counted rows into the view: both listed as no data, and the training set came back with
    every feature null, no error (a training job trained and registered a model on it). Now both are
    FAILED_PRECONDITION naming the store; a view with nothing counted still gives nulls, as before."""
    rows = labels(1000)
    root = tmp_path / "home" / "offline"
    with OfflineFeaturesClient(server.address) as client:
        read = await asyncio.to_thread(client.historical_features, rows, ["stats:score"])
        assert read.matched["stats:score"] > 0

        folder, saved = root / "stats", tmp_path / "stats.saved"
        folder.rename(saved)
        folder.write_text("not a folder")
        with pytest.raises(
            FailedPrecondition, match=rf"offline store {root} cannot be read: {folder} is a file"
        ):
            await asyncio.to_thread(client.get_historical_features, rows, ["stats:score"])
        folder.unlink()
        saved.rename(folder)

        await asyncio.to_thread(count_ingested, server, "stats", 6 * USERS)
        root.rename(tmp_path / "offline.saved")
        gone = rf"offline store {root} has no folder for feature view 'stats' version 1 .* counted 6000 rows"
        with pytest.raises(FailedPrecondition, match=gone):
            await asyncio.to_thread(client.get_historical_features, rows, ["stats:score"])

        # Nothing counted into it: a view with no data yet, all nulls as before.
        spec = feature_spec("fresh", (("score", types_pb2.FLOAT64),))
        await asyncio.to_thread(create_view, server.registry, spec)
        empty = await asyncio.to_thread(client.historical_features, rows, ["fresh:score"])
        assert empty.matched["fresh:score"] == 0
        assert empty.table.column("fresh:score").null_count == rows.num_rows


async def test_offline_store_filesystem_errors_are_the_stores_status_not_internal(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """Real faults in the store's folders: ``_datasets`` a plain file (the training set's lineage record
    cannot be written) and a partition's compaction lock file a folder. Both were INTERNAL with a logged
    traceback; now FAILED_PRECONDITION naming the store and the OS error."""
    root = tmp_path / "home" / "offline"
    (root / "_datasets").write_text("not a folder")
    with OfflineFeaturesClient(server.address) as client:
        refused = rf"the offline store {root} could not record dataset [0-9a-f]{{64}} in _datasets: File"
        with pytest.raises(FailedPrecondition, match=refused):
            await asyncio.to_thread(client.get_historical_features, labels(100), ["stats:score"])
    (root / "_datasets").unlink()

    partition = store.partition_path("stats", 1, store.dates("stats", 1)[0])
    await asyncio.to_thread(Path(partition, ".compact.lock").mkdir)
    refused = (
        rf"the offline store {root} could not compact the offline files of feature view 'stats':"
        " IsADirectoryError"
    )
    with OfflineFeaturesClient(server.address) as client, pytest.raises(FailedPrecondition, match=refused):
        await asyncio.to_thread(client.compact, "stats")


def garble_pages(path: Path) -> None:
    """Garbage over the start of a Parquet file's first column chunk (its first page header), the footer
    left whole: the file opens, and its rows do not decode."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4)  # past the leading magic
        file.write(b"\xff" * min(1000, size // 2))


async def test_a_data_file_that_cannot_be_read_mid_join_is_failed_precondition_naming_it(
    server: ControlPlaneServer, store: OfflineStore, tmp_path: Path
) -> None:
    """Real damage to a listed data file, read by the point-in-time join after the listing (which reads
    no footer of a plain data file): its pages overwritten with garbage, its footer whole (pyarrow opens
    it, then raises an OSError without an errno while decoding the rows), then garbage over the whole of
    it (pyarrow's ArrowInvalid, not an OSError, as the footer is parsed). Both were INTERNAL "unexpected
    error", a bug of the server to its caller; now FAILED_PRECONDITION naming the store and the file, which
    is what someone can act on, and the training set is not built."""
    root = tmp_path / "home" / "offline"
    damaged = Path(store.files("stats", 1)[0])
    await asyncio.to_thread(garble_pages, damaged)
    rows = labels(1000)
    with OfflineFeaturesClient(server.address) as client:
        pages = rf"the offline store {root} could not read {damaged}: OSError: "
        with pytest.raises(FailedPrecondition, match=pages):
            await asyncio.to_thread(client.get_historical_features, rows, ["stats:score"])

        await asyncio.to_thread(damaged.write_bytes, b"not a Parquet file" * 10)
        footer = rf"the offline store {root} could not read {damaged}: ArrowInvalid: Parquet magic bytes"
        with pytest.raises(FailedPrecondition, match=footer):
            await asyncio.to_thread(client.get_historical_features, rows, ["stats:score"])


async def test_summary_only_without_an_output_path_is_refused_before_the_join(
    server: ControlPlaneServer, store: OfflineStore
) -> None:
    # The rows were neither streamed back nor written anywhere: a whole join built and lost, answered OK
    # with an empty table, and a lineage record naming no copy, so the set could never be read back.
    with OfflineFeaturesClient(server.address) as client, pytest.raises(InvalidArgument, match="output_path"):
        await asyncio.to_thread(client.historical_features, labels(10), ["stats"], summary_only=True)
    assert not (Path(store.base_path) / "_datasets").exists()
