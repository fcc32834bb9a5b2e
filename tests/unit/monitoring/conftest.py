"""A migrated metadata database on each backend, an artifact store, model versions registered through
the registry core, and the monitor tests' ``world`` (``world.World``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2 as mpb
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_session_factory
from control_plane.model_registry.registry import ModelRegistry
from tests.unit.monitoring.world import World


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(engine)


@pytest.fixture
async def world(
    sessions: sessionmaker[Session], store: ArtifactStore, redis_url: str
) -> AsyncIterator[World]:
    """The monitor tests' world (``world.World``), closed after the test."""
    here = World(sessions, store, redis_url)
    yield here
    await here.close()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def register_version(
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    name: str,
    classes: tuple[str, ...] = (),
    signature: mpb.ModelSignature | None = None,
) -> int:
    """A new version of model ``name`` (created if need be); ``classes``: its signature's classes, or
    ``signature`` whole."""
    registry = ModelRegistry(sessions, store)
    artifact = store.put_bytes(f"onnx bytes of {name}".encode())
    request = mpb.CreateModelVersionRequest(
        model_name=name,
        artifact_sha256=artifact.sha256,
        create_model=True,
        signature=signature if signature is not None else mpb.ModelSignature(classes=classes),
    )
    return int(registry.create_version(request, actor="trainer").version)
