"""The deployments core straight on each supported database (SQLite and PostgreSQL): the approval check,
the registry guard inside the registry's own transaction, and the plan snapshot's revision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.errors import FailedPrecondition
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.deployments.core import DeploymentManager
from control_plane.deployments.model_guard import DeploymentModelGuard
from control_plane.model_registry.registry import ModelRegistry


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


def register(registry: ModelRegistry, status: int) -> int:
    artifact = registry.artifacts.put_bytes(b"model " + str(status).encode())
    request = mpb.CreateModelVersionRequest(
        model_name="eta", artifact_sha256=artifact.sha256, create_model=True
    )
    version = registry.create_version(request, actor="t").version
    if status != mpb.PENDING_MANUAL_APPROVAL:
        registry.review("eta", version, status, "", actor="t")  # type: ignore[arg-type]
    return version


def test_core_on_each_database(engine: Engine, tmp_path: Path) -> None:
    sessions = create_session_factory(engine)
    registry = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")), [DeploymentModelGuard()])
    manager = DeploymentManager(sessions, registry)
    approved, pending = register(registry, mpb.APPROVED), register(registry, mpb.PENDING_MANUAL_APPROVAL)
    request = pb.CreateDeploymentRequest(
        name="eta-prod",
        variants=[pb.Variant(model_name="eta", version=pending, role=pb.VARIANT_ROLE_PRIMARY)],
    )
    with pytest.raises(FailedPrecondition, match="PendingManualApproval"):
        manager.create(request, actor="t")
    request.variants[0].version = approved
    seen: list[int] = []
    manager.add_listener(seen.append)
    created = manager.create(request, actor="t")
    assert seen == [created.plan_revision] and manager.revision() == created.plan_revision
    snapshot = manager.snapshot()
    assert snapshot.revision == created.plan_revision and manager.snapshot() is snapshot  # cached
    assert (
        snapshot.plans[0].variants[0].model.artifact_sha256
        == registry.get_version("eta", approved).artifact.sha256
    )
    with pytest.raises(FailedPrecondition, match="still used by deployment 'eta-prod'"):
        registry.delete_version("eta", approved, actor="t")
    assert [d.name for d in registry.get_lineage("eta", approved).deployments] == ["eta-prod"]
    manager.delete("eta-prod", actor="t")
    registry.delete_version("eta", approved, actor="t")
    assert manager.snapshot().plans == []
