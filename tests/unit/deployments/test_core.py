"""The deployments core straight on each supported database (SQLite and PostgreSQL): the approval check,
the registry guard inside the registry's own transaction, and the plan snapshot's revision."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_session_factory
from control_plane.deployments.core import DeploymentManager
from control_plane.deployments.model_guard import DeploymentModelGuard
from control_plane.model_registry.registry import ModelRegistry
from tests.support.pool_watch import SecondConnections


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


def test_feature_defaults_must_be_values_the_input_dtype_holds(engine: Engine, tmp_path: Path) -> None:
    """2.5 for an int64 input was accepted; the data plane cast it to 2 (and 300 for a uint8 input failed
    each request that needed it as INTERNAL). Refused when the deployment is made, naming the value."""
    sessions = create_session_factory(engine)
    registry = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")), [DeploymentModelGuard()])
    manager = DeploymentManager(sessions, registry)
    artifact = registry.artifacts.put_bytes(b"counts model")
    signature = mpb.ModelSignature(inputs=[mpb.TensorSpec(name="x", dtype="int64", shape=[-1, 2])])
    request = mpb.CreateModelVersionRequest(
        model_name="counts", artifact_sha256=artifact.sha256, signature=signature, create_model=True
    )
    version = registry.create_version(request, actor="t").version
    registry.review("counts", version, mpb.APPROVED, "", actor="t")
    primary = pb.Variant(model_name="counts", version=version, role=pb.VARIANT_ROLE_PRIMARY)

    def create(defaults: list[float]) -> pb.Deployment:
        serving = pb.ServingConfig(missing_entity_policy="defaults", feature_defaults=defaults)
        return manager.create(
            pb.CreateDeploymentRequest(name="counts-prod", variants=[primary], serving=serving), actor="t"
        )

    with pytest.raises(
        InvalidArgument, match=r"feature_defaults\[1\] is 2.5, but model 'counts' version 1 takes int64"
    ):
        create([1.0, 2.5])
    assert create([1.0, -2.0]).serving.feature_defaults == [1.0, -2.0]


def test_feature_defaults_must_fit_every_version_the_deployment_serves(
    engine: Engine, tmp_path: Path
) -> None:
    # The data plane fails a version whose defaults do not fill its input; the deployment was accepted
    # all the same, so the error surfaced only at load (or, before that check, on each unknown entity).
    sessions = create_session_factory(engine)
    registry = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")), [DeploymentModelGuard()])
    manager = DeploymentManager(sessions, registry)

    def approved(width: int) -> int:
        artifact = registry.artifacts.put_bytes(f"model of {width}".encode())
        signature = mpb.ModelSignature(inputs=[mpb.TensorSpec(name="x", dtype="float32", shape=[-1, width])])
        request = mpb.CreateModelVersionRequest(
            model_name="eta", artifact_sha256=artifact.sha256, signature=signature, create_model=True
        )
        version = registry.create_version(request, actor="t").version
        registry.review("eta", version, mpb.APPROVED, "", actor="t")
        return version

    four, five = approved(4), approved(5)
    primary = pb.Variant(model_name="eta", version=four, role=pb.VARIANT_ROLE_PRIMARY)

    def create(defaults: list[float]) -> pb.Deployment:
        serving = pb.ServingConfig(missing_entity_policy="defaults", feature_defaults=defaults)
        return manager.create(
            pb.CreateDeploymentRequest(name="eta-prod", variants=[primary], serving=serving), actor="t"
        )

    with pytest.raises(InvalidArgument, match=r"3 values, but model 'eta' version 1 takes 4 features"):
        create([0.0, 0.0, 0.0])
    with pytest.raises(InvalidArgument, match="feature_defaults must be finite numbers, not nan"):
        create([0.0, 0.0, 0.0, float("nan")])
    create([1.0, 2.0, 3.0, 4.0])
    wrong = pb.ServingConfig(missing_entity_policy="defaults", feature_defaults=[1.0])
    with pytest.raises(InvalidArgument, match="1 values, but model 'eta' version 1 takes 4"):
        manager.update(pb.UpdateDeploymentRequest(name="eta-prod", serving=wrong), actor="t")
    canary = pb.StartCanaryRequest(name="eta-prod", model_name="eta", version=five)
    with pytest.raises(InvalidArgument, match=f"4 values, but model 'eta' version {five} takes 5"):
        manager.start_canary(canary, actor="t")
    assert list(manager.get("eta-prod").serving.feature_defaults) == [1.0, 2.0, 3.0, 4.0]


def test_a_routing_salt_over_the_column_length_is_invalid_argument_on_create_and_update(
    engine: Engine, tmp_path: Path
) -> None:
    # PostgreSQL failed the insert with INTERNAL (StringDataRightTruncation); SQLite stored it silently.
    sessions = create_session_factory(engine)
    registry = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")), [DeploymentModelGuard()])
    manager = DeploymentManager(sessions, registry)
    primary = pb.Variant(
        model_name="eta", version=register(registry, mpb.APPROVED), role=pb.VARIANT_ROLE_PRIMARY
    )
    request = pb.CreateDeploymentRequest(name="eta-prod", variants=[primary], routing_salt="s" * 257)
    with pytest.raises(InvalidArgument, match="routing_salt is 257 characters long; at most 256 are allowed"):
        manager.create(request, actor="t")
    request.routing_salt = "é" * 256  # characters, not bytes
    assert manager.create(request, actor="t").routing_salt == "é" * 256
    update = pb.UpdateDeploymentRequest(name="eta-prod", routing_salt="s" * 1000)
    with pytest.raises(InvalidArgument, match="routing_salt is 1000 characters long; at most 256"):
        manager.update(update, actor="t")
    assert manager.get("eta-prod").routing_salt == "é" * 256


def test_an_empty_model_name_is_named_as_such_not_as_a_derived_variant_name(
    engine: Engine, tmp_path: Path
) -> None:
    # The default variant name "<model>-v<version>" was built from the empty model name first, and the
    # error was about "variant name '-v1'", a name the caller never gave.
    sessions = create_session_factory(engine)
    registry = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")), [DeploymentModelGuard()])
    manager = DeploymentManager(sessions, registry)
    version = register(registry, mpb.APPROVED)
    nameless = pb.Variant(model_name="", version=version, role=pb.VARIANT_ROLE_PRIMARY)
    with pytest.raises(InvalidArgument, match=r"^model_name is required") as refused:
        manager.create(pb.CreateDeploymentRequest(name="eta-prod", variants=[nameless]), actor="t")
    assert "-v1" not in refused.value.message
    nameless.model_name = "eta"
    manager.create(pb.CreateDeploymentRequest(name="eta-prod", variants=[nameless]), actor="t")
    canary = pb.StartCanaryRequest(name="eta-prod", model_name="", version=version)
    with pytest.raises(InvalidArgument, match=r"^model_name is required"):
        manager.start_canary(canary, actor="t")
    canary.model_name = "-eta"
    with pytest.raises(InvalidArgument, match=r"^model name '-eta' is not valid"):
        manager.start_canary(canary, actor="t")


def test_deployment_writes_read_the_model_versions_in_their_own_transaction(
    engine: Engine, tmp_path: Path
) -> None:
    # Create, an update that replaces the variants or the serving config, and a canary's start each checked
    # the model version in a read session of its own while the write held its connection and lock. With
    # 16 or more writers queued behind that lock, each holding a pooled connection, none was left: the
    # holder waited the pool's 30 s and failed with UNAVAILABLE, and so did the writers behind it.
    sessions = create_session_factory(engine)
    registry = ModelRegistry(sessions, ArtifactStore(str(tmp_path / "artifacts")), [DeploymentModelGuard()])
    manager = DeploymentManager(sessions, registry)
    first, second = register(registry, mpb.APPROVED), register(registry, mpb.APPROVED)
    primary = pb.Variant(model_name="eta", version=first, role=pb.VARIANT_ROLE_PRIMARY)
    with SecondConnections(engine) as second_connections:
        manager.create(pb.CreateDeploymentRequest(name="eta-prod", variants=[primary]), actor="t")
        primary.version = second
        serving = pb.ServingConfig(missing_entity_policy="defaults")
        replace = pb.UpdateDeploymentRequest(
            name="eta-prod", variants=[primary], replace_variants=True, serving=serving
        )
        manager.update(replace, actor="t")
        manager.update(pb.UpdateDeploymentRequest(name="eta-prod", serving=serving), actor="t")
        manager.start_canary(
            pb.StartCanaryRequest(name="eta-prod", model_name="eta", version=first), actor="t"
        )
    assert second_connections.found == []
    assert manager.get("eta-prod").canary.version == first
