"""The status of an offline store's OSError without an errno (``clients.errors.offline_store_error``): an
object store's error or a stored file that does not decode. FAILED_PRECONDITION (an operator must act)
only for a fault known not to pass, UNAVAILABLE (clients and the retraining loop retry) for any other, so
an outage of a remote store whose words no rule knows is retried, not reported as a setup fault."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from clients.errors import (
    OfflineFileUndecodable,
    OfflineStoreMisconfigured,
    OfflineStoreUnavailable,
    offline_store_error,
)
from control_plane.offline.store_errors import store_errors
from tests.support.ports import refused_address

# pyarrow's AzureFileSystem with nothing listening at its endpoint, as pyarrow 26 words it (a real one
# takes ~10 s of the Azure SDK's own retries, too long for a unit test; captured from one).
_AZURE_DOWN = (
    "GetProperties failed for 'http://127.0.0.1:36851/devstoreaccount1/container/x.parquet'. Cannot "
    "initialise an ObjectInputFile without knowing the file size. Azure Error: [] Fail to get a new "
    "connection for: http://127.0.0.1:36851. Could not connect to server"
)


def test_a_gcs_outage_is_unavailable() -> None:
    """pyarrow's GCS filesystem with nothing listening at its endpoint: a real outage, no errno, in
    google::cloud's words that named no S3 error. It was FAILED_PRECONDITION, so the retraining window
    check recorded a blocked decision, alerted and began its cooldown as if an operator had to act."""
    gcs = pafs.GcsFileSystem(
        anonymous=True, endpoint_override=refused_address(), scheme="http",
        retry_time_limit=dt.timedelta(seconds=1),
    )  # fmt: skip
    with pytest.raises(OSError) as raised, store_errors("gs://aether/offline", "list churn/v1"):
        gcs.get_file_info(pafs.FileSelector("aether/offline/churn/v1", allow_not_found=True))
    error = raised.value
    assert isinstance(error, OfflineStoreUnavailable) and error.code == grpc.StatusCode.UNAVAILABLE
    assert "google::cloud::Status(UNAVAILABLE" in error.message
    assert error.message.startswith("the offline store gs://aether/offline could not list churn/v1: OSError:")


@pytest.mark.parametrize(
    "text",
    [
        _AZURE_DOWN,
        "an error of a filesystem no rule knows",
        "AWS Error NO_SUCH_KEY during GetObject operation: The specified key does not exist.",
        "AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.",
        "When reading information for key 'x' in bucket 'b': AWS Error UNKNOWN (HTTP status 503) during "
        "HeadObject operation: No response body.",
        # an object store's error is the store's, whatever other words it holds
        "AWS Error INTERNAL_FAILURE during GetObject operation: invalid response from the service",
    ],
)
def test_an_error_without_an_errno_not_known_to_be_permanent_is_unavailable(text: str) -> None:
    error = offline_store_error("s3://aether/offline", "open x.parquet", OSError(text))
    assert isinstance(error, OfflineStoreUnavailable), text


@pytest.mark.parametrize(
    "text",
    [
        "AWS Error ACCESS_DENIED during GetObject operation: Access Denied",
        "AWS Error INVALID_ACCESS_KEY_ID during ListObjectsV2 operation: The AWS Access Key Id you provided "
        "does not exist in our records.",
        "AWS Error SIGNATURE_DOES_NOT_MATCH during PutObject operation: The request signature we calculated "
        "does not match the signature you provided.",
        "AWS Error UNKNOWN (HTTP status 400) during HeadObject operation: ExpiredToken: The provided token "
        "has expired.",
        "When reading information for key 'x' in bucket 'b': AWS Error UNKNOWN (HTTP status 403) during "
        "HeadObject operation: No response body.",
        "AWS Error UNKNOWN (HTTP status 401) during GetObject operation: Unauthorized",
        "AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation: The specified bucket does not exist",
        "google::cloud::Status(UNAUTHENTICATED: Permanent error, with a last message of Invalid Credentials)",
        "google::cloud::Status(PERMISSION_DENIED: Permanent error, with a last message of caller does not "
        "have storage.objects.list access)",
        "GetProperties failed for 'http://acct.blob.core.windows.net/c/x.parquet'. Azure Error: "
        "[AuthorizationFailure] 403 This request is not authorized to perform this operation.",
        "GetProperties failed for 'http://acct.blob.core.windows.net/c/x.parquet'. Azure Error: "
        "[AuthenticationFailed] 403 Server failed to authenticate the request.",
        "Azure Error: [ContainerNotFound] 404 The specified container does not exist.",
        "Couldn't deserialize thrift: TProtocolException: Invalid data",
        "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet "
        "file.",
        "Invalid column metadata (corrupt file?)",
    ],
)
def test_an_error_without_an_errno_naming_a_permanent_fault_is_failed_precondition(text: str) -> None:
    error = offline_store_error("s3://aether/offline", "open x.parquet", OSError(text))
    assert isinstance(error, OfflineStoreMisconfigured), text
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_stored_file_whose_compressed_pages_do_not_decode_is_failed_precondition(tmp_path: Path) -> None:
    """A real Parquet file whose ZSTD page payload lost its frame header: pyarrow's reader raises an
    OSError without an errno in no object store's words; the file must be dealt with."""
    path = tmp_path / "damaged.parquet"
    pq.write_table(pa.table({"k": list(range(10_000))}), path, compression="zstd", use_dictionary=False)
    data = bytearray(path.read_bytes())
    frame = data.index(b"\x28\xb5\x2f\xfd")  # the first ZSTD frame's magic number: a page's payload
    data[frame : frame + 4] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(data))
    with pytest.raises(OSError) as raised, store_errors(str(tmp_path), "read damaged.parquet", decoding=True):
        pq.ParquetFile(path).read()
    error = raised.value
    assert isinstance(error, OfflineFileUndecodable), error
    assert "ZSTD decompression failed" in str(error)


def test_bytes_that_are_not_parquet_are_an_undecodable_file(tmp_path: Path) -> None:
    """pyarrow's own ArrowInvalid for a stored file that is not Parquet: the file's bytes, not the store's
    setup, so an online part that waits on it may be discarded (``OfflineFileUndecodable``)."""
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"not a Parquet file" * 10)
    with pytest.raises(OSError) as raised, store_errors(str(tmp_path), "read garbage.parquet", decoding=True):
        pq.ParquetFile(path).read()
    assert isinstance(raised.value, OfflineFileUndecodable), raised.value


@pytest.mark.parametrize(
    "error",
    [
        # A real NotADirectoryError (below) stands for the errno family; these carry the OS's errno as
        # pyarrow's local filesystem sets it (root is not refused by chmod, so EACCES is built here).
        PermissionError(
            13,
            "[Errno 13] Failed to open local file '/store/v/x.parquet'. Detail: [errno 13] Permission denied",
        ),
        OSError(30, "[Errno 30] Read-only file system"),
        OSError("AWS Error ACCESS_DENIED during GetObject operation: Access Denied"),
        OSError(
            "AWS Error UNKNOWN (HTTP status 400) during GetObject operation: ExpiredToken: The provided "
            "token has expired."
        ),
        OSError(
            "AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation: The specified bucket does not exist"
        ),
    ],
)
def test_a_store_that_refuses_access_is_a_setup_fault_not_an_undecodable_file(error: OSError) -> None:
    """Permissions, credentials, a missing bucket: FAILED_PRECONDITION, but not a damaged file. The online
    part's replay told an operator to discard it for these, and the run's online values, which a replay
    after the fix writes, were lost for good."""
    mapped = offline_store_error("s3://aether/offline", "read x.parquet", error)
    assert isinstance(mapped, OfflineStoreMisconfigured) and not isinstance(mapped, OfflineFileUndecodable)


def test_a_folder_replaced_by_a_file_is_a_setup_fault_not_an_undecodable_file(tmp_path: Path) -> None:
    (tmp_path / "date=2026-01-01").write_bytes(b"")  # a file where the store keeps a partition folder
    with pytest.raises(OSError) as raised, store_errors(str(tmp_path), "read x.parquet", decoding=True):
        pafs.LocalFileSystem().open_input_file(f"{tmp_path}/date=2026-01-01/x.parquet")
    assert isinstance(raised.value, OfflineStoreMisconfigured), raised.value
    assert not isinstance(raised.value, OfflineFileUndecodable)
