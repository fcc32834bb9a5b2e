"""Credentials written into the artifact store's URI reach the object store and nothing else: not the
references the store gives out, its errors, the gRPC status details, the logs, nor what is kept in the
database (model versions, run artifacts, audit entries) and returned by the APIs. Driven through the real
paths, against the fake S3 endpoint; the URIs kept stay usable by a reader with its own credentials."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import grpc
import grpc.aio
import pytest
from alembic import command

from clients.aether.v1 import model_registry_pb2 as pb
from clients.aether.v1 import model_registry_pb2_grpc
from clients.errors import DataLoss, InvalidArgument, NotFound, Unavailable
from clients.uris import redact_text, redact_uri
from control_plane.api.artifacts import ArtifactsServicer
from control_plane.artifacts.settings import ArtifactSettings
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.db.migrate import alembic_config
from control_plane.model_registry.registry import ModelRegistry
from control_plane.offline.store import OfflineStore
from control_plane.tracking.store import TrackingStore
from data_plane.models.artifacts import read_artifact
from tests.support.s3_server import FakeS3Server

ACCESS_KEY = "AKIAAETHERSECRETID77"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # '/' and '+', as AWS secret keys have
FORMS = (ACCESS_KEY, SECRET_KEY, quote(SECRET_KEY, safe=""), *SECRET_KEY.replace("+", "/").split("/"))
REPO = Path(__file__).resolve().parents[3]


def assert_no_credentials(text: str) -> None:
    for form in FORMS:
        assert form not in text


@pytest.fixture
def s3() -> Iterator[FakeS3Server]:
    server = FakeS3Server()
    yield server
    server.close()


@pytest.fixture
def store(s3: FakeS3Server) -> ArtifactStore:
    return ArtifactStore(s3.uri("artifacts", ACCESS_KEY, SECRET_KEY))


def final_key(sha256: str) -> str:
    return f"artifacts/sha256/{sha256[:2]}/{sha256}"


def test_the_store_gives_out_and_reports_no_credentials(
    s3: FakeS3Server, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ref = store.put_bytes(b"weights" * 100)
    said = [ref.uri, store.stat(ref.sha256).uri, store.location(ref.sha256), store.root]
    said.append(repr(ArtifactSettings(s3.uri("artifacts", ACCESS_KEY, SECRET_KEY))))
    assert ref.uri.startswith("s3://aether/artifacts/sha256/")  # the place, still named in full
    with pytest.raises(NotFound) as absent:
        store.open_verified("0" * 64)
    s3.objects[final_key(ref.sha256)] = b"w3ights" * 100
    with pytest.raises(DataLoss) as corrupt:
        store.open_verified(ref.sha256)
    s3.fail_reads(final_key(ref.sha256))
    with pytest.raises(Unavailable) as broken_download:
        store.open_verified(ref.sha256)
    elsewhere = ArtifactStore(s3.uri("artifacts", ACCESS_KEY, SECRET_KEY).replace("@aether/", "@missing/"))
    with pytest.raises(Unavailable) as broken_upload:
        elsewhere.put_bytes(b"weights")
    errors = [absent.value, corrupt.value, broken_download.value, broken_upload.value]
    assert "corrupt" in str(corrupt.value) and "missing" in str(broken_upload.value)
    assert_no_credentials("\n".join([*said, *map(str, errors), caplog.text]))


def test_a_uri_pyarrow_cannot_parse_is_not_echoed(s3: FakeS3Server) -> None:
    # The secret key written raw: its '/' ends the authority, so no parser sees a userinfo there.
    raw = s3.uri("artifacts").replace("test:test@", f"{ACCESS_KEY}:{SECRET_KEY}@")
    with pytest.raises(InvalidArgument, match="not shown") as refused:
        ArtifactStore(raw)
    assert_no_credentials(str(refused.value))


@pytest.mark.parametrize("secret", ["/wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY", "1234/wJalrXUtnFEMIK7MDENG"])
def test_a_raw_secret_pyarrow_would_read_as_a_bucket_is_refused_everywhere_a_uri_is_opened(
    s3: FakeS3Server, secret: str, tmp_path: Path
) -> None:
    """A secret that starts with '/' (or digits then '/') makes a well-formed URI whose host is the access
    key: pyarrow opens it, as another bucket, with the secret in the path. Every place that opens a URI
    refuses it without showing it, and the URI's redacted form is the one its writer meant."""
    raw = s3.uri("artifacts").replace("test:test@", f"{ACCESS_KEY}:{secret}@")
    forms = (ACCESS_KEY, secret, *(piece for piece in secret.split("/") if len(piece) >= 8))
    assert redact_uri(raw) == s3.uri("artifacts").replace("test:test@", "")
    refusals = []
    for open_uri in (ArtifactStore, OfflineStore, read_artifact):
        with pytest.raises(InvalidArgument, match="raw '/'") as refused:
            open_uri(raw)
        refusals.append(str(refused.value))
    said = "\n".join([*refusals, redact_text(f"bucket {ACCESS_KEY} key {secret}@aether", raw)])
    for form in forms:
        assert form not in said


async def test_the_artifact_service_answers_without_credentials(
    s3: FakeS3Server, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = grpc.aio.server()
    model_registry_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(store), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    said: list[str] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = model_registry_pb2_grpc.ArtifactsStub(channel)  # type: ignore[no-untyped-call]
            data = b"weights" * 1000
            sha256 = hashlib.sha256(data).hexdigest()
            uploaded = await stub.Upload(iter([pb.UploadArtifactRequest(sha256=sha256, data=data)]))
            said.append(str(uploaded))
            said.append(str(await stub.StatArtifact(pb.StatArtifactRequest(sha256=sha256))))
            failures = []
            with pytest.raises(grpc.aio.AioRpcError) as absent:
                await stub.StatArtifact(pb.StatArtifactRequest(sha256="1" * 64))
            failures.append((absent.value, grpc.StatusCode.NOT_FOUND))
            s3.objects[final_key(sha256)] = data[:-1] + b"!"
            with pytest.raises(grpc.aio.AioRpcError) as corrupt:
                [chunk async for chunk in stub.Download(pb.DownloadArtifactRequest(sha256=sha256))]
            failures.append((corrupt.value, grpc.StatusCode.DATA_LOSS))
            s3.fail_reads(final_key(sha256))
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                [chunk async for chunk in stub.Download(pb.DownloadArtifactRequest(sha256=sha256))]
            failures.append((broken.value, grpc.StatusCode.UNAVAILABLE))
            for error, code in failures:
                assert error.code() == code
                said.append(f"{error.details()} {error.debug_error_string()}")
    finally:
        await server.stop(None)
    assert uploaded.uri == f"s3://aether/{final_key(sha256)}?endpoint_override=127.0.0.1:{s3.port}" + (
        "&scheme=http&region=us-east-1"
    )
    assert_no_credentials("\n".join([*said, caplog.text]))


def test_kept_records_hold_no_credentials(s3: FakeS3Server, store: ArtifactStore, tmp_path: Path) -> None:
    database = tmp_path / "aether.db"
    engine = create_db_engine(f"sqlite:///{database}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    ref = store.put_bytes(b"weights")
    registry = ModelRegistry(sessions, store)
    request = pb.CreateModelVersionRequest(model_name="eta", artifact_sha256=ref.sha256, create_model=True)
    version = registry.create_version(request, actor="ci")
    tracking = TrackingStore(sessions)
    run = tracking.create_run(tracking.create_experiment("eta", actor="ci").experiment_id, actor="ci")
    # What the tracking service was handed before the store redacted its references: kept without them.
    with_credentials = s3.uri("artifacts", ACCESS_KEY, SECRET_KEY) + f"/{final_key(ref.sha256)}"
    logged = tracking.log_artifact(run.run_id, "model", ref.sha256, ref.size, with_credentials, actor="ci")
    # A row kept by an older version, credentials and all: the APIs still answer without them.
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE model_versions SET artifact_uri = ?", (with_credentials,))
        connection.execute("UPDATE tracking_artifacts SET uri = ?", (with_credentials,))
    old_row = ModelRegistry(sessions, store).get_version("eta", 1)
    said = [str(version), str(logged), str(old_row), str(tracking.list_artifacts(run.run_id))]
    assert_no_credentials("\n".join(said))
    engine.dispose()
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE model_versions SET artifact_uri = ?", (version.artifact.uri,))
        connection.execute("UPDATE tracking_artifacts SET uri = ?", (logged.uri,))
        kept = "\n".join(connection.iterdump())  # every table: versions, run artifacts, audit entries
    assert version.artifact.uri in kept
    assert_no_credentials(kept)


def test_the_migration_takes_the_credentials_out_of_rows_an_older_version_kept(
    s3: FakeS3Server, store: ArtifactStore, tmp_path: Path
) -> None:
    database = tmp_path / "aether.db"
    engine = create_db_engine(f"sqlite:///{database}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    ref = store.put_bytes(b"weights")
    version = ModelRegistry(sessions, store).create_version(
        pb.CreateModelVersionRequest(model_name="eta", artifact_sha256=ref.sha256, create_model=True),
        actor="ci",
    )
    tracking = TrackingStore(sessions)
    run = tracking.create_run(tracking.create_experiment("eta", actor="ci").experiment_id, actor="ci")
    with_credentials = s3.uri(final_key(ref.sha256), ACCESS_KEY, SECRET_KEY)  # the object, keys and all
    logged = tracking.log_artifact(run.run_id, "model", ref.sha256, ref.size, with_credentials, actor="ci")
    tracking.log_artifact(run.run_id, "notes", ref.sha256, ref.size, "/plain/path@2?", actor="ci")
    engine.dispose()
    # The rows as a version before the redaction kept them, at the schema of that version.
    command.downgrade(alembic_config(f"sqlite:///{database}"), "0012_tracking_log_senders")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE model_versions SET artifact_uri = ?", (with_credentials,))
        connection.execute("UPDATE tracking_artifacts SET uri = ? WHERE name = 'model'", (with_credentials,))
        assert SECRET_KEY.split("/")[0] in "\n".join(connection.iterdump())
    engine = create_db_engine(f"sqlite:///{database}")
    upgrade_to_head(engine)
    engine.dispose()
    with sqlite3.connect(database) as connection:
        kept = dict(connection.execute("SELECT name, uri FROM tracking_artifacts").fetchall())
        (artifact_uri,) = connection.execute("SELECT artifact_uri FROM model_versions").fetchone()
        assert_no_credentials("\n".join(connection.iterdump()))
    # The same places as before, in the form new rows have; a URI without credentials is left as it was.
    assert artifact_uri == version.artifact.uri and kept["model"] == logged.uri
    assert kept["notes"] == "/plain/path@2?"


def test_a_kept_uri_opens_with_the_readers_own_credentials(store: ArtifactStore) -> None:
    """What the data plane does with a deployed version's artifact URI, in a process whose environment
    holds its credentials (as a deployment's would)."""
    data = b"onnx weights" * 500
    ref = store.put_bytes(data)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment |= {
        "AWS_ACCESS_KEY_ID": "AKIADATAPLANEREADER1",
        "AWS_SECRET_ACCESS_KEY": "data-plane-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    script = (
        "import sys; from data_plane.models.artifacts import fetch_verified;"
        "print(len(fetch_verified(sys.argv[1], sys.argv[2])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, ref.uri, ref.sha256],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, str(len(data))), done.stderr
