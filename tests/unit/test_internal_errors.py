"""An unexpected error in a servicer method reaches its caller as INTERNAL with its type and the first
line of its text; the rest (a database error's SQL and bound values) stays in the server's log. A transient
failure of the metadata database (locked, down, restarting) is UNAVAILABLE instead. Through a real
grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import redis
import sqlalchemy.exc
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, create_engine, text

from clients.errors import (
    INTERNAL_DETAIL_CHARS,
    NotFound,
    OfflineStoreMisconfigured,
    OfflineStoreUnavailable,
    internal_message,
    maps_errors,
    offline_store_error,
)
from control_plane.db import create_db_engine
from control_plane.offline.store_errors import store_errors
from tests.support.ports import refused_address
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.s3_server import FakeS3Server

SQL = "INSERT INTO tracking_log_senders (sender_id) VALUES (%(sender_id)s)"
SECRET_VALUE = "another-callers-value"


def database_error() -> sqlalchemy.exc.DataError:
    return sqlalchemy.exc.DataError(
        SQL, {"sender_id": SECRET_VALUE}, Exception("value too long for type character varying(64)")
    )


class Servicer:
    def __init__(self) -> None:
        self.error: BaseException = RuntimeError("no error set")

    @maps_errors
    async def Raises(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise self.error

    @maps_errors
    async def Fails(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise database_error()

    @maps_errors
    async def Missing(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        raise NotFound("no such thing")


@pytest.fixture
def servicer() -> Servicer:
    return Servicer()


@pytest.fixture
async def channel(servicer: Servicer) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name))
        for name in ("Fails", "Missing", "Raises")
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Errors", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


async def test_the_caller_gets_the_errors_first_line_and_the_log_gets_all_of_it(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await channel.unary_unary("/test.Errors/Fails")(b"")
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    details = failed.value.details() or ""
    assert details.startswith("internal error in Servicer.Fails: DataError: ")
    assert "value too long" in details
    assert SQL not in details and SECRET_VALUE not in details
    assert SQL in caplog.text and SECRET_VALUE in caplog.text  # the server's log keeps everything
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await channel.unary_unary("/test.Errors/Missing")(b"")
    assert (missing.value.code(), missing.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")


def test_a_long_first_line_is_cut() -> None:
    message = internal_message("M", ValueError("x" * 10_000))
    assert message == f"internal error in M: ValueError: {'x' * INTERNAL_DETAIL_CHARS}…"


def raised(action: Callable[[], object]) -> BaseException:
    """The exception ``action`` raises (a real one, from a real database)."""
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


async def status_of(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await channel.unary_unary("/test.Errors/Raises")(b"")
    return failed.value.code(), failed.value.details() or ""


def write_one(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))


async def test_a_locked_sqlite_database_is_unavailable(
    channel: grpc.aio.Channel, servicer: Servicer, tmp_path: Path
) -> None:
    """Another process holds the write lock past the busy timeout: a client that retries UNAVAILABLE
    retries; it got INTERNAL (a bug, not retried)."""
    holder = sqlite3.connect(tmp_path / "aether.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'aether.db'}", busy_timeout_s=0.05)
    try:
        servicer.error = raised(lambda: write_one(engine))
        code, details = await status_of(channel)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details == "metadata database unavailable: database is locked"
    finally:
        engine.dispose()
        holder.close()


async def test_a_full_connection_pool_is_unavailable(
    channel: grpc.aio.Channel, servicer: Servicer, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}", pool_size=1, max_overflow=0, pool_timeout=0.05)
    try:
        with engine.connect():
            servicer.error = raised(engine.connect)
        code, details = await status_of(channel)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details.startswith("metadata database unavailable: QueuePool limit of size 1")
    finally:
        engine.dispose()


async def test_postgresql_not_listening_is_unavailable_and_the_password_is_not_shown(
    channel: grpc.aio.Channel, servicer: Servicer
) -> None:
    engine = create_db_engine(f"postgresql+psycopg://aether:s3cret-pw@{refused_address()}/aether")
    try:
        servicer.error = raised(engine.connect)
    finally:
        engine.dispose()
    code, details = await status_of(channel)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith("metadata database unavailable: connection failed: ")
    assert "Connection refused" in details and "s3cret-pw" not in details


async def test_a_postgresql_connection_ended_by_the_server_is_unavailable(
    channel: grpc.aio.Channel, servicer: Servicer, postgres_server: PostgresServer
) -> None:
    """What a restart or failover does to open connections (SQLSTATE 57P01, admin shutdown)."""
    engine = create_db_engine(postgres_server.fresh_url())
    try:
        with engine.connect() as connection, engine.connect() as other:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            servicer.error = raised(lambda: connection.execute(text("SELECT 1")))
    finally:
        engine.dispose()
    code, details = await status_of(channel)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == "metadata database unavailable: terminating connection due to administrator command"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_missing_table_stays_internal(
    channel: grpc.aio.Channel, servicer: Servicer, db_url: str
) -> None:
    """Not every OperationalError is transient: a missing table is a bug, and no retry will mend it."""
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as connection:
            servicer.error = raised(lambda: connection.execute(text("SELECT x FROM missing")))
    finally:
        engine.dispose()
    code, details = await status_of(channel)
    assert code == grpc.StatusCode.INTERNAL
    assert details.startswith("internal error in Servicer.Raises: ")


def _redis(port: int, password: str | None = None) -> redis.Redis:
    """A client of 127.0.0.1:PORT that gives up at once (redis-py retries connection errors for seconds by
    default). On 127.0.0.1, not "localhost": the servers and the refusing port are bound there alone."""
    return redis.Redis(host="127.0.0.1", port=port, password=password, retry=Retry(NoBackoff(), 0))


async def test_control_plane_redis_failures_are_unavailable_or_failed_precondition_not_internal(
    channel: grpc.aio.Channel, servicer: Servicer
) -> None:
    """Redis down, or busy (a script past its limit; LOADING after a restart alike), is retryable, and a
    missing password is a setting to fix; each was INTERNAL (not retried, logged as a bug)."""
    servicer.error = raised(_redis(int(refused_address().rpartition(":")[2])).ping)
    code, details = await status_of(channel)
    assert code == grpc.StatusCode.UNAVAILABLE and details.startswith(
        "online store (Redis) unavailable: ConnectionError"
    )
    server = RedisServer(args=["--requirepass", "s3cret", "--busy-reply-threshold", "20"], password="s3cret")
    server.start()
    try:
        servicer.error = raised(_redis(server.port).ping)
        code, details = await status_of(channel)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert (
            "refused the control plane: Authentication required" in details and "AETHER_REDIS_URL" in details
        )
        authed = _redis(server.port, "s3cret")
        script = threading.Thread(
            target=raised, args=(lambda: authed.eval("while true do end", 0),), daemon=True
        )
        script.start()
        await asyncio.sleep(0.2)  # past the busy threshold
        servicer.error = raised(lambda: _redis(server.port, "s3cret").get("k"))
        _redis(server.port, "s3cret").script_kill()
        script.join(5)
        code, details = await status_of(channel)
        assert code == grpc.StatusCode.UNAVAILABLE and "BUSY" in details
    finally:
        with contextlib.suppress(redis.ResponseError):  # a script still running: the server cannot stop
            _redis(server.port, "s3cret").script_kill()
        server.close()


async def test_offline_store_os_errors_are_unavailable_or_failed_precondition_and_others_internal(
    channel: grpc.aio.Channel, servicer: Servicer, tmp_path: Path
) -> None:
    """An OSError at the offline store's boundary (``store_errors``) is the store's error: UNAVAILABLE for
    one that may pass (a full disk: no real one here, so its errno is given), FAILED_PRECONDITION for
    one of the store's setup (a file where a folder belongs, a real one); both name the store and the OS
    error. The same OSError raised anywhere else stays INTERNAL, as the bug it may be."""
    root = str(tmp_path / "offline")
    # Still an OSError, for the store's own handlers.
    with pytest.raises(OSError) as full, store_errors(root, "write rows"):
        raise OSError(errno.ENOSPC, "No space left on device")
    servicer.error = full.value
    code, details = await status_of(channel)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert (
        details
        == f"the offline store {root} could not write rows: OSError: [Errno 28] No space left on device"
    )

    (tmp_path / "offline").write_text("not a folder")
    with pytest.raises(OSError) as misplaced, store_errors(root, "write rows"):
        pafs.LocalFileSystem().create_dir(f"{root}/view/v1", recursive=True)
    servicer.error = misplaced.value
    code, details = await status_of(channel)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith(f"the offline store {root} could not write rows: NotADirectoryError: ")

    servicer.error = OSError(errno.ENOSPC, "No space left on device")  # not from the store
    code, details = await status_of(channel)
    assert code == grpc.StatusCode.INTERNAL


def _raised_os_error(call: Callable[[], object]) -> OSError:
    try:
        call()
    except OSError as exc:
        return exc
    raise AssertionError("no OSError raised")


def test_an_offline_store_os_error_without_an_errno_is_unavailable_only_when_it_may_pass(
    tmp_path: Path,
) -> None:
    """pyarrow raises an object store's errors, and a Parquet file's undecodable bytes, as OSErrors with
    no errno, and every OSError without a setup errno was UNAVAILABLE, which clients retry: an S3
    AccessDenied (credentials refused, a key revoked) was retried for good. Real errors of pyarrow's S3
    filesystem and Parquet reader: a refusal and a corrupt file are FAILED_PRECONDITION now; a connection
    that failed stays UNAVAILABLE, as do the errno'd ones (a full disk)."""
    s3 = FakeS3Server()
    try:
        filesystem, base = pafs.FileSystem.from_uri(s3.uri("offline"))
        pq.write_table(pa.table({"k": list(range(100))}), f"{base}/x.parquet", filesystem=filesystem)
        s3.fail_reads("x.parquet")  # 403 AccessDenied, as S3 answers for a key the credentials may not read
        denied = _raised_os_error(lambda: pq.read_table(f"{base}/x.parquet", filesystem=filesystem))
    finally:
        s3.close()
    assert denied.errno is None and "ACCESS_DENIED" in str(denied)
    refused = offline_store_error("s3://aether/offline", "open x.parquet", denied)
    assert (
        isinstance(refused, OfflineStoreMisconfigured) and refused.code == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert refused.message.startswith(
        "the offline store s3://aether/offline could not open x.parquet: OSError:"
    )

    unreachable = pafs.S3FileSystem(
        access_key="test", secret_key="test", endpoint_override=refused_address(), scheme="http",
        region="us-east-1", retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
    )  # fmt: skip
    down = _raised_os_error(lambda: unreachable.open_input_file("aether/offline/x.parquet"))
    assert down.errno is None and "NETWORK_CONNECTION" in str(down)
    assert isinstance(offline_store_error("s3://aether/offline", "open x", down), OfflineStoreUnavailable)

    # A file whose footer is whole and whose pages are not: the page header does not decode.
    path = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"k": list(range(10_000))}), path, use_dictionary=False, compression="none")
    with path.open("r+b") as damaged:
        damaged.seek(4)
        damaged.write(b"\xff" * 1000)
    corrupt = _raised_os_error(lambda: pq.ParquetFile(path).read())
    assert corrupt.errno is None
    assert isinstance(offline_store_error("/store", "read it", corrupt), OfflineStoreMisconfigured)

    full = OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(offline_store_error("/store", "write rows", full), OfflineStoreUnavailable)
    for transient in ("AWS Error SLOW_DOWN during PutObject operation", "UNKNOWN (HTTP status 503)"):
        assert isinstance(offline_store_error("/store", "write", OSError(transient)), OfflineStoreUnavailable)
