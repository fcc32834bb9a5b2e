"""The auth rules without a server: which methods read, how tokens are configured, what each token may
do. (The CLI's time parsing is tested with its durations, in tests/unit/cli/test_durations.py.)"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from control_plane.api.auth import (
    WRITING_REQUEST_FIELDS,
    AuthInterceptor,
    AuthSettings,
    TokenGrant,
    bearer_token,
    is_read_method,
)

GRANTS = [TokenGrant("admin", "a" * 20, can_write=True), TokenGrant("ci-reader", "r" * 20, can_write=False)]


@pytest.mark.parametrize(
    ("method", "reads"),
    [
        ("/aether.v1.FeatureRegistry/GetFeatureView", True),
        ("/aether.v1.FeatureRegistry/ListEntities", True),
        ("/aether.v1.FeatureRegistry/WatchRegistry", True),
        ("/aether.v1.Tracking/CompareRuns", True),
        ("/aether.v1.ModelRegistry/FindUsages", True),
        ("/aether.v1.ModelRegistry/CheckDeployable", True),
        ("/aether.v1.Audit/QueryAudit", True),
        ("/aether.v1.Audit/VerifyAudit", True),
        ("/aether.v1.Audit/ExportAudit", True),
        ("/aether.v1.Artifacts/Download", True),
        ("/aether.v1.Artifacts/StatArtifact", True),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", True),
        ("/aether.v1.Jobs/Logs", True),  # streams a job's output
        ("/aether.v1.FeatureRegistry/CreateEntity", False),
        ("/aether.v1.FeatureRegistry/Apply", False),
        ("/aether.v1.FeatureRegistry/RetireFeatureViewVersion", False),
        ("/aether.v1.Tracking/LogBatch", False),
        ("/aether.v1.Artifacts/Upload", False),
        ("/aether.v1.ModelRegistry/ReviewModelVersion", False),
        ("/aether.v1.ModelRegistry/SetAlias", False),
        ("/aether.v1.Future/Getaway", False),  # a prefix counts only as a whole word
    ],
)
def test_reads_follow_the_naming_convention(method: str, reads: bool) -> None:
    assert is_read_method(method) is reads


def test_decisions_per_token() -> None:
    auth = AuthInterceptor(GRANTS)
    write, read = "/aether.v1.FeatureRegistry/CreateEntity", "/aether.v1.FeatureRegistry/GetEntity"
    assert auth.authorize(write, "a" * 20) == ("admin", None, "")
    assert auth.authorize(read, "r" * 20) == ("ci-reader", None, "")
    assert auth.authorize(write, "r" * 20)[1] == grpc.StatusCode.PERMISSION_DENIED
    assert auth.authorize(write, None)[1] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.authorize(read, None)[1] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.authorize(read, "a" * 19)[1] == grpc.StatusCode.UNAUTHENTICATED
    assert auth.authorize("/grpc.health.v1.Health/Check", None) == (None, None, "")


def test_bearer_header_parsing() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("x-other", "1"), ("authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token(None) is None


def test_settings_from_variables_and_files(tmp_path: Path) -> None:
    assert not AuthSettings.from_env({}).enabled
    assert AuthSettings.from_env({}).interceptors() == []
    admin_file = tmp_path / "admin"
    admin_file.write_text("file-token\n")
    settings = AuthSettings.from_env(
        {"AETHER_ADMIN_TOKEN_FILE": str(admin_file), "AETHER_READONLY_TOKEN": "ro"}
    )
    assert (settings.admin_token, settings.readonly_token, settings.enabled) == ("file-token", "ro", True)
    assert [(g.principal, g.can_write) for g in settings.grants()] == [("admin", True), ("readonly", False)]
    assert len(settings.interceptors()) == 1
    assert "file-token" not in repr(settings.grants())


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AETHER_READONLY_TOKEN": "ro"}, "without AETHER_ADMIN_TOKEN"),
        ({"AETHER_ADMIN_TOKEN": "same", "AETHER_READONLY_TOKEN": "same"}, "different"),
        ({"AETHER_ADMIN_TOKEN": "x", "AETHER_ADMIN_TOKEN_FILE": "/x"}, "not both"),
        ({"AETHER_ADMIN_TOKEN_FILE": "/nonexistent/token"}, "cannot read"),
        ({"AETHER_ADMIN_TOKEN": "  \n"}, "only whitespace"),
        ({"AETHER_ADMIN_TOKEN": "admin", "AETHER_READONLY_TOKEN": "\t"}, "only whitespace"),
        # No client can send it (a header is printable ASCII), so it would lock every caller out.
        ({"AETHER_ADMIN_TOKEN": "adm\u00efn", "AETHER_READONLY_TOKEN": "ro"}, "printable ASCII"),
        ({"AETHER_ADMIN_TOKEN": "\ufeff\n"}, "only whitespace"),
    ],
)
def test_settings_that_cannot_be_meant_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthSettings.from_env(environ)


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        AuthSettings.from_env({"AETHER_ADMIN_TOKEN_FILE": str(empty)})


def test_an_empty_bearer_token_never_matches() -> None:
    """A whitespace-only configured token used to become "" and admit anyone sending `Bearer `."""
    with pytest.raises(ValueError, match="empty token"):
        AuthInterceptor([TokenGrant("admin", "", can_write=True)])
    auth = AuthInterceptor(GRANTS)
    assert auth.authorize("/aether.v1.FeatureRegistry/GetEntity", "")[1] == grpc.StatusCode.UNAUTHENTICATED
    # A token the interceptor is handed is compared as bytes, whatever it holds (settings refuse a
    # non-ASCII one, since no client could send it, but the interceptor must not raise on one).
    auth_non_ascii = AuthInterceptor([TokenGrant("admin", "x\u00e9", can_write=True)])
    assert auth_non_ascii.authorize("/aether.v1.FeatureRegistry/GetEntity", "x")[1] == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_reads_that_write_name_real_methods_and_fields() -> None:
    """A misspelt entry would silently let the read-only token through again."""
    from google.protobuf import descriptor_pool

    import clients.aether.v1.offline_features_pb2  # noqa: F401  (registers the service)

    pool = descriptor_pool.Default()
    for full_method, fields in WRITING_REQUEST_FIELDS.items():
        service, method = full_method.lstrip("/").rsplit("/", 1)
        request = pool.FindServiceByName(service).methods_by_name[method].input_type
        assert is_read_method(full_method)  # else the name alone already asks for a writer
        assert all(name in request.fields_by_name for name in fields), (full_method, fields)
    auth = AuthInterceptor(GRANTS)
    method = "/aether.v1.OfflineFeatures/GetHistoricalFeatures"
    assert auth.guarded_fields(method, "r" * 20) == ("output_path",)
    assert auth.guarded_fields(method, "a" * 20) == ()
    assert auth.guarded_fields("/aether.v1.FeatureRegistry/GetEntity", "r" * 20) == ()


def test_a_job_token_writes_only_its_own_run_and_reads_no_job_logs() -> None:
    from clients.aether.v1 import model_registry_pb2, tracking_pb2
    from control_plane.api.job_tokens import JOB_WRITES, JobTokens

    tokens = JobTokens("a" * 20)
    auth = AuthInterceptor(GRANTS, job_tokens=tokens)
    token = tokens.mint("0123abcd4567", "r1")
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert auth.authorize("/aether.v1.Tracking/LogBatch", token) == ("job:0123abcd4567", None, "")
    assert auth.authorize("/aether.v1.Tracking/GetRun", token)[1] is None
    for method in ("/aether.v1.Tracking/CreateExperiment", "/aether.v1.Jobs/Submit", "/aether.v1.Jobs/Logs"):
        assert auth.authorize(method, token)[1] == denied, method
    assert auth.authorize("/aether.v1.Jobs/Logs", "r" * 20)[1] == denied  # the read-only token neither
    assert auth.authorize("/aether.v1.Jobs/Logs", "a" * 20)[1] is None
    assert not auth.may_write(token)
    check = auth.message_check("/aether.v1.ModelRegistry/CreateModelVersion", token, "job:0123abcd4567")
    assert check is not None
    assert check(model_registry_pb2.CreateModelVersionRequest(run_id="r1")) is None
    assert "only its own run" in (check(model_registry_pb2.CreateModelVersionRequest(run_id="r2")) or "")
    batch = tracking_pb2.LogBatchRequest(runs=[tracking_pb2.RunBatch(run_id="r1"), tracking_pb2.RunBatch()])
    batch_check = auth.message_check("/aether.v1.Tracking/LogBatch", token, "job")
    assert batch_check is not None and batch_check(batch) is not None  # one run not its own: refused
    # Another admin token's key, a changed run, a truncated MAC: no token at all.
    for forged in (JobTokens("b" * 20).mint("0123abcd4567", "r1"), token.replace(".r1.", ".r2."), token[:-2]):
        assert auth.authorize("/aether.v1.Tracking/GetRun", forged)[1] == grpc.StatusCode.UNAUTHENTICATED
    # Every write a job token may make names a real method whose request names a run (Upload: none).
    assert all(not is_read_method(method) for method in JOB_WRITES)
