"""Approving a version reads its whole artifact and checks it against its sha256 first: a version whose
artifact was damaged or removed after registration (which only checks that the blob exists) used to be
approved and then passed CheckDeployable, to fail only when the data plane loaded it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import FailedPrecondition
from clients.sdk.models import ModelRegistryClient
from control_plane.artifacts.settings import store_for
from tests.integration.model_registry.conftest import Plane


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx weights " * 100)
    return path


def stored_blob(plane: Plane, sha256: str) -> Path:
    return Path(store_for(plane.home).location(sha256))


def decisions(plane: Plane, object_id: str) -> list[tuple[str, str]]:
    """(action, outcome) of the approve and reject entries about ``object_id`` ("" outcome: carried out)."""
    engine = create_engine(plane.db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT action, outcome FROM audit_log WHERE object_id = :id"
                    " AND action IN ('approve', 'reject') ORDER BY seq"
                ),
                {"id": object_id},
            ).all()
    finally:
        engine.dispose()
    return [(action, outcome) for action, outcome in rows]


def assert_still_pending(plane: Plane, models: ModelRegistryClient, version: int) -> None:
    assert models.get_version("eta", version).approval.status == pb.PENDING_MANUAL_APPROVAL
    with pytest.raises(FailedPrecondition, match="PendingManualApproval"):
        models.check_deployable("eta", version)
    [(action, outcome)] = decisions(plane, f"eta/{version}")  # the refusal only, nothing carried out
    assert action == "approve" and outcome.startswith("refused: FAILED_PRECONDITION: ")


def test_approving_a_version_whose_artifact_does_not_verify_is_refused(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    version = models.register_version("eta", artifact)
    sha256 = version.artifact.sha256
    stored_blob(plane, sha256).write_bytes(b"tampered")  # the bytes no longer match the hash naming them

    with pytest.raises(FailedPrecondition, match=f"artifact sha256:{sha256} does not verify"):
        models.approve("eta", version.version, "looks good")
    assert_still_pending(plane, models, version.version)
    # Rejecting needs no artifact: a damaged build can still be turned down.
    assert models.reject("eta", version.version, "artifact damaged").approval.status == pb.REJECTED


def test_approving_a_version_whose_artifact_is_gone_is_refused(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    version = models.register_version("eta", artifact)
    sha256 = version.artifact.sha256
    stored_blob(plane, sha256).unlink()

    with pytest.raises(FailedPrecondition, match=f"artifact sha256:{sha256} is missing"):
        models.approve("eta", version.version, "looks good")
    assert_still_pending(plane, models, version.version)


def test_the_artifact_is_verified_when_approved_not_at_each_deploy_check(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    """A retried approval changes nothing and reads nothing; CheckDeployable, called on every deployment
    write, trusts the approval's verification (the data plane verifies again as it loads the artifact)."""
    version = models.register_version("eta", artifact)
    assert models.approve("eta", version.version, "looks good").approval.status == pb.APPROVED
    stored_blob(plane, version.artifact.sha256).write_bytes(b"rotted after the approval")

    retried = models.approve("eta", version.version, "looks good")  # exactly the same review
    assert (retried.approval.status, retried.approval.reason) == (pb.APPROVED, "looks good")
    assert models.check_deployable("eta", version.version).version == version.version
    assert decisions(plane, f"eta/{version.version}") == [("approve", "")]
