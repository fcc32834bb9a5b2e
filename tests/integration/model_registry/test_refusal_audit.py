"""Refused model operations are audited: through a real control plane with auth on, a review refused by
the version's approval status, a delete refused because a deployment serves the version, an approval by
the read-only token and by a caller without a token, and a review of an unknown version each leave an
entry naming who tried what on which model version and why it was refused. The refused change itself
is rolled back, its audit entry is not, and the chain still verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from clients.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from clients.sdk.audit import AuditClient, audit_filter
from clients.sdk.auth import ChannelSecurity
from clients.sdk.models import ModelRegistryClient
from control_plane.api.audit import add_to_server as audit_service
from control_plane.api.auth import AuthSettings
from control_plane.audit.export import export_lines
from control_plane.db import create_db_engine, create_session_factory
from control_plane.settings import ControlPlaneSettings
from tests.integration.model_registry.conftest import Deployments, ThreadedControlPlane

REPO = Path(__file__).resolve().parents[3]
ADMIN_TOKEN = "admin-secret-0123456789"
READONLY_TOKEN = "reader-secret-9876543210"


@dataclass
class Secured:
    address: str
    deployments: Deployments

    def models(self, token: str | None) -> ModelRegistryClient:
        return ModelRegistryClient(self.address, security=ChannelSecurity(token=token), timeout=20)

    def audit(self) -> AuditClient:
        return AuditClient(self.address, security=ChannelSecurity(token=READONLY_TOKEN), timeout=20)


@pytest.fixture
def secured(tmp_path: Path, db_url: str) -> Iterator[Secured]:
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=db_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
        auth=AuthSettings(admin_token=ADMIN_TOKEN, readonly_token=READONLY_TOKEN),
    )
    deployments = Deployments()
    server = ThreadedControlPlane(settings, deployments, more=[audit_service])
    yield Secured(server.address, deployments)
    server.stop()


def _two_versions(admin: ModelRegistryClient, tmp_path: Path) -> None:
    """Model ``eta`` with version 1 pending and version 2 rejected."""
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"onnx weights " * 100)
    sha256 = admin.artifacts.upload_file(artifact).sha256
    admin.register_version("eta", artifact_sha256=sha256, create_model=True)
    admin.register_version("eta", artifact_sha256=sha256)
    admin.reject("eta", 2, "accuracy below the bar")


def _refusals(audit: AuditClient) -> list[tuple[str, str, str, str]]:
    return [
        (entry.actor, entry.action, f"{entry.object_type}/{entry.object_id}", entry.outcome)
        for entry in audit.entries(audit_filter(refused=True))
    ]


def test_refused_model_operations_are_audited_with_actor_target_and_reason(
    secured: Secured, tmp_path: Path
) -> None:
    with (
        secured.models(ADMIN_TOKEN) as admin,
        secured.models(READONLY_TOKEN) as reader,
        secured.models(None) as stranger,
        secured.audit() as audit,
    ):
        _two_versions(admin, tmp_path)
        succeeded = [entry.seq for entry in audit.entries()]
        with pytest.raises(FailedPrecondition, match="already Rejected"):
            admin.approve("eta", 2, "ship it anyway")
        secured.deployments.serving[("eta", 1)] = ["eta-prod"]
        with pytest.raises(FailedPrecondition, match="still used by deployment 'eta-prod'"):
            admin.delete_version("eta", 1)
        with pytest.raises(PermissionDenied):
            reader.approve("eta", 1)
        with pytest.raises(Unauthenticated):
            stranger.delete_version("eta", 1)
        with pytest.raises(NotFound):
            admin.approve("eta", 9)

        refusals = _refusals(audit)
        # The refused delete was rolled back (the version is still there); its audit entry was not.
        assert admin.get_version("eta", 1).version == 1
        result = audit.verify()
        every = list(audit.entries())
        ok_only = [entry.seq for entry in audit.entries(audit_filter(refused=False))]

    assert [(actor, action, target) for actor, action, target, _ in refusals] == [
        ("admin", "approve", "model_version/eta/2"),
        ("admin", "delete", "model_version/eta/1"),
        ("readonly", "approve", "model_version/eta/1"),
        ("unauthenticated", "delete", "model_version/eta/1"),
        ("admin", "approve", "model_version/eta/9"),
    ]
    outcomes = [outcome for *_, outcome in refusals]
    assert outcomes[0].startswith("refused: FAILED_PRECONDITION: model 'eta' version 2 is already Rejected")
    assert outcomes[1].startswith("refused: FAILED_PRECONDITION: cannot delete model 'eta' version 1")
    assert outcomes[2].startswith("refused: PERMISSION_DENIED: the readonly token may not call")
    assert outcomes[3] == "refused: UNAUTHENTICATED: missing `authorization: Bearer <token>` metadata"
    assert outcomes[4].startswith("refused: NOT_FOUND: ")
    assert all(entry.timestamp_us > 0 for entry in every)
    # Successful operations keep an empty outcome, and the "ok" filter leaves the refusals out.
    assert ok_only == succeeded
    assert (result.ok, result.entries_checked) == (True, len(every))


def test_a_refused_request_that_names_no_model_is_not_audited(secured: Secured) -> None:
    """A malformed request that names no model has no target to file it under: the caller is told
    INVALID_ARGUMENT and nothing about any model changed, so it leaves no entry."""
    with secured.models(ADMIN_TOKEN) as admin, secured.audit() as audit:
        with pytest.raises(InvalidArgument):
            admin.create_model("")
        with pytest.raises(InvalidArgument):
            admin.create_model("eta", tags={"": "x"})
        entries = list(audit.entries())
    assert [(entry.action, entry.object_id, entry.outcome.split(":")[:2]) for entry in entries] == [
        ("create", "eta", ["refused", " INVALID_ARGUMENT"])
    ]


def _aetherctl(secured: Secured, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """The real ``aetherctl`` in a process of its own, with the read-only token in its environment."""
    env = dict(os.environ, AETHER_TOKEN=READONLY_TOKEN, AETHER_HOME=str(tmp_path / "cli-home"))
    command = [sys.executable, "-m", "control_plane.cli.main", "--control-plane", secured.address, *args]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_aetherctl_audit_shows_and_filters_the_outcome(secured: Secured, tmp_path: Path) -> None:
    with secured.models(ADMIN_TOKEN) as admin:
        _two_versions(admin, tmp_path)
        with pytest.raises(FailedPrecondition):
            admin.approve("eta", 2)

    code, out, err = _aetherctl(secured, tmp_path, "audit", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "OUTCOME"]
    assert [line.split()[6:8] for line in lines[1:]] == [["ok"]] * 4 + [["refused:", "FAILED_PRECONDITION:"]]

    code, out, err = _aetherctl(secured, tmp_path, "audit", "list", "--outcome", "refused", "--json")
    assert code == 0, err
    [refused] = [json.loads(line) for line in out.splitlines()]
    assert (refused["actor"], refused["action"], refused["object_id"]) == ("admin", "approve", "eta/2")
    assert refused["outcome"].startswith("refused: FAILED_PRECONDITION: model 'eta' version 2 is already")

    code, out, err = _aetherctl(secured, tmp_path, "audit", "list", "--outcome", "ok", "--json")
    assert code == 0, err
    assert [json.loads(line).get("outcome") for line in out.splitlines()] == [None] * 4

    exported = tmp_path / "refused.jsonl"
    code, out, err = _aetherctl(secured, tmp_path, "audit", "export", str(exported), "--outcome", "refused")
    assert (code, out.strip()) == (0, f"exported 1 entries to {exported}"), err
    assert json.loads(exported.read_text())["outcome"] == refused["outcome"]

    code, out, err = _aetherctl(secured, tmp_path, "audit", "verify")
    assert (code, out.startswith("audit log intact: 5 entries")) == (0, True), err


def test_a_refusal_is_answered_promptly_while_the_audit_log_is_locked(secured: Secured, db_url: str) -> None:
    """The refusal's audit write waited out the database's 30 s busy timeout behind another writer, so
    a request refused without touching the database (a malformed name) timed out instead of being told.
    It now waits for its entry a moment, answers, and the entry is written once the lock is gone."""
    engine = create_engine(db_url)
    with engine.connect() as holder:
        if db_url.startswith("sqlite"):
            holder.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock
        else:
            holder.begin()
            holder.exec_driver_sql("SELECT * FROM audit_head FOR UPDATE")  # what an append locks
        started = time.monotonic()
        with pytest.raises(InvalidArgument, match="invalid model name"), secured.models(ADMIN_TOKEN) as admin:
            admin.create_model("Bad Name")
        assert time.monotonic() - started < 8.0
        holder.rollback()
    engine.dispose()
    with secured.audit() as audit:
        deadline = time.monotonic() + 30
        while not (
            found := [e for e in audit.entries(audit_filter(refused=True)) if "Bad Name" in e.object_id]
        ):
            assert time.monotonic() < deadline, "the refusal was never audited"
            time.sleep(0.1)
    assert found[0].outcome.startswith("refused: INVALID_ARGUMENT")


def _entries_in(db_url: str) -> list[dict[str, str]]:
    """Every audit entry, read straight from the database (the server is stopped)."""
    engine = create_db_engine(db_url)
    try:
        return [json.loads(line) for line in export_lines(create_session_factory(engine))]
    finally:
        engine.dispose()


def test_refusals_without_a_token_are_rate_limited_and_every_one_is_counted(
    tmp_path: Path, db_url: str
) -> None:
    """A client without a token hammering a model operation wrote one audit row per refused call: a free
    way to fill the log and load the database. Per peer host and method, the first few are now written
    one by one and the rest counted into one entry when the window ends (or the server stops); callers
    with a token are still audited call by call."""
    window_s = 5.0
    settings = ControlPlaneSettings(
        home=tmp_path / "home",
        db_url=db_url,
        listen_addr="127.0.0.1:0",
        shutdown_grace_s=0.5,
        auth=AuthSettings(admin_token=ADMIN_TOKEN, readonly_token=READONLY_TOKEN),
        refusal_audit_window_s=window_s,
    )
    server = ThreadedControlPlane(settings, Deployments(), more=[audit_service])
    secured = Secured(server.address, Deployments())
    method = "/aether.v1.ModelRegistry/DeleteModelVersion"
    try:
        with (
            secured.models(None) as stranger,
            secured.models(READONLY_TOKEN) as reader,
            secured.audit() as audit,
        ):
            started = time.monotonic()
            for n in range(12):  # a new model each time: the model a caller names makes no new key
                with pytest.raises(Unauthenticated):
                    stranger.delete_version(f"m{n}", 1)
            for n in range(8):
                with pytest.raises(PermissionDenied):
                    reader.delete_version(f"r{n}", 1)
            assert time.monotonic() - started < window_s, "too slow to show one window"
            refusals = _refusals(audit)
            assert [t for a, _, t, _ in refusals if a == "unauthenticated"] == [
                f"model_version/m{n}/1" for n in range(5)
            ]
            assert [t for a, _, t, _ in refusals if a == "readonly"] == [
                f"model_version/r{n}/1" for n in range(8)
            ]
            deadline = time.monotonic() + window_s + 10
            while len(refusals := _refusals(audit)) == 13:
                assert time.monotonic() < deadline, "the folded refusals were never counted"
                time.sleep(0.1)
            assert refusals[13][:3] == ("unauthenticated", "delete", "model_version/m11/1")
            assert refusals[13][3] == (
                "refused: UNAUTHENTICATED: missing `authorization: Bearer <token>` metadata; 7 more refusals"
                f" of {method} from ipv4:127.0.0.1 in {window_s:g} s were folded into this entry"
            )
            for _ in range(6):  # a new window: five entries, and one refusal folded when the server stops
                with pytest.raises(Unauthenticated):
                    stranger.delete_version("late", 1)
    finally:
        server.stop()
    late = [e["outcome"] for e in _entries_in(db_url) if e["object_id"] == "late/1"]
    assert len(late) == 6 and late[-1].endswith(
        f"1 more refusals of {method} from ipv4:127.0.0.1 in 5 s were folded into this entry"
    )
