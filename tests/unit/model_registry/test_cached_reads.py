"""Reads reuse built messages, but never one that is out of date: every change, made by this registry
object or by another one on the same database (another control-plane process), shows at once."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from clients.aether.v1 import model_registry_pb2 as pb
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_session_factory
from control_plane.model_registry.registry import ModelRegistry


def test_changes_by_another_process_are_seen_despite_the_cache(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = ArtifactStore(str(tmp_path_factory.mktemp("artifacts")))
    sha256 = store.put_bytes(b"weights").sha256
    reader = ModelRegistry(create_session_factory(engine), store)
    writer = ModelRegistry(create_session_factory(engine), store)  # stands for another process
    register = pb.CreateModelVersionRequest(model_name="eta", artifact_sha256=sha256, create_model=True)
    writer.create_version(register, actor="ci")
    writer.create_version(register, actor="ci")

    def seen() -> tuple[object, ...]:
        versions, _ = reader.list_versions("eta")
        models, _ = reader.list_models()
        return (
            [(v.version, v.approval.status, list(v.aliases)) for v in versions],
            [(m.name, m.latest_version, dict(m.aliases)) for m in models],
            reader.get_version("eta", 1).approval.status,
            dict(reader.get_model("eta").aliases),
        )

    assert seen() == (
        [(1, pb.PENDING_MANUAL_APPROVAL, []), (2, pb.PENDING_MANUAL_APPROVAL, [])],
        [("eta", 2, {})],
        pb.PENDING_MANUAL_APPROVAL,
        {},
    )
    writer.review("eta", 1, pb.APPROVED, "ok", actor="ann")
    writer.set_alias("eta", "champion", 1, actor="ann")
    assert seen() == (
        [(1, pb.APPROVED, ["champion"]), (2, pb.PENDING_MANUAL_APPROVAL, [])],
        [("eta", 2, {"champion": 1})],
        pb.APPROVED,
        {"champion": 1},
    )
    writer.set_alias("eta", "champion", 2, actor="ann")  # moves: both versions' messages change
    writer.create_version(register, actor="ci")
    assert seen() == (
        [
            (1, pb.APPROVED, []),
            (2, pb.PENDING_MANUAL_APPROVAL, ["champion"]),
            (3, pb.PENDING_MANUAL_APPROVAL, []),
        ],
        [("eta", 3, {"champion": 2})],
        pb.APPROVED,
        {"champion": 2},
    )
    writer.delete_alias("eta", "champion", actor="ann")
    writer.delete_version("eta", 3, actor="ann")
    assert seen() == (
        [(1, pb.APPROVED, []), (2, pb.PENDING_MANUAL_APPROVAL, [])],
        [("eta", 2, {})],  # the newest version that exists: v3 is gone
        pb.APPROVED,
        {},
    )


def test_returned_messages_do_not_alias_the_cache(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = ArtifactStore(str(tmp_path_factory.mktemp("artifacts")))
    core = ModelRegistry(create_session_factory(engine), store)
    sha256 = store.put_bytes(b"weights").sha256
    core.create_version(
        pb.CreateModelVersionRequest(model_name="eta", artifact_sha256=sha256, create_model=True), actor="ci"
    )
    first = core.get_version("eta", 1)
    first.description = "edited by a careless caller"
    assert core.get_version("eta", 1).description == ""
